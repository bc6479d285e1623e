"""The builder's AWS calls: the file to S3, an import task, the AMI; delete, list ours.

The same small interface as `cloud.ImageCloud` (upload, delete, our_images, close), so
the upload and cleanup workers treat AWS and OpenStack providers alike. As Nodepool's AWS
adapter: the file goes to the provider's `object-storage` bucket as `NAME.FORMAT` (its S3
object tagged), then `import-method: snapshot` imports it as an EBS snapshot and registers
an AMI on it, `import-method: image` imports it as an AMI at once; the object is deleted
once the import task ends. `import-method: ebs-direct` writes the file into a snapshot
through the EBS direct APIs instead (aws_ebs.py), then registers the AMI. The AMI and its
snapshot carry the upload's tags (`nodepool_provider_name`, `nodepool_build_id`,
`nodepool_upload_id` and the image's metadata and `tags`): leak cleanup lists what carries
them, never anything else.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from nodepool.builder import aws_ebs
from nodepool.builder.cloud import TAG_BUILD, TAG_PROVIDER, TAG_UPLOAD
from nodepool.config.aws import AwsDiskImage, AwsProvider
from nodepool.drivers.aws.ec2 import Ec2
from nodepool.drivers.aws.errors import error_code
from nodepool.drivers.aws.instances import as_tag_list, tags_of

log = logging.getLogger("nodepool.builder.aws")

DEFAULT_IMPORT_TIMEOUT = 3 * 3600   # no image-import-timeout: an import may take this long
GONE = frozenset({"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable",
                  "InvalidSnapshot.NotFound", "NoSuchKey", "NoSuchBucket", "404"})
BUSY = "ResourceCountLimitExceeded"   # too many import tasks at once: wait and try again
S3_PREFIX = "s3://"


class ImportFailed(Exception):
    """The import task ended without a snapshot or image (its status message says why)."""


def _code(error: BaseException) -> str | None:
    """The AWS error code behind a classified error (Ec2.call raises `from` the original)."""
    return error_code(error.__cause__) if error.__cause__ is not None else error_code(error)


class AwsImageCloud:
    """One AWS provider's images: S3 bucket, import tasks, AMIs and snapshots."""

    def __init__(self, provider: AwsProvider, poll_interval: float = 10.0):
        self.provider = provider
        self.poll_interval = poll_interval
        self.ec2 = Ec2(provider)
        self._closed = threading.Event()

    # -- upload -------------------------------------------------------------------------

    def upload(self, name: str, filename: str, disk_format: str, meta: dict[str, str],
               md5: str | None, sha256: str | None, diskimage: str | None = None) -> str:
        """The file to S3, imported, registered, tagged; the AMI id."""
        pimage = self.provider.diskimages[diskimage or ""]
        deadline = time.monotonic() + (self.provider.image_import_timeout
                                       or DEFAULT_IMPORT_TIMEOUT)
        if pimage.import_method == "ebs-direct":
            tags = as_tag_list(meta)
            size, snapshot_id = aws_ebs.upload_snapshot(self.ec2, name, filename, tags,
                                                        deadline, self._pause)
            self._tag(snapshot_id, tags)   # again: not every endpoint takes StartSnapshot's
            return self._register(pimage, name, snapshot_id, pimage.volume_size or size, tags)
        bucket = self.provider.object_storage["bucket-name"]
        key = f"{name}.{disk_format}"
        self._put_object(bucket, key, filename, meta)
        try:
            if pimage.import_method == "image":
                return self._import_image(pimage, name, bucket, key, disk_format, meta,
                                          deadline)
            return self._import_snapshot(pimage, name, bucket, key, disk_format, meta,
                                         deadline)
        finally:
            self._delete_object(bucket, key)

    def _put_object(self, bucket: str, key: str, filename: str, meta: dict[str, str]) -> None:
        log.info("provider=%s Uploading %s to s3://%s/%s", self.provider.name, filename,
                 bucket, key)
        self.ec2.call(f"upload s3://{bucket}/{key}", lambda c: c.upload_file(
            filename, bucket, key, ExtraArgs={"Tagging": urllib.parse.urlencode(meta)}),
            service="s3")

    def _delete_object(self, bucket: str, key: str) -> None:
        try:
            self.ec2.call(f"delete s3://{bucket}/{key}",
                          lambda c: c.delete_object(Bucket=bucket, Key=key), service="s3")
        except Exception as e:
            log.warning("provider=%s Could not delete s3://%s/%s: %s (leak cleanup will)",
                        self.provider.name, bucket, key, e)

    def _start(self, what: str, call: Any, deadline: float) -> dict[str, Any]:
        """Start an import task; too many at once (ResourceCountLimitExceeded) waits."""
        while True:
            try:
                return self.ec2.call(what, call)
            except Exception as e:
                if _code(e) != BUSY or time.monotonic() >= deadline:
                    raise
                log.warning("provider=%s %s: %s; trying again", self.provider.name, what, e)
                self._pause()

    def _import_snapshot(self, pimage: AwsDiskImage, name: str, bucket: str, key: str,
                         fmt: str, meta: dict[str, str], deadline: float) -> str:
        tags = as_tag_list(meta)
        started = self._start("import snapshot", lambda c: c.import_snapshot(
            DiskContainer={"Format": fmt, "UserBucket": {"S3Bucket": bucket, "S3Key": key}},
            TagSpecifications=[{"ResourceType": "import-snapshot-task", "Tags": tags}]),
            deadline)
        task_id = started["ImportTaskId"]
        detail = self._wait(task_id, deadline, lambda c: c.describe_import_snapshot_tasks(
            ImportTaskIds=[task_id])["ImportSnapshotTasks"], lambda t: t["SnapshotTaskDetail"])
        snapshot_id = detail["SnapshotId"]
        self._tag(snapshot_id, tags)
        snapshot = self.ec2.call(f"describe snapshot {snapshot_id}", lambda c: c.describe_snapshots(
            SnapshotIds=[snapshot_id]))["Snapshots"][0]
        size = pimage.volume_size or snapshot.get("VolumeSize") or \
            max(1, math.ceil(float(detail.get("DiskImageSize") or 0) / 2 ** 30))
        return self._register(pimage, name, snapshot_id, int(size), tags)

    def _register(self, pimage: AwsDiskImage, name: str, snapshot_id: str, size: int,
                  tags: list[dict[str, str]]) -> str:
        ebs: dict[str, Any] = {"DeleteOnTermination": True, "SnapshotId": snapshot_id,
                               "VolumeSize": size, "VolumeType": pimage.volume_type}
        if pimage.iops:
            ebs["Iops"] = pimage.iops
        if pimage.throughput:
            ebs["Throughput"] = pimage.throughput
        args: dict[str, Any] = {
            "Name": name, "Architecture": pimage.architecture, "RootDeviceName": "/dev/sda1",
            "VirtualizationType": "hvm", "EnaSupport": pimage.ena_support,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": ebs}],
            "TagSpecifications": [{"ResourceType": "image", "Tags": tags}]}
        if pimage.imds_support == "v2.0":
            args["ImdsSupport"] = "v2.0"
        image_id = self.ec2.call(f"register image {name}",
                                 lambda c: c.register_image(**args))["ImageId"]
        self._tag(image_id, tags)   # again: not every endpoint applies TagSpecifications
        return image_id

    def _import_image(self, pimage: AwsDiskImage, name: str, bucket: str, key: str,
                      fmt: str, meta: dict[str, str], deadline: float) -> str:
        tags = as_tag_list(meta)
        started = self._start("import image", lambda c: c.import_image(
            Architecture=pimage.architecture,
            DiskContainers=[{"Format": fmt, "UserBucket": {"S3Bucket": bucket, "S3Key": key}}],
            TagSpecifications=[{"ResourceType": "import-image-task", "Tags": tags}]), deadline)
        task_id = started["ImportTaskId"]
        task = self._wait(task_id, deadline, lambda c: c.describe_import_image_tasks(
            ImportTaskIds=[task_id])["ImportImageTasks"], lambda t: t)
        image_id = task["ImageId"]
        self._tag(image_id, tags)
        for snap in task.get("SnapshotDetails") or []:
            if snap.get("SnapshotId"):
                self._tag(snap["SnapshotId"], tags)
        return image_id

    def _wait(self, task_id: str, deadline: float, describe: Any, detail: Any
              ) -> dict[str, Any]:
        """Poll the import task until it ends; its detail when `completed`."""
        while True:
            try:
                tasks = self.ec2.call(f"describe import task {task_id}", describe)
            except Exception as e:   # a listing: throttling and the like pass
                log.warning("provider=%s Import task %s: %s", self.provider.name, task_id, e)
                tasks = []
            for task in tasks:
                info = detail(task)
                status = str(info.get("Status", "")).lower()
                if status == "completed":
                    return info
                if status == "deleted":
                    raise ImportFailed(f"import task {task_id} ended: "
                                       f"{info.get('StatusMessage') or 'deleted'}")
            if time.monotonic() >= deadline:
                self._cancel(task_id)
                raise ImportFailed(f"import task {task_id} not done within the "
                                   "image-import-timeout; cancelled")
            self._pause()

    def _pause(self) -> None:
        if self._closed.wait(self.poll_interval):
            raise ImportFailed("the builder is stopping")

    def _cancel(self, task_id: str) -> None:
        try:
            self.ec2.call(f"cancel import task {task_id}",
                          lambda c: c.cancel_import_task(ImportTaskId=task_id))
        except Exception as e:
            log.warning("provider=%s Could not cancel import task %s: %s",
                        self.provider.name, task_id, e)

    def _tag(self, resource: str, tags: list[dict[str, str]]) -> None:
        self.ec2.call(f"tag {resource}", lambda c: c.create_tags(Resources=[resource],
                                                                 Tags=tags))

    # -- delete and list ----------------------------------------------------------------

    def delete(self, external_id: str) -> None:
        """Delete an AMI and its snapshots, a snapshot, or an S3 object; gone is success."""
        if external_id.startswith(S3_PREFIX):
            bucket, _, key = external_id[len(S3_PREFIX):].partition("/")
            self.ec2.call(f"delete {external_id}", lambda c: c.delete_object(
                Bucket=bucket, Key=key), service="s3")
        elif external_id.startswith("snap-"):
            self._delete_snapshot(external_id)
        else:
            self._delete_ami(external_id)

    def _delete_ami(self, image_id: str) -> None:
        images = self._ignore_gone(lambda c: c.describe_images(ImageIds=[image_id])["Images"],
                                   f"describe image {image_id}", [])
        snapshots: set[str] = set()
        for image in images:
            for mapping in image.get("BlockDeviceMappings") or []:
                if (mapping.get("Ebs") or {}).get("SnapshotId"):
                    snapshots.add(mapping["Ebs"]["SnapshotId"])
            tags = tags_of(image)
            if tags.get(TAG_PROVIDER) == self.provider.name and tags.get(TAG_UPLOAD):
                snapshots |= {s["SnapshotId"] for s in self._snapshots(
                    {TAG_BUILD: tags.get(TAG_BUILD, ""), TAG_UPLOAD: tags[TAG_UPLOAD]})}
            log.info("provider=%s Deregistering AMI %s", self.provider.name, image_id)
            self._ignore_gone(lambda c: c.deregister_image(ImageId=image_id),
                              f"deregister image {image_id}", None)
        for snapshot_id in sorted(snapshots):
            self._delete_snapshot(snapshot_id)

    def _delete_snapshot(self, snapshot_id: str) -> None:
        log.info("provider=%s Deleting snapshot %s", self.provider.name, snapshot_id)
        self._ignore_gone(lambda c: c.delete_snapshot(SnapshotId=snapshot_id),
                          f"delete snapshot {snapshot_id}", None)

    def _ignore_gone(self, call: Any, what: str, gone: Any, service: str = "ec2") -> Any:
        try:
            return self.ec2.call(what, call, service=service)
        except Exception as e:
            if _code(e) in GONE:
                return gone
            raise

    def _filters(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        wanted = {TAG_PROVIDER: self.provider.name, **tags}
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in wanted.items()]

    def _snapshots(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        return list(self._pages("describe snapshots", "describe_snapshots", "Snapshots",
                                OwnerIds=["self"], Filters=self._filters(tags)))

    def _pages(self, what: str, method: str, key: str, **args: Any) -> Iterator[dict[str, Any]]:
        while True:
            page = self.ec2.call(what, lambda c: getattr(c, method)(**args))
            yield from page.get(key) or []
            if not page.get("NextToken"):
                return
            args["NextToken"] = page["NextToken"]

    def builder_images(self) -> list[tuple[str, str]]:
        """(AMI id, name) of the account's AMIs tagged `nodepool_build_id` by any builder
        (`nodepool alien-image-list`)."""
        return [(i["ImageId"], i.get("Name") or "") for i in self._pages(
            "describe images", "describe_images", "Images", Owners=["self"],
            Filters=[{"Name": "tag-key", "Values": [TAG_BUILD]}])]

    def our_images(self) -> list[tuple[str, str, str, str]]:
        """(id, name, build id, upload id) of every AMI, snapshot and S3 object tagged with
        this provider and an upload (leak cleanup's candidates)."""
        self._tag_imported()
        found = []
        for image in self._pages("describe images", "describe_images", "Images",
                                 Owners=["self"], Filters=self._filters({})):
            found.append((image["ImageId"], image.get("Name") or "", tags_of(image)))
        for snap in self._snapshots({}):
            found.append((snap["SnapshotId"], snap.get("Description") or "", tags_of(snap)))
        found.extend(self._objects())
        return [(i, n, t[TAG_BUILD], t[TAG_UPLOAD]) for i, n, t in found
                if t.get(TAG_PROVIDER) == self.provider.name and t.get(TAG_BUILD)
                and t.get(TAG_UPLOAD)]

    def _tag_imported(self) -> None:
        """EC2 does not tag what an import task makes: an uploader that died while it ran
        left an untagged snapshot (and AMI). As Nodepool's adapter, give the ones of our
        completed tasks the task's tags, so leak cleanup sees them."""
        made: dict[str, list[dict[str, str]]] = {}
        for task in self._pages("describe import snapshot tasks",
                                "describe_import_snapshot_tasks", "ImportSnapshotTasks"):
            detail = task.get("SnapshotTaskDetail") or {}
            if self._our_task(task, detail.get("Status")) and detail.get("SnapshotId"):
                made[detail["SnapshotId"]] = task["Tags"]
        for task in self._pages("describe import image tasks", "describe_import_image_tasks",
                                "ImportImageTasks"):
            if not self._our_task(task, task.get("Status")):
                continue
            ids = [task.get("ImageId")] + [s.get("SnapshotId")
                                           for s in task.get("SnapshotDetails") or []]
            made.update({i: task["Tags"] for i in ids if i})
        if not made:
            return
        existing = self._untagged(made)
        for resource in existing:
            log.info("provider=%s Tagging %s, made by an import task, with its tags",
                     self.provider.name, resource)
            self._tag(resource, made[resource])

    def _our_task(self, task: dict[str, Any], status: Any) -> bool:
        return (str(status).lower() == "completed"
                and tags_of(task).get(TAG_PROVIDER) == self.provider.name)

    def _untagged(self, ids: dict[str, Any]) -> list[str]:
        """Those of `ids` that exist without our provider tag."""
        snaps = [i for i in ids if i.startswith("snap-")]
        amis = [i for i in ids if not i.startswith("snap-")]
        found: list[dict[str, Any]] = []
        if snaps:
            found += self._pages("describe snapshots", "describe_snapshots", "Snapshots",
                                 OwnerIds=["self"],
                                 Filters=[{"Name": "snapshot-id", "Values": snaps}])
        if amis:
            found += self._pages("describe images", "describe_images", "Images",
                                 Owners=["self"], Filters=[{"Name": "image-id", "Values": amis}])
        return [r.get("SnapshotId") or r["ImageId"] for r in found
                if TAG_PROVIDER not in tags_of(r)]

    def _objects(self) -> list[tuple[str, str, dict[str, str]]]:
        bucket = self.provider.object_storage.get("bucket-name")
        if not bucket:
            return []
        found = []
        for obj in self._object_list(bucket):
            key = obj["Key"]
            tagging = self._ignore_gone(lambda c: c.get_object_tagging(Bucket=bucket, Key=key),
                                        f"tags of s3://{bucket}/{key}", None, service="s3")
            if tagging is not None:
                found.append((f"{S3_PREFIX}{bucket}/{key}", key, tags_of(
                    {"Tags": tagging.get("TagSet") or []})))
        return found

    def _object_list(self, bucket: str) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"Bucket": bucket}
        while True:
            page = self.ec2.call(f"list s3://{bucket}", lambda c: c.list_objects_v2(**args),
                                 service="s3")
            yield from page.get("Contents") or []
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def close(self) -> None:
        self._closed.set()
