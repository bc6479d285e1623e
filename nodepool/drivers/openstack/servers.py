"""Nova servers as the launcher sees them: tags, status, addresses, metadata and hostnames."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from typing import Any, Collection, Mapping

from nodepool.drivers.adapter import Instance, InstanceStatus, LaunchContext
from nodepool.errors import ConfigurationError

log = logging.getLogger("nodepool.drivers.openstack")

# Nodepool's own metadata keys, so its tools (and Ansible inventories) recognise our servers.
TAG_PROVIDER = "nodepool_provider_name"
TAG_POOL = "nodepool_pool_name"
TAG_NODE = "nodepool_node_id"
TAG_LABEL = "nodepool_node_label"
TAG_IMAGE = "nodepool_image_name"
METADATA_VALUE_MAX = 255  # Nova refuses longer metadata values

# Statuses in which a server is still on its way (or back) to ACTIVE.
_TRANSITIONAL = frozenset({"BUILD", "REBUILD", "REBOOT", "HARD_REBOOT", "MIGRATING", "RESIZE",
                           "VERIFY_RESIZE", "REVERT_RESIZE", "PASSWORD"})


def status_of(server: Mapping[str, Any]) -> InstanceStatus:
    """BUILD -> building, ACTIVE -> ready, deleting/DELETED -> deleting, the rest -> error."""
    status = str(server.get("status") or "").upper()
    if server.get("OS-EXT-STS:task_state") == "deleting" or status in ("DELETED", "SOFT_DELETED"):
        return InstanceStatus.DELETING
    if status == "ACTIVE":
        return InstanceStatus.READY
    if status in _TRANSITIONAL:
        return InstanceStatus.BUILDING
    return InstanceStatus.ERROR  # ERROR, SHUTOFF, PAUSED, UNKNOWN...: no use to a job


def fault_of(server: Mapping[str, Any]) -> str | None:
    fault = server.get("fault")
    if isinstance(fault, Mapping) and fault.get("message"):
        return str(fault["message"])
    status = str(server.get("status") or "")
    if status_of(server) == InstanceStatus.ERROR and status.upper() != "ERROR":
        return f"server is {status}"
    return None


@dataclasses.dataclass(frozen=True)
class Addresses:
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    public_ipv6: str | None = None
    private_ipv6: str | None = None

    @property
    def interface_ip(self) -> str | None:
        return self.public_ipv4 or self.public_ipv6 or self.private_ipv4

    @property
    def has_public(self) -> bool:
        return bool(self.public_ipv4 or self.public_ipv6)


def addresses_of(server: Mapping[str, Any], external_networks: Collection[str] = ()) -> Addresses:
    """Sort Nova's `addresses` into public/private v4/v6.

    Public: a floating IP, a fixed address on an external (provider) network,
    or a globally routable address; floating IPs win over fixed public ones.
    """
    found: dict[str, str] = {}
    floating_v4: str | None = None
    for network, entries in (server.get("addresses") or {}).items():
        for entry in entries or []:
            addr = entry.get("addr")
            if not addr:
                continue
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            floating = entry.get("OS-EXT-IPS:type") == "floating"
            public = floating or network in external_networks or ip.is_global
            key = f"{'public' if public else 'private'}_ipv{ip.version}"
            if floating and ip.version == 4 and floating_v4 is None:
                floating_v4 = addr
            found.setdefault(key, addr)
    if floating_v4:
        found["public_ipv4"] = floating_v4
    return Addresses(**found)


def to_instance(server: Mapping[str, Any], region: str | None,
                external_networks: Collection[str] = (), private: bool = False) -> Instance:
    """An Instance of the batched listing from a server's raw JSON; `private`: the
    cloud's clouds.yaml says `private: true`, so the interface is the private address."""
    metadata = dict(server.get("metadata") or {})
    addrs = addresses_of(server, external_networks)
    interface_ip = addrs.interface_ip
    if private:
        interface_ip = addrs.private_ipv4 or addrs.private_ipv6 or interface_ip
    return Instance(
        external_id=server["id"], status=status_of(server),
        provider=metadata.get(TAG_PROVIDER), pool=metadata.get(TAG_POOL),
        node_id=metadata.get(TAG_NODE),
        interface_ip=interface_ip, public_ipv4=addrs.public_ipv4,
        private_ipv4=addrs.private_ipv4, public_ipv6=addrs.public_ipv6,
        private_ipv6=addrs.private_ipv6,
        az=server.get("OS-EXT-AZ:availability_zone") or None, region=region,
        host_id=server.get("hostId") or None,
        hostname=server.get("name") or server.get("OS-EXT-SRV-ATTR:hostname"),
        fault=fault_of(server), metadata=metadata)


