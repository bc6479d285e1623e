"""AMIs: ids of cloud-images (given, or the newest matching filters) and their root devices."""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Any, Mapping

from nodepool.errors import ConfigurationError

if TYPE_CHECKING:
    from nodepool.drivers.aws.ec2 import Ec2


class Images:
    """AMI ids by cloud-image name and AMI descriptions by id, each read once (cached).

    An AMI's description never changes, so one DescribeImages per AMI is enough; a
    filters lookup caches the description of the AMI it picks, too.
    """

    def __init__(self, ec2: Ec2):
        self.ec2 = ec2
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}
        self._described: dict[str, Mapping[str, Any]] = {}

    def image_id(self, image: Any) -> str:
        if image.image_id:
            return image.image_id
        with self._lock:
            cached = self._ids.get(image.name)
        if cached:
            return cached
        filters = [dict(f, Values=list(f["Values"])) for f in image.image_filters]
        found = self.ec2.call(f"describe images for {image.name}",
                              lambda c: c.describe_images(Filters=filters))
        images = sorted(found.get("Images") or [], key=lambda i: i.get("CreationDate", ""))
        if not images:
            raise ConfigurationError(f"provider {self.ec2.provider.name}: cloud-image "
                                     f"{image.name}: no AMI matches its image-filters")
        with self._lock:
            self._ids[image.name] = images[-1]["ImageId"]
            self._described[images[-1]["ImageId"]] = images[-1]
        return images[-1]["ImageId"]

    def describe(self, ami_id: str) -> Mapping[str, Any]:
        """The AMI's DescribeImages entry (one call per AMI, then cached)."""
        with self._lock:
            cached = self._described.get(ami_id)
        if cached is not None:
            return cached
        found = self.ec2.call(f"describe image {ami_id}",
                              lambda c: c.describe_images(ImageIds=[ami_id]))
        images = found.get("Images") or []
        if not images:
            raise ConfigurationError(f"provider {self.ec2.provider.name}: AMI {ami_id} "
                                     f"does not exist (or is not visible to this account)")
        with self._lock:
            self._described[ami_id] = images[0]
        return images[0]

    def described(self, ami_id: str | None) -> bool:
        with self._lock:
            return ami_id is not None and ami_id in self._described


def root_mapping(ami: Mapping[str, Any], label: Any) -> dict[str, Any] | None:
    """The root volume's BlockDeviceMapping for `label`, or None to keep the AMI's own.

    The AMI's own mapping of its RootDeviceName (e.g. /dev/xvda, /dev/sda1), with the
    label's volume-size/-type, iops, throughput, and DeleteOnTermination always on, so
    the root volume goes with the instance. An AMI without an EBS root (instance store)
    keeps its mapping; volume keys on such a label are a configuration error.
    """
    root = ami.get("RootDeviceName")
    own = next((m for m in ami.get("BlockDeviceMappings") or []
                if m.get("DeviceName") == root and "Ebs" in m), None)
    if ami.get("RootDeviceType", "ebs") != "ebs":
        own = None
    wanted = {"VolumeSize": label.volume_size, "VolumeType": label.volume_type,
              "Iops": label.iops, "Throughput": label.throughput}
    wanted = {k: val for k, val in wanted.items() if val}
    if own is None:
        if wanted:
            raise ConfigurationError(
                f"label {label.name}: AMI {ami.get('ImageId')} has no EBS root volume "
                f"(root device {root or 'unknown'}): remove its volume-* keys")
        return None
    ebs = copy.deepcopy(dict(own["Ebs"]))
    ebs.pop("Encrypted", None)   # an AMI's snapshot refuses it (Nodepool drops it too)
    if "VolumeType" in wanted:   # the AMI's iops and throughput belong to its own type
        ebs.pop("Iops", None)
        ebs.pop("Throughput", None)
    ebs.update(wanted, DeleteOnTermination=True)
    return {"DeviceName": root, "Ebs": ebs}
