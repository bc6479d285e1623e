"""EC2 instances as the launcher sees them: Nodepool's tags, states and addresses."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from nodepool.drivers.adapter import Instance, InstanceStatus, LaunchContext

log = logging.getLogger("nodepool.drivers.aws")

# Nodepool's AWS tag keys, so that Nodepool and this launcher recognise each other's objects.
TAG_PROVIDER = "nodepool_provider_name"
TAG_POOL = "nodepool_pool_name"
TAG_NODE = "nodepool_node_id"
TAG_NAME = "Name"

_STATES = {"pending": InstanceStatus.BUILDING, "running": InstanceStatus.READY,
           "shutting-down": InstanceStatus.DELETING, "terminated": InstanceStatus.DELETING}


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or [] if "Key" in t}


def as_tag_list(tags: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]


def hostname_for(ctx: LaunchContext) -> str:
    return f"np{ctx.node.id}"


def tags_for(ctx: LaunchContext) -> dict[str, str]:
    """The label's tags, its dynamic tags formatted with the request, then ours (they win)."""
    label = ctx.label
    tags: dict[str, str] = {k: str(v) for k, v in (label.tags or {}).items()}
    request = _safe_request(ctx.request)
    for key, template in (label.dynamic_tags or {}).items():
        try:
            tags[key] = str(template).format(request=request)
        except (KeyError, AttributeError, IndexError, ValueError) as e:
            log.warning("node=%s provider=%s Cannot format dynamic tag %s: %s",
                        ctx.node.id, ctx.provider.name, key, e)
    tags.update({TAG_NODE: ctx.node.id or "", TAG_POOL: ctx.pool.name,
                 TAG_PROVIDER: ctx.provider.name, TAG_NAME: hostname_for(ctx)})
    return tags


class _Attributes:
    """A request's attributes for `str.format` (Nodepool's getSafeAttributes)."""

    def __init__(self, values: Mapping[str, Any]):
        self.__dict__.update(values)


def _safe_request(request: Any) -> _Attributes:
    values = {}
    for key in ("id", "requestor", "requestor_data", "relative_priority", "event_id",
                "node_types", "tenant_name"):
        values[key] = getattr(request, key, None)
    return _Attributes(values)


def status_of(instance: Mapping[str, Any]) -> InstanceStatus:
    state = str((instance.get("State") or {}).get("Name") or "").lower()
    return _STATES.get(state, InstanceStatus.ERROR)   # stopping, stopped: no use to a job


def is_gone(instance: Mapping[str, Any]) -> bool:
    return str((instance.get("State") or {}).get("Name") or "").lower() == "terminated"


def to_instance(raw: Mapping[str, Any], region: str | None,
                use_internal_ip: bool = False) -> Instance:
    tags = tags_of(raw)
    public4, private4 = raw.get("PublicIpAddress"), raw.get("PrivateIpAddress")
    ipv6 = next((a.get("Ipv6Address") for eni in raw.get("NetworkInterfaces") or []
                 for a in eni.get("Ipv6Addresses") or []), None)
    interface = private4 if use_internal_ip else (public4 or ipv6 or private4)
    status = status_of(raw)
    reason = (raw.get("StateReason") or {}).get("Message")
    return Instance(
        external_id=raw["InstanceId"], status=status,
        provider=tags.get(TAG_PROVIDER), pool=tags.get(TAG_POOL), node_id=tags.get(TAG_NODE),
        interface_ip=interface, public_ipv4=public4, private_ipv4=private4, public_ipv6=ipv6,
        az=(raw.get("Placement") or {}).get("AvailabilityZone"), region=region,
        hostname=tags.get(TAG_NAME),
        fault=(reason or f"instance is {raw.get('State', {}).get('Name')}")
        if status == InstanceStatus.ERROR else None,
        metadata={**tags, "instance_type": raw.get("InstanceType", ""),
                  "host_id": (raw.get("Placement") or {}).get("HostId")})
