"""Leak cleanup's non-server objects: our floating IPs, DOWN compute ports of gone servers."""

from __future__ import annotations

import datetime
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from nodepool.drivers.adapter import CloudResource
from nodepool.drivers.openstack.servers import TAG_NODE, TAG_PROVIDER

if TYPE_CHECKING:
    from nodepool.drivers.openstack.adapter import OpenStackAdapter

log = logging.getLogger("nodepool.drivers.openstack")

FLOATING_IP = "floating-ip"
PORT = "port"

_DESCRIPTION = re.compile(rf"(?:^|\s){TAG_PROVIDER}=(\S+)\s+{TAG_NODE}=(\S+)")


def fip_description(provider: str, node_id: str | None) -> str:
    """The tag a floating IP of ours carries (Neutron can filter on it exactly)."""
    return f"{TAG_PROVIDER}={provider} {TAG_NODE}={node_id or ''}"


def tagged_floating_ips(conn: Any, provider: str, node_id: str | None) -> list[Any]:
    """The node's floating IPs: filtered by Neutron on the description, and checked again
    here, so a Neutron that ignored the filter can never hand us someone else's."""
    description = fip_description(provider, node_id)
    return [f for f in conn.network.ips(description=description)
            if f.description == description]


def parse_fip_description(text: str | None) -> tuple[str, str] | None:
    """(provider, node id) from a floating IP's description, None if it is not ours."""
    match = _DESCRIPTION.search(text or "")
    return (match.group(1), match.group(2)) if match else None


def _epoch(stamp: Any) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)  # Neutron prints UTC
    return when.timestamp()


class LeakScanner:
    """Lists and deletes the floating IPs and ports attributable to one provider.

    Attributable means: a floating IP whose description carries our tag, or
    that is attached to a port of a server tagged with us; with
    clean-floating-ips, also any unattached floating IP of the project (as
    Nodepool does: the project is the launcher's). A port is ours when it is
    a compute port, DOWN, unchanged for port-cleanup-interval seconds and its
    server is gone; its node id is known when that server was seen tagged
    with us. Untagged servers are never listed.
    """

    def __init__(self, adapter: OpenStackAdapter):
        self.adapter = adapter
        self.cloud = adapter.cloud
        self.provider = adapter.provider

    def scan(self) -> list[CloudResource]:
        return self.floating_ips() + self.ports()

    def floating_ips(self) -> list[CloudResource]:
        fips = self.cloud.call("list floating IPs", lambda conn: list(conn.network.ips()))
        owners = self.adapter.known_servers()
        out = []
        for fip in fips:
            tag = parse_fip_description(fip.description)
            details = fip.port_details or {}
            device = details.get("device_id") if isinstance(details, dict) else None
            node_id: str | None
            if tag is not None:
                if tag[0] != self.provider.name:
                    continue  # another provider's
                node_id = tag[1] or None
            elif fip.port_id and device in owners:
                node_id = owners[device]
            elif not fip.port_id and self.provider.clean_floating_ips:
                node_id = None
            else:
                continue
            out.append(CloudResource(
                kind=FLOATING_IP, id=fip.id, provider=self.provider.name, node_id=node_id,
                created_at=_epoch(fip.created_at),
                detail=f"{fip.floating_ip_address} port={fip.port_id or '-'}"))
        return out

    def ports(self) -> list[CloudResource]:
        if self.provider.port_cleanup_interval <= 0:
            return []  # port-cleanup-interval: 0 turns port cleanup off, as in Nodepool
        current = self.adapter.current_server_ids()
        if current is None:
            return []  # no recent listing: cannot tell a gone server from a live one
        ports = self.cloud.call("list DOWN ports",
                                lambda conn: list(conn.network.ports(status="DOWN")))
        owners = self.adapter.known_servers()
        now = time.time()
        out = []
        for port in ports:
            if not str(port.device_owner or "").startswith("compute:"):
                continue
            if port.device_id and port.device_id in current:
                continue  # its server exists (SHUTOFF servers have DOWN ports)
            changed = _epoch(port.updated_at) or _epoch(port.created_at)
            if changed is None or now - changed < self.provider.port_cleanup_interval:
                continue
            out.append(CloudResource(
                kind=PORT, id=port.id, provider=self.provider.name,
                node_id=owners.get(port.device_id or ""), created_at=_epoch(port.created_at),
                detail=f"device_owner={port.device_owner} device_id={port.device_id or '-'}"))
        return out

    def delete(self, resource: CloudResource) -> None:
        """Delete one listed object; one that is gone already is success."""
        if resource.kind == FLOATING_IP:
            self.cloud.call(f"delete floating IP {resource.id}",
                            lambda conn: conn.network.delete_ip(resource.id, ignore_missing=True),
                            not_found=None)
        elif resource.kind == PORT:
            self.cloud.call(f"delete port {resource.id}",
                            lambda conn: conn.network.delete_port(resource.id,
                                                                  ignore_missing=True),
                            not_found=None)
        else:
            raise ValueError(f"provider {self.provider.name}: cannot delete a {resource.kind!r}")
        log.info("provider=%s node=%s Deleted leaked %s %s (%s)", self.provider.name,
                 resource.node_id, resource.kind, resource.id, resource.detail)
