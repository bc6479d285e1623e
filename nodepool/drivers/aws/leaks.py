"""Leak cleanup of volumes: unattached EBS volumes tagged with this provider."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nodepool.drivers.adapter import CloudResource
from nodepool.drivers.aws.instances import TAG_NODE, TAG_PROVIDER, tags_of

if TYPE_CHECKING:
    from nodepool.drivers.aws.ec2 import Ec2

log = logging.getLogger("nodepool.drivers.aws")

VOLUME = "volume"


def scan_volumes(ec2: Ec2, provider_name: str) -> list[CloudResource]:
    """Our volumes that no instance holds (an attached one goes with its instance)."""
    volumes = ec2.describe_volumes([{"Name": f"tag:{TAG_PROVIDER}", "Values": [provider_name]},
                                    {"Name": "status", "Values": ["available", "error"]}])
    return [tagged(VOLUME, volume["VolumeId"], volume, volume.get("CreateTime"),
                   f"{volume.get('Size')} GiB {volume.get('VolumeType', '')}".strip())
            for volume in volumes]


def tagged(kind: str, ident: str, obj: dict, created: Any, detail: str) -> CloudResource:
    """A leak candidate from an EC2 object carrying our tags (provider, node id)."""
    tags = tags_of(obj)
    return CloudResource(
        kind=kind, id=ident, provider=tags.get(TAG_PROVIDER), node_id=tags.get(TAG_NODE),
        created_at=created.timestamp() if hasattr(created, "timestamp") else None,
        detail=detail)


def delete_volume(ec2: Ec2, resource: CloudResource) -> None:
    ec2.call(f"delete volume {resource.id}",
             lambda c: c.delete_volume(VolumeId=resource.id), not_found=None)
    log.info("provider=%s Deleted leaked volume %s (node %s)", resource.provider, resource.id,
             resource.node_id)
