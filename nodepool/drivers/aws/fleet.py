"""EC2 Fleet launches (`fleet:` labels): CreateFleet of type `instant` over a launch template.

As Nodepool: the label's launch settings go in a launch template named after a hash of
its content (`nodepool-launch-template-<sha256>`, tagged `nodepool_managed` and with the
provider's name), and each launch asks CreateFleet for one instance among the fleet's
`instance-types` (and the pool's subnets), with its `allocation-strategy`, tagged as a
RunInstances launch is. Templates are made on a label's first launch; a template of this
provider that none of its current labels uses is deleted by leak cleanup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Mapping

from nodepool.drivers.adapter import CloudResource
from nodepool.drivers.aws.errors import TEMPLATE_NOT_FOUND, classify_code, error_code
from nodepool.drivers.aws.instances import TAG_PROVIDER, as_tag_list, tags_of
from nodepool.errors import DriverError, LaunchFailure, TransientError

if TYPE_CHECKING:
    from nodepool.drivers.aws.ec2 import Ec2

log = logging.getLogger("nodepool.drivers.aws")

TEMPLATE_PREFIX = "nodepool-launch-template"
TEMPLATE = "launch-template"
TAGGED = ("instance", "volume")   # what a fleet's tag specifications tag, as Nodepool
ALREADY_EXISTS = "InvalidLaunchTemplateName.AlreadyExistsException"

# RunInstances arguments a launch template carries for a fleet (the rest go in Overrides).
TEMPLATE_KEYS = ("KeyName", "SecurityGroupIds", "BlockDeviceMappings", "MetadataOptions",
                 "IamInstanceProfile", "EbsOptimized")


def template_data(run_args: Mapping[str, Any], security_group: str | None) -> dict[str, Any]:
    """The LaunchTemplateData of a launch: what RunInstances would get, minus the parts
    a fleet's Overrides set (image, type, subnet)."""
    data = {k: run_args[k] for k in TEMPLATE_KEYS if k in run_args}
    if security_group and "SecurityGroupIds" not in data:
        data["SecurityGroupIds"] = [security_group]
    if run_args.get("UserData"):   # RunInstances encodes it; a template takes it encoded
        data["UserData"] = base64.b64encode(str(run_args["UserData"]).encode()).decode()
    return data


def template_name(provider_name: str, data: Mapping[str, Any]) -> str:
    body = json.dumps({"provider": provider_name, "data": data}, sort_keys=True)
    return f"{TEMPLATE_PREFIX}-{hashlib.sha256(body.encode()).hexdigest()}"


class Templates:
    """The provider's launch templates this adapter made or found, by name."""

    def __init__(self, ec2: Ec2, provider_name: str):
        self.ec2 = ec2
        self.provider_name = provider_name
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._wanted: set[str] = set()   # used by a launch since this adapter started

    def ensure(self, data: Mapping[str, Any]) -> str:
        """The template holding `data`, made if this adapter has not seen it yet."""
        name = template_name(self.provider_name, data)
        with self._lock:
            self._wanted.add(name)
            if name in self._known:
                return name
        tags = {"nodepool_managed": "true", TAG_PROVIDER: self.provider_name}
        try:
            self.ec2.call(f"create launch template {name}", lambda c: c.create_launch_template(
                LaunchTemplateName=name, LaunchTemplateData=dict(data),
                TagSpecifications=[{"ResourceType": TEMPLATE, "Tags": as_tag_list(tags)}]))
            log.info("provider=%s Created launch template %s", self.provider_name, name)
        except DriverError as e:
            if _code(e) != ALREADY_EXISTS:
                raise
        with self._lock:
            self._known.add(name)
        return name

    def forget(self, name: str) -> None:
        """A template EC2 no longer has (deleted behind our back): make it again next time."""
        with self._lock:
            self._known.discard(name)

    def unused(self) -> list[CloudResource]:
        """The provider's templates no launch of this adapter uses (matched by tag here)."""
        answer = self.ec2.call("describe launch templates", lambda c: c.describe_launch_templates(
            Filters=[{"Name": "launch-template-name", "Values": [f"{TEMPLATE_PREFIX}-*"]}]))
        with self._lock:
            wanted = set(self._wanted)
        found = []
        for template in answer.get("LaunchTemplates") or []:
            name = template.get("LaunchTemplateName", "")
            if tags_of(template).get(TAG_PROVIDER) == self.provider_name and name not in wanted:
                found.append(CloudResource(kind=TEMPLATE, id=name, provider=self.provider_name,
                                           detail="launch template no label uses"))
        return found

    def delete(self, resource: CloudResource) -> None:
        with self._lock:
            if resource.id in self._wanted:
                return   # a launch took it up again since the scan
            self._known.discard(resource.id)
        self.ec2.call(f"delete launch template {resource.id}",
                      lambda c: c.delete_launch_template(LaunchTemplateName=resource.id),
                      not_found=None)
        log.info("provider=%s Deleted unused launch template %s", self.provider_name,
                 resource.id)


def fleet_args(label: Any, template: str, image_id: str, subnets: tuple[str, ...],
               token: str, tag_specs: list[dict[str, Any]]) -> dict[str, Any]:
    """CreateFleet's arguments for one instance of a `fleet:` label."""
    fleet = label.fleet
    strategy = fleet["allocation-strategy"]
    overrides = []
    for priority, itype in enumerate(fleet["instance-types"]):
        for subnet in subnets or (None,):
            override: dict[str, Any] = {"ImageId": image_id, "InstanceType": itype}
            if subnet:
                override["SubnetId"] = subnet
            if strategy == "prioritized":
                override["Priority"] = float(priority)
            overrides.append(override)
    kind, options = ("spot", "SpotOptions") if label.use_spot else ("on-demand",
                                                                    "OnDemandOptions")
    return {
        "Type": "instant", "ClientToken": token,
        "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": {
            "LaunchTemplateName": template, "Version": "$Latest"}, "Overrides": overrides}],
        "TargetCapacitySpecification": {"TotalTargetCapacity": 1,
                                        "DefaultTargetCapacityType": kind},
        options: {"AllocationStrategy": strategy},
        "TagSpecifications": tag_specs,
    }


def launched(answer: Mapping[str, Any], what: str) -> str:
    """The instance id CreateFleet made, or its first error through the error table."""
    for group in answer.get("Instances") or []:
        for instance_id in group.get("InstanceIds") or []:
            return instance_id
    errors = answer.get("Errors") or []
    if errors:
        code = errors[0].get("ErrorCode", "")
        raise classify_code(code, f"{what}: {code}: {errors[0].get('ErrorMessage', '')}")
    raise LaunchFailure(f"{what}: CreateFleet made no instance and gave no error")


def is_template_gone(error: DriverError) -> bool:
    return _code(error) in TEMPLATE_NOT_FOUND


def _code(error: DriverError) -> str | None:
    """The AWS error code behind a classified error (Ec2.call raises it from the original)."""
    return error_code(error.__cause__ or error)


def gone_template_error(what: str, error: DriverError) -> TransientError:
    return TransientError(f"{what}: its launch template is gone ({error}); making it again")
