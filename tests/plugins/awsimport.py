"""EC2's import tasks for the AWS test proxy: the calls moto's server lacks, over moto's objects.

moto (5.2) answers ImportSnapshot and ImportImage with "not implemented". The builder's
AWS uploads need them, so the proxy in front of moto (motoaws.FaultProxy) answers these
five actions itself, with the XML EC2 sends, and makes the results real in moto: the S3
object the task names must exist in moto's S3 (else the task ends `deleted`, as EC2's
does), the snapshot is a real moto snapshot of a volume of the object's size (GiB rounded
up), and an image import registers a real moto AMI. Like EC2, nothing made by a task is
tagged (the task's own tags are on the task): tagging is the importer's job.

A task is `active` for `polls` DescribeImport*Tasks calls, then `completed` (or `deleted`
with a status message after `fail_next`).
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore.exceptions import ClientError

ACTIONS = frozenset({"ImportSnapshot", "DescribeImportSnapshotTasks", "ImportImage",
                     "DescribeImportImageTasks", "CancelImportTask"})
XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def _el(name: str, value: Any) -> str:
    return "" if value is None else f"<{name}>{escape(str(value))}</{name}>"


def _param(params: dict[str, str], suffix: str) -> str | None:
    for key, value in params.items():
        if key.endswith(suffix):
            return value
    return None


def _tags(params: dict[str, str]) -> dict[str, str]:
    """TagSpecification.1.Tag.N.Key/Value of the request."""
    tags = {}
    for key, value in params.items():
        found = re.fullmatch(r"TagSpecification\.\d+\.Tag\.(\d+)\.Key", key)
        if found:
            tags[value] = params.get(key[:-3] + "Value", "")
    return tags


class ImportTasks:
    """The import tasks of one moto server (reset with it)."""

    def __init__(self, moto_url: str, region: str, polls: int = 1):
        kw = {"endpoint_url": moto_url, "region_name": region,
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        self.ec2, self.s3 = boto3.client("ec2", **kw), boto3.client("s3", **kw)
        self.zone = f"{region}a"
        self.default_polls = polls
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.polls = self.default_polls
        self.failures: list[str] = []
        self.started: list[dict[str, Any]] = []   # each import request's parameters

    def fail_next(self, message: str = "ClientError: Disk validation failed") -> None:
        with self.lock:
            self.failures.append(message)

    def handle(self, action: str, params: dict[str, str]) -> tuple[int, bytes]:
        with self.lock:
            body = getattr(self, "_" + re.sub(r"(?<!^)([A-Z])", r"_\1", action).lower())(params)
        return 200, (f'<?xml version="1.0" encoding="UTF-8"?><{action}Response xmlns="{XMLNS}">'
                     f"<requestId>{uuid.uuid4()}</requestId>{body}</{action}Response>").encode()

    # -- starting -------------------------------------------------------------------

    def _start(self, kind: str, params: dict[str, str]) -> dict[str, Any]:
        self.started.append(dict(params))
        prefix = "import-snap" if kind == "snap" else "import-ami"
        task = {"id": f"{prefix}-{uuid.uuid4().hex[:17]}", "kind": kind,
                "bucket": _param(params, "UserBucket.S3Bucket"),
                "key": _param(params, "UserBucket.S3Key"),
                "format": _param(params, "Format"), "tags": _tags(params),
                "polls": self.polls, "status": "active", "message": "pending",
                "size": 0, "snapshot": None, "image": None}
        failure = self.failures.pop(0) if self.failures else None
        try:
            head = self.s3.head_object(Bucket=task["bucket"], Key=task["key"])
            task["size"] = head["ContentLength"]
        except ClientError:
            failure = failure or (f"ClientError: The given S3 object is not accessible: "
                                  f"s3://{task['bucket']}/{task['key']}")
        task["failure"] = failure
        self.tasks[task["id"]] = task
        return task

    def _make(self, task: dict[str, Any]) -> None:
        """What a finished task leaves: a snapshot (and for an image import, an AMI)."""
        gib = max(1, math.ceil(task["size"] / 2 ** 30))
        volume = self.ec2.create_volume(AvailabilityZone=self.zone, Size=gib)["VolumeId"]
        task["snapshot"] = self.ec2.create_snapshot(
            VolumeId=volume, Description=f"Created by AWS-VMImport service for {task['id']}"
        )["SnapshotId"]
        self.ec2.delete_volume(VolumeId=volume)
        task["gib"] = gib
        if task["kind"] == "image":
            task["image"] = self.ec2.register_image(
                Name=task["id"], Architecture="x86_64", RootDeviceName="/dev/sda1",
                VirtualizationType="hvm", BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {
                    "SnapshotId": task["snapshot"], "VolumeSize": gib}}])["ImageId"]

    def _advance(self, task: dict[str, Any]) -> None:
        if task["status"] != "active":
            return
        if task["polls"] > 0:
            task["polls"] -= 1
            return
        if task["failure"]:
            task["status"], task["message"] = "deleted", task["failure"]
            return
        self._make(task)
        task["status"], task["message"] = "completed", None

    # -- XML ------------------------------------------------------------------------

    @staticmethod
    def _tag_set(task: dict[str, Any]) -> str:
        items = "".join(f"<item>{_el('key', k)}{_el('value', v)}</item>"
                        for k, v in task["tags"].items())
        return f"<tagSet>{items}</tagSet>"

    @staticmethod
    def _detail(task: dict[str, Any]) -> str:
        return (_el("diskImageSize", float(task["size"])) + _el("format", task["format"]) +
                f"<userBucket>{_el('s3Bucket', task['bucket'])}{_el('s3Key', task['key'])}"
                f"</userBucket>" + _el("snapshotId", task["snapshot"]) +
                _el("status", task["status"]) + _el("statusMessage", task["message"]))

    def _snapshot_task(self, task: dict[str, Any]) -> str:
        return (_el("importTaskId", task["id"]) +
                f"<snapshotTaskDetail>{self._detail(task)}</snapshotTaskDetail>" +
                self._tag_set(task))

    def _image_task(self, task: dict[str, Any]) -> str:
        return (_el("importTaskId", task["id"]) + _el("architecture", "x86_64") +
                _el("imageId", task["image"]) + _el("status", task["status"]) +
                _el("statusMessage", task["message"]) +
                f"<snapshotDetailSet><item>{_el('deviceName', '/dev/sda1')}"
                f"{self._detail(task)}</item></snapshotDetailSet>" + self._tag_set(task))

    def _listed(self, params: dict[str, str], kind: str) -> list[dict[str, Any]]:
        wanted = {v for k, v in params.items() if re.fullmatch(r"ImportTaskId\.\d+", k)}
        found = [t for t in self.tasks.values()
                 if t["kind"] == kind and (not wanted or t["id"] in wanted)]
        for task in found:
            self._advance(task)
        return found

    def _import_snapshot(self, params: dict[str, str]) -> str:
        return self._snapshot_task(self._start("snap", params))

    def _describe_import_snapshot_tasks(self, params: dict[str, str]) -> str:
        items = "".join(f"<item>{self._snapshot_task(t)}</item>"
                        for t in self._listed(params, "snap"))
        return f"<importSnapshotTaskSet>{items}</importSnapshotTaskSet>"

    def _import_image(self, params: dict[str, str]) -> str:
        return self._image_task(self._start("image", params))

    def _describe_import_image_tasks(self, params: dict[str, str]) -> str:
        items = "".join(f"<item>{self._image_task(t)}</item>"
                        for t in self._listed(params, "image"))
        return f"<importImageTaskSet>{items}</importImageTaskSet>"

    def _cancel_import_task(self, params: dict[str, str]) -> str:
        task = self.tasks.get(params.get("ImportTaskId", ""))
        previous = task["status"] if task else "unknown"
        if task is not None and task["status"] == "active":
            task["status"], task["message"] = "deleted", "cancelled by the user"
        return (_el("importTaskId", params.get("ImportTaskId")) + _el("state", "deleting") +
                _el("previousState", previous))