def flavor_amounts(server: Mapping[str, Any]) -> tuple[str | None, int | None, int | None]:
    """(flavor id, vcpus, ram MiB) of a listed server: embedded from 2.47, an id before."""
    flavor = server.get("flavor") or {}
    return flavor.get("id"), flavor.get("vcpus"), flavor.get("ram")


# -- what a new server is told ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class RequestAttributes:
    """`{request.*}` in dynamic-instance-properties: the fields of the request the node
    is launched for, as Nodepool offers them (its getSafeAttributes). A node launched
    for no request (a min-ready spare) has only its own labels, requestor and tenant.
    """

    id: str | None
    labels: list[str]
    requestor: str | None
    tenant_name: str | None
    requestor_data: Any = None
    relative_priority: int | None = None
    event_id: str | None = None
    created_time: float | None = None


def request_attributes(ctx: LaunchContext) -> RequestAttributes:
    """What `{request.*}` formats from: the request when known, else the node's fields."""
    req, node = ctx.request, ctx.node
    if req is None:
        return RequestAttributes(id=node.allocated_to, labels=list(node.type),
                                 requestor=node.requestor, tenant_name=node.tenant_name)
    return RequestAttributes(id=req.id, labels=list(req.node_types), requestor=req.requestor,
                             tenant_name=req.tenant_name, requestor_data=req.requestor_data,
                             relative_priority=req.relative_priority, event_id=req.event_id,
                             created_time=req.created_time)


def hostname_for(ctx: LaunchContext) -> str:
    """The server name from the provider's hostname-format."""
    fmt = ctx.provider.hostname_format
    try:
        return fmt.format(label=ctx.label, provider=ctx.provider, node=ctx.node, pool=ctx.pool)
    except (AttributeError, IndexError, KeyError, ValueError) as e:
        raise ConfigurationError(f"provider {ctx.provider.name}: hostname-format {fmt!r} "
                                 f"cannot be formatted: {e!r}") from e


def metadata_for(ctx: LaunchContext, image_name: str | None) -> dict[str, str]:
    """Server metadata: instance-properties, dynamic ones, Nodepool's groups, then our tags.

    Our tags are applied last so no property can hide a server from leak cleanup.
    Nova wants string values; YAML gives ints and bools too.
    """
    label, node = ctx.label, ctx.node
    meta: dict[str, str] = {}
    for key, value in (label.instance_properties or {}).items():
        meta[str(key)] = _text(value)
    request = request_attributes(ctx)
    for key, value in (label.dynamic_instance_properties or {}).items():
        try:
            text = str(value).format(request=request)
        except Exception as e:  # Nodepool logs and skips a property it cannot format
            log.warning("node=%s provider=%s dynamic-instance-properties %s=%r: %r; skipped",
                        node.id, ctx.provider.name, key, value, e)
            continue
        if len(text) > METADATA_VALUE_MAX:
            # Request data is not the operator's to fix; Nova would refuse the whole create.
            log.warning("node=%s provider=%s dynamic-instance-properties %s: %d characters, "
                        "cut to %d", node.id, ctx.provider.name, key, len(text),
                        METADATA_VALUE_MAX)
            text = text[:METADATA_VALUE_MAX]
        meta[str(key)] = text
    groups = [ctx.provider.name, image_name, label.name]
    meta["groups"] = ",".join(g for g in groups if g)
    if image_name:
        meta[TAG_IMAGE] = image_name
    meta.update({TAG_PROVIDER: ctx.provider.name, TAG_POOL: ctx.pool.name,
                 TAG_NODE: node.id or "", TAG_LABEL: label.name})
    return meta


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
