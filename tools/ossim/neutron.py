"""Neutron v2.0: networks, subnets, ports, floating IPs, security groups, extensions, quotas."""

from __future__ import annotations

import time
from typing import Any, Callable

from .httpkit import JSON, ApiError, Request, Response, Router, paginate, with_query
from .models import FloatingIP, Port, iso, new_id
from .state import CloudState

V2 = "/network/v2.0"
ROUTER_ID = "5f3c8a1e-2b4d-4c6e-8f0a-1b2c3d4e5f60"  # the one router FIPs are associated through
EXTENSIONS = ("external-net", "router", "security-group", "quotas", "standard-attr-description",
              "standard-attr-tag", "standard-attr-timestamp", "standard-attr-revisions", "fip-port-details",
              "port-security", "binding", "extra_dhcp_opt", "allowed-address-pairs", "dns-integration",
              "pagination", "sorting", "project-id")


class NeutronApi:
    def __init__(self, state: CloudState) -> None:
        self.state = state

    def register(self, router: Router) -> None:
        add = router.add
        for path in ("/network", "/network/"):
            add("GET", path, self.versions, "network", public=True)
        add("GET", V2, self.resources, "network")
        add("GET", V2 + "/extensions", self.extensions, "network")
        add("GET", V2 + "/quotas/{project}", self.quotas, "network")
        add("GET", V2 + "/networks", self.list_networks, "network")
        add("GET", V2 + "/networks/{id}", self.get_network, "network")
        add("GET", V2 + "/subnets", self.list_subnets, "network")
        add("GET", V2 + "/subnets/{id}", self.get_subnet, "network")
        add("GET", V2 + "/security-groups", self.list_security_groups, "network")
        add("GET", V2 + "/ports", self.list_ports, "network")
        add("POST", V2 + "/ports", self.create_port, "network")
        add("GET", V2 + "/ports/{id}", self.get_port, "network")
        add("PUT", V2 + "/ports/{id}", self.update_port, "network")
        add("DELETE", V2 + "/ports/{id}", self.delete_port, "network")
        add("GET", V2 + "/floatingips", self.list_fips, "network")
        add("POST", V2 + "/floatingips", self.create_fip, "network")
        add("GET", V2 + "/floatingips/{id}", self.get_fip, "network")
        add("PUT", V2 + "/floatingips/{id}", self.update_fip, "network")
        add("DELETE", V2 + "/floatingips/{id}", self.delete_fip, "network")

    # -- discovery -------------------------------------------------------------------------------

    def versions(self, req: Request) -> Response:
        return Response(200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                             "links": [{"rel": "self", "href": f"{req.base_url}{V2}/"}]}]})

    def resources(self, req: Request) -> Response:
        names = ("networks", "subnets", "ports", "floatingips", "security-groups")
        return Response(200, {"resources": [
            {"name": n.rstrip("s"), "collection": n, "links": [{"rel": "self", "href": f"{req.base_url}{V2}/{n}"}]}
            for n in names]})

    def extensions(self, req: Request) -> Response:
        return Response(200, {"extensions": [{"alias": a, "name": a, "description": a, "links": [],
                                              "updated": "2020-01-01T00:00:00-00:00"} for a in EXTENSIONS]})

    def quotas(self, req: Request) -> Response:
        q = self.state.config.quotas
        return Response(200, {"quota": {"floatingip": q.floating_ips, "network": 100, "port": q.ports,
                                        "router": 10, "subnet": 100, "security_group": 10,
                                        "security_group_rule": 100, "rbac_policy": 10, "subnetpool": -1}})

    # -- views -----------------------------------------------------------------------------------

    def _common(self, created: float, updated: float, revision: int = 1) -> JSON:
        return {"tenant_id": self.state.project_id, "project_id": self.state.project_id,
                "created_at": iso(created), "updated_at": iso(updated), "revision_number": revision}

    def network_view(self, net_id: str) -> JSON:
        net = self.state.networks[net_id]
        return {"id": net.id, "name": net.name, "admin_state_up": True, "mtu": 1450, "status": "ACTIVE",
                "subnets": list(net.subnet_ids), "shared": False, "availability_zone_hints": [],
                "availability_zones": ["nova"], "ipv4_address_scope": None, "ipv6_address_scope": None,
                "router:external": net.external, "description": "", "port_security_enabled": True,
                "is_default": net.external, "tags": [], **self._common(net.created, net.created)}

    def subnet_view(self, subnet_id: str) -> JSON:
        subnet = self.state.subnets[subnet_id]
        pool = self.state.pools[subnet_id].net
        return {"id": subnet.id, "name": subnet.name, "network_id": subnet.network_id, "ip_version": 4,
                "subnetpool_id": None, "enable_dhcp": True, "ipv6_ra_mode": None, "ipv6_address_mode": None,
                "gateway_ip": subnet.gateway_ip, "cidr": subnet.cidr,
                "allocation_pools": [{"start": str(pool.network_address + 2), "end": str(pool.broadcast_address - 1)}],
                "host_routes": [], "dns_nameservers": [], "description": "", "service_types": [], "tags": [],
                **self._common(subnet.created, subnet.created, 0)}

    def port_view(self, port: Port) -> JSON:
        return {"id": port.id, "name": port.name, "network_id": port.network_id, "mac_address": port.mac,
                "admin_state_up": True, "status": port.status, "device_id": port.device_id,
                "device_owner": port.device_owner, "fixed_ips": [dict(f) for f in port.fixed_ips],
                "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": list(self.state.security_groups),
                "description": port.description, "binding:vnic_type": "normal", "port_security_enabled": True,
                "dns_name": "", "tags": list(port.tags), **self._common(port.created, port.updated, port.revision)}

    def fip_view(self, fip: FloatingIP) -> JSON:
        port = self.state.ports.get(fip.port_id) if fip.port_id else None
        details = None
        if port is not None:
            details = {"name": port.name, "network_id": port.network_id, "mac_address": port.mac,
                       "admin_state_up": True, "status": port.status, "device_id": port.device_id,
                       "device_owner": port.device_owner}
        return {"id": fip.id, "floating_ip_address": fip.address, "floating_network_id": fip.network_id,
                "router_id": ROUTER_ID if fip.port_id else None, "port_id": fip.port_id,
                "fixed_ip_address": fip.fixed_ip, "status": fip.status, "description": fip.description,
                "port_details": details, "dns_domain": "", "dns_name": "", "port_forwardings": [],
                "qos_policy_id": None, "tags": list(fip.tags), **self._common(fip.created, fip.updated, fip.revision)}

    def _list(self, req: Request, collection: str, views: list[JSON]) -> Response:
        # Neutron filters on any attribute given in the query; several values for one key are ORed.
        skip = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
        for key, wanted in req.query.items():
            if key in skip:
                continue
            views = [v for v in views if key not in v or _filter_ok(v[key], wanted)]
        page, next_marker = paginate(views, req, lambda v: v["id"], 10**9, 10**9)
        fields = req.query.get("fields")
        if fields:
            page = [{k: v[k] for k in fields if k in v} for v in page]
        body: JSON = {collection: page}
        if next_marker:
            body[f"{collection}_links"] = [{"rel": "next", "href": with_query(
                f"{req.base_url}{req.path}", req.query, marker=next_marker)}]
        return Response(200, body)

    def _get(self, table: dict[str, Any], kind: str, key: str, obj_id: str, view: Callable[[Any], JSON]) -> Response:
        with self.state.lock:
            obj = table.get(obj_id)
            if obj is None:
                raise ApiError(404, f"{kind}NotFound", f"{kind} {obj_id} could not be found.")
            return Response(200, {key: view(obj)})

    # -- networks, subnets, security groups ------------------------------------------------------

    def list_networks(self, req: Request) -> Response:
        with self.state.lock:
            return self._list(req, "networks", [self.network_view(n) for n in self.state.networks])

    def get_network(self, req: Request) -> Response:
        return self._get(self.state.networks, "Network", "network", req.params["id"], lambda n: self.network_view(n.id))

    def list_subnets(self, req: Request) -> Response:
        with self.state.lock:
            return self._list(req, "subnets", [self.subnet_view(s) for s in self.state.subnets])

    def get_subnet(self, req: Request) -> Response:
        return self._get(self.state.subnets, "Subnet", "subnet", req.params["id"], lambda s: self.subnet_view(s.id))

    def list_security_groups(self, req: Request) -> Response:
        now = time.time()
        groups = [{"id": gid, "name": name, "description": "Default security group", "security_group_rules": [],
                   "stateful": True, "shared": False, "tags": [], **self._common(now, now)}
                  for gid, name in self.state.security_groups.items()]
        return self._list(req, "security_groups", groups)

    # -- ports ------------------------------------------------------------------------------------

    def list_ports(self, req: Request) -> Response:
        with self.state.lock:
            return self._list(req, "ports", [self.port_view(p) for p in self.state.ports.values()])

    def get_port(self, req: Request) -> Response:
        return self._get(self.state.ports, "Port", "port", req.params["id"], self.port_view)

    def create_port(self, req: Request) -> Response:
        spec = req.json().get("port") or {}
        with self.state.lock:
            net_id = spec.get("network_id")
            if net_id not in self.state.networks:
                raise ApiError(404, "NetworkNotFound", f"Network {net_id} could not be found.")
            quota = self.state.config.quotas.ports
            if 0 <= quota <= len(self.state.ports):
                raise ApiError(409, "OverQuota", "Quota exceeded for resources: ['port'].")
            fixed = (spec.get("fixed_ips") or [{}])[0].get("ip_address")
            port = self.state.create_port(net_id, spec.get("device_id", ""), spec.get("device_owner", ""),
                                          fixed, spec.get("name", ""))
            if port is None:
                raise ApiError(409, "IpAddressGenerationFailure",
                               f"No more IP addresses available on network {net_id}.")
            port.description = spec.get("description", "")
            return Response(201, {"port": self.port_view(port)})

    def update_port(self, req: Request) -> Response:
        spec = req.json().get("port") or {}
        with self.state.lock:
            port = self.state.ports.get(req.params["id"])
            if port is None:
                raise ApiError(404, "PortNotFound", f"Port {req.params['id']} could not be found.")
            for key in ("name", "description", "device_id", "device_owner"):
                if key in spec:
                    setattr(port, key, spec[key] or "")
            port.updated, port.revision = time.time(), port.revision + 1
            return Response(200, {"port": self.port_view(port)})

    def delete_port(self, req: Request) -> Response:
        with self.state.lock:
            port = self.state.ports.get(req.params["id"])
            if port is None:
                raise ApiError(404, "PortNotFound", f"Port {req.params['id']} could not be found.")
            server = self.state.servers.get(port.device_id)
            if server is not None and port.id in server.port_ids:
                server.port_ids.remove(port.id)
            self.state.delete_port(port.id)
        return Response(204)

    # -- floating IPs -----------------------------------------------------------------------------

    def list_fips(self, req: Request) -> Response:
        with self.state.lock:
            return self._list(req, "floatingips", [self.fip_view(f) for f in self.state.fips.values()])

    def get_fip(self, req: Request) -> Response:
        return self._get(self.state.fips, "FloatingIP", "floatingip", req.params["id"], self.fip_view)

    def _port_for_fip(self, port_id: str, fip: FloatingIP | None) -> Port:
        port = self.state.ports.get(port_id)
        if port is None:
            raise ApiError(404, "PortNotFound", f"Port {port_id} could not be found.")
        taken = [f for f in self.state.fips_of_port(port_id) if f is not fip]
        if taken:
            raise ApiError(409, "FloatingIPPortAlreadyAssociated",
                           f"Cannot associate floating IP {fip.address if fip else ''} with port {port_id} "
                           f"using fixed IP {port.ip}, as that fixed IP already has a floating IP on external "
                           f"network {taken[0].network_id}.")
        return port

    def create_fip(self, req: Request) -> Response:
        spec = req.json().get("floatingip") or {}
        with self.state.lock:
            net_id = spec.get("floating_network_id")
            net = self.state.networks.get(net_id or "")
            if net is None:
                raise ApiError(404, "NetworkNotFound", f"Network {net_id} could not be found.")
            if not net.external:
                raise ApiError(400, "BadRequest", f"Bad floatingip request: Network {net_id} is not a valid "
                                                  "external network.")
            quota = self.state.config.quotas.floating_ips
            if 0 <= quota <= len(self.state.fips):
                raise ApiError(409, "OverQuota", "Quota exceeded for resources: ['floatingip'].")
            port = self._port_for_fip(spec["port_id"], None) if spec.get("port_id") else None
            subnet = self.state.subnet_of(net.id)
            address = self.state.pools[subnet.id].allocate(spec.get("floating_ip_address"))
            if address is None:
                raise ApiError(409, "IpAddressGenerationFailure",
                               f"No more IP addresses available on network {net_id}.")
            fip = FloatingIP(id=new_id(), address=address, network_id=net.id,
                             description=spec.get("description", ""))
            self.state.fips[fip.id] = fip
            if port is not None:
                self.state.set_fip_port(fip, port)
            return Response(201, {"floatingip": self.fip_view(fip)})

    def update_fip(self, req: Request) -> Response:
        spec = req.json().get("floatingip") or {}
        with self.state.lock:
            fip = self.state.fips.get(req.params["id"])
            if fip is None:
                raise ApiError(404, "FloatingIPNotFound", f"Floating IP {req.params['id']} could not be found")
            if "port_id" in spec:
                port = self._port_for_fip(spec["port_id"], fip) if spec["port_id"] else None
                self.state.set_fip_port(fip, port)
            if "description" in spec:
                fip.description = spec["description"] or ""
            return Response(200, {"floatingip": self.fip_view(fip)})

    def delete_fip(self, req: Request) -> Response:
        with self.state.lock:
            fip = self.state.fips.get(req.params["id"])
            if fip is None:
                raise ApiError(404, "FloatingIPNotFound", f"Floating IP {req.params['id']} could not be found")
            if fip.port_id:
                self.state.set_fip_port(fip, None)
            del self.state.fips[fip.id]
            self.state.pools[self.state.subnet_of(fip.network_id).id].release(fip.address)
        return Response(204)


def _filter_ok(value: Any, wanted: list[str]) -> bool:
    if isinstance(value, bool):  # Neutron takes True, true and 1 alike
        return any(w.lower() in (("true", "1") if value else ("false", "0")) for w in wanted)
    if isinstance(value, (list, dict)):
        return True  # filters on list attributes (fixed_ips, tags) are not simulated
    return ("" if value is None else str(value)) in wanted
