"""How Nova shows a server at a given microversion, and the console log it prints."""

from __future__ import annotations

import hashlib
import re
import time

from .httpkit import JSON, Request
from .models import Server, iso
from .state import CloudState


def nova_time(ts: float | None) -> str | None:
    """OS-SRV-USG timestamps carry microseconds and no zone suffix in Nova."""
    if ts is None:
        return None
    return iso(ts).rstrip("Z") + ".%06d" % int((ts % 1) * 1_000_000)


def hostname_of(name: str) -> str:
    """Nova's sanitised hostname: lower case, [a-z0-9-], at most 63 characters."""
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower().replace("_", "-").replace(" ", "-")).strip("-.")
    return host[:63] or "server"


def addresses(state: CloudState, server: Server) -> dict[str, list[JSON]]:
    # Nova fills addresses once networking is done; callers must not rely on them during BUILD.
    if server.status == "BUILD":
        return {}
    result: dict[str, list[JSON]] = {}
    for port in state.server_ports(server):
        entries = result.setdefault(state.networks[port.network_id].name, [])
        for fixed in port.fixed_ips:
            entries.append({"version": 4, "addr": fixed["ip_address"], "OS-EXT-IPS:type": "fixed",
                            "OS-EXT-IPS-MAC:mac_addr": port.mac})
        for fip in state.fips_of_port(port.id):
            entries.append({"version": 4, "addr": fip.address, "OS-EXT-IPS:type": "floating",
                            "OS-EXT-IPS-MAC:mac_addr": port.mac})
    return result


def server_view(state: CloudState, server: Server, req: Request) -> JSON:
    mv, base = req.microversion, req.base_url
    flavor = state.flavors.get(server.flavor_id)
    if mv >= (2, 47) and flavor is not None:
        flavor_view: JSON = {"vcpus": flavor.vcpus, "ram": flavor.ram, "disk": flavor.disk, "ephemeral": 0,
                             "swap": 0, "original_name": flavor.name, "extra_specs": {}}
    else:
        flavor_view = {"id": server.flavor_id,
                       "links": [{"rel": "bookmark", "href": f"{base}/compute/flavors/{server.flavor_id}"}]}
    image: JSON | str = ""
    if server.image_id:
        image = {"id": server.image_id,
                 "links": [{"rel": "bookmark", "href": f"{base}/compute/images/{server.image_id}"}]}
    view: JSON = {
        "id": server.id, "name": server.name, "status": server.status,
        "tenant_id": state.project_id, "user_id": state.user_id, "metadata": dict(server.metadata),
        "hostId": hashlib.sha224((state.project_id + "sim-host-1").encode()).hexdigest()
        if server.status != "BUILD" else "",
        "image": image, "flavor": flavor_view,
        "created": iso(server.created), "updated": iso(server.updated),
        "addresses": addresses(state, server), "accessIPv4": "", "accessIPv6": "",
        "links": [{"rel": "self", "href": f"{base}/compute/v2.1/servers/{server.id}"},
                  {"rel": "bookmark", "href": f"{base}/compute/servers/{server.id}"}],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": server.az,
        "config_drive": "True" if server.config_drive else "",
        "key_name": server.key_name,
        "OS-SRV-USG:launched_at": nova_time(server.launched),
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:task_state": server.task_state,
        "OS-EXT-STS:vm_state": server.vm_state,
        "OS-EXT-STS:power_state": server.power_state,
        "os-extended-volumes:volumes_attached": [
            {"id": v["id"], "delete_on_termination": v["delete_on_termination"]} if mv >= (2, 3)
            else {"id": v["id"]} for v in server.volumes],
    }
    if server.status in ("BUILD", "ACTIVE"):
        view["progress"] = 0
    if server.status != "BUILD":
        view["security_groups"] = [{"name": g} for g in server.security_groups]
    if server.fault is not None and server.status in ("ERROR", "DELETED"):
        view["fault"] = dict(server.fault)
    if mv >= (2, 9):
        view["locked"] = False
    if mv >= (2, 19):
        view["description"] = server.description
    if mv >= (2, 26):
        view["tags"] = list(server.tags)
    if mv >= (2, 63):
        view["trusted_image_certificates"] = None
    if mv >= (2, 71):
        view["server_groups"] = []
    if mv >= (2, 73):
        view["locked_reason"] = None
    if mv >= (2, 90):
        view["OS-EXT-SRV-ATTR:hostname"] = hostname_of(server.name)
    if mv >= (2, 96):
        view["pinned_availability_zone"] = server.pinned_az
    return view


def console_log(server: Server) -> list[str]:
    """A short boot log shaped like cloud-init's, with the host keys a real node has."""
    lines = ["[    0.000000] Linux version 6.1.0-sim (ossim) #1 SMP", f"[    0.100000] Booting {server.name}"]
    if server.status in ("ACTIVE", "DELETED") or server.launched:
        lines.append(f"Cloud-init v. 23.1 running 'init' at {iso(server.launched or time.time())}.")
        host_keys = server.node.host_keys if server.node is not None else []
        if host_keys:
            lines.append("-----BEGIN SSH HOST KEY KEYS-----")
            lines.extend(host_keys)
            lines.append("-----END SSH HOST KEY KEYS-----")
        lines.append(f"{server.name} login:")
    if server.fault:
        lines.append(f"[    1.000000] boot failed: {server.fault['message']}")
    return lines
