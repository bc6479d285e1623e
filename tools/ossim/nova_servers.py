"""Nova v2.1 servers: create/list/get/update/delete, metadata, console output, fault injection hooks."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from .httpkit import JSON, ApiError, Request, Response, Router, paginate, with_query
from .models import Server, new_id
from .nova import NovaApi
from .server_views import console_log, server_view
from .state import CloudState

NETWORK_FAILED = "Build of instance {id} aborted: Failed to allocate the network(s), not rescheduling."


class ServersApi:
    def __init__(self, state: CloudState, nova: NovaApi) -> None:
        self.state = state
        self.nova = nova

    def register(self, router: Router) -> None:
        add, base = router.add, "/compute/v2.1/servers"
        add("GET", base, self.list_servers, "compute")
        add("GET", base + "/detail", self.list_servers_detail, "compute")
        add("POST", base, self.create_server, "compute")
        add("GET", base + "/{id}", self.get_server, "compute")
        add("PUT", base + "/{id}", self.update_server, "compute")
        add("DELETE", base + "/{id}", self.delete_server, "compute")
        add("POST", base + "/{id}/action", self.action, "compute")
        add("GET", base + "/{id}/metadata", self.get_metadata, "compute")
        add("PUT", base + "/{id}/metadata", self.replace_metadata, "compute")
        add("POST", base + "/{id}/metadata", self.merge_metadata, "compute")
        add("GET", base + "/{id}/metadata/{key}", self.get_metadata_item, "compute")
        add("PUT", base + "/{id}/metadata/{key}", self.set_metadata_item, "compute")
        add("DELETE", base + "/{id}/metadata/{key}", self.delete_metadata_item, "compute")

    # -- lookups -------------------------------------------------------------------------------

    def find(self, server_id: str) -> Server:
        server = self.state.servers.get(server_id)
        if server is None:
            raise ApiError(404, "itemNotFound", f"Instance {server_id} could not be found.")
        return server

    # -- list ------------------------------------------------------------------------------------

    def _filtered(self, req: Request) -> list[Server]:
        servers = sorted(self.state.servers.values(), key=lambda s: s.created, reverse=True)
        # Nova matches name and ip as regular expressions; it ignores filters a user may not use.
        name, ip = req.arg("name"), req.arg("ip")
        exact = {"status": lambda s: s.status, "flavor": lambda s: s.flavor_id, "image": lambda s: s.image_id,
                 "availability_zone": lambda s: s.az, "key_name": lambda s: s.key_name or "",
                 "uuid": lambda s: s.id, "vm_state": lambda s: s.vm_state,
                 "task_state": lambda s: s.task_state or ""}
        result = []
        for server in servers:
            if name and not _regex_search(name, server.name):
                continue
            if ip and not any(_regex_search(ip, p.ip) for p in self.state.server_ports(server)):
                continue
            if not all(_filter_ok(key, req.arg(key), get(server)) for key, get in exact.items()):
                continue
            tags = req.arg("tags")
            if tags and not set(tags.split(",")) <= set(server.tags):
                continue
            result.append(server)
        return result

    def _list(self, req: Request, detail: bool) -> Response:
        with self.state.lock:
            servers = self._filtered(req)
            page, next_marker = paginate(servers, req, lambda s: s.id, 1000, 1000)
            views = [server_view(self.state, s, req) if detail else
                     {"id": s.id, "name": s.name, "links": _links(req, s.id)} for s in page]
        body: JSON = {"servers": views}
        if next_marker:
            href = with_query(f"{req.base_url}{req.path}", req.query, marker=next_marker)
            body["servers_links"] = [{"rel": "next", "href": href}]
        return Response(200, body)

    def list_servers(self, req: Request) -> Response:
        return self._list(req, detail=False)

    def list_servers_detail(self, req: Request) -> Response:
        return self._list(req, detail=True)

    def get_server(self, req: Request) -> Response:
        with self.state.lock:
            server = self.find(req.params["id"])
            return Response(200, {"server": server_view(self.state, server, req)})

    def update_server(self, req: Request) -> Response:
        spec = req.json().get("server") or {}
        with self.state.lock:
            server = self.find(req.params["id"])
            if "name" in spec:
                server.name = str(spec["name"])
            if "description" in spec and req.microversion >= (2, 19):
                server.description = spec["description"]
            server.updated = time.time()
            return Response(200, {"server": server_view(self.state, server, req)})

    # -- create ----------------------------------------------------------------------------------

    def create_server(self, req: Request) -> Response:
        spec = req.json().get("server")
        if not isinstance(spec, dict):
            raise ApiError(400, "badRequest", "Invalid input for field/attribute server. "
                                              "'server' is a required property")
        name = spec.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise ApiError(400, "badRequest", "Invalid input for field/attribute name. "
                                              f"Value: {name}. 'name' must be a string of 1-255 characters")
        flavor_ref = str(spec.get("flavorRef", "")).rstrip("/").rsplit("/", 1)[-1]
        bdms = spec.get("block_device_mapping_v2") or []
        metadata = spec.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 255 and len(v) <= 255
                for k, v in metadata.items()):
            raise ApiError(400, "badRequest", "Invalid input for field/attribute metadata. "
                                              "Keys and values must be strings of at most 255 characters")
        if len(metadata) > 128:
            raise ApiError(403, "forbidden", "Quota exceeded for metadata_items: Requested "
                                             f"{len(metadata)}, but already used 0 of 128 metadata_items")
        networks = spec.get("networks")
        if networks is None and req.microversion >= (2, 37):
            raise ApiError(400, "badRequest", f"Invalid input for field/attribute server. Value: {spec}. "
                                              "'networks' is a required property")
        with self.state.lock:
            flavor = self.state.flavors.get(flavor_ref)
            if flavor is None:
                raise ApiError(400, "badRequest", f"Flavor {flavor_ref} could not be found.")
            image_id, volumes = self._boot_source(spec, bdms)
            key_name = spec.get("key_name")
            if key_name is not None and key_name not in self.state.keypairs:
                raise ApiError(400, "badRequest", "Invalid key_name provided.")
            az = spec.get("availability_zone") or self.state.config.availability_zones[0]
            if az not in self.state.config.availability_zones:
                raise ApiError(400, "badRequest", "The requested availability zone is not available")
            requested = self._requested_networks(networks)
            api_fault = self.state.faults.take(("create_500", "create_quota"))
            if api_fault is not None and api_fault.kind == "create_500":
                raise ApiError(500, "computeFault", api_fault.message or _UNEXPECTED)
            self._check_quota(flavor.vcpus, flavor.ram, forced=api_fault is not None)
            # Build faults are taken only by a create the API accepted, so a 403 never uses one up.
            fault = self.state.faults.take(("create_error", "create_timeout"))
            server = Server(id=new_id(), name=name, flavor_id=flavor.id, image_id=image_id, az=az,
                            pinned_az=spec.get("availability_zone"), metadata=dict(metadata),
                            key_name=key_name, block_devices=list(bdms),
                            volumes=volumes, user_data=spec.get("user_data"),
                            config_drive=bool(spec.get("config_drive")), description=spec.get("description"),
                            tags=list(spec.get("tags") or []), admin_pass=secrets.token_urlsafe(9),
                            security_groups=[g.get("name", "default") for g in spec.get("security_groups") or []]
                            or ["default"])
            timings = self.state.config.timings
            server.ready_at = time.monotonic() + timings.boot_delay
            if fault is not None and fault.kind == "create_error":
                server.plan, server.plan_message = "error", fault.message
            elif fault is not None and fault.kind == "create_timeout":
                server.plan = "stuck"
            self._attach_ports(server, requested)
            if key_name is not None:
                server.public_keys.append(self.state.keypairs[key_name].public_key)
            self.state.servers[server.id] = server
            if server.plan == "active" and server.port_ids and self.state.realnodes is not None:
                self.state.realnodes.boot(server, self.state.server_ports(server)[0].ip)
        body = {"id": server.id, "links": _links(req, server.id), "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": g} for g in server.security_groups], "adminPass": server.admin_pass}
        return Response(202, {"server": body},
                        {"Location": f"{req.base_url}/compute/v2.1/servers/{server.id}"})

    def _boot_source(self, spec: JSON, bdms: list[JSON]) -> tuple[str, list[JSON]]:
        """Return (image id as Nova shows it, attached volumes) and validate boot-from-volume."""
        volumes: list[JSON] = []
        image_ref = spec.get("imageRef") or ""
        boot_from_volume = False
        for bdm in bdms:
            if not isinstance(bdm, dict):
                raise ApiError(400, "badRequest", "Invalid input for field/attribute block_device_mapping_v2.")
            source, dest = bdm.get("source_type"), bdm.get("destination_type", "volume")
            if source == "image":
                self._active_image(str(bdm.get("uuid", "")))
                if dest == "volume" and not bdm.get("volume_size"):
                    raise ApiError(400, "badRequest", "Block Device Mapping is Invalid: Images with "
                                                      "destination_type 'volume' need to have a non-zero size "
                                                      "specified")
            if dest == "volume":
                volumes.append({"id": bdm.get("uuid") if source == "volume" else new_id(),
                                "delete_on_termination": bool(bdm.get("delete_on_termination", False)),
                                "size": int(bdm.get("volume_size") or 0)})
                if str(bdm.get("boot_index", "")) == "0":
                    boot_from_volume = True
        if image_ref:
            image_ref = image_ref.rstrip("/").rsplit("/", 1)[-1]
            self._active_image(image_ref)
            return ("" if boot_from_volume else image_ref), volumes
        if not boot_from_volume:
            raise ApiError(400, "badRequest", "Block Device Mapping is Invalid: Boot sequence for the instance "
                                              "and image/block device mapping combination is not valid.")
        return "", volumes

    def _active_image(self, image_id: str) -> None:
        image = self.state.images.get(image_id)
        if image is None:
            raise ApiError(400, "badRequest", f"Image {image_id} could not be found.")
        if image.status != "active":
            raise ApiError(400, "badRequest", f"Image {image_id} is not active.")

    def _requested_networks(self, networks: Any) -> list[tuple[str, str | None, str | None]]:
        """Resolve the networks argument into (network id, port id, fixed ip) triples."""
        if networks is None or networks == "auto":
            return [(self.state.private.id, None, None)]
        if networks == "none":
            return []
        if not isinstance(networks, list):
            raise ApiError(400, "badRequest", "Invalid input for field/attribute networks.")
        result: list[tuple[str, str | None, str | None]] = []
        for item in networks:
            port_id = item.get("port")
            if port_id:
                port = self.state.ports.get(port_id)
                if port is None:
                    raise ApiError(400, "badRequest", f"Port {port_id} could not be found.")
                if port.device_id:
                    raise ApiError(409, "conflictingRequest", f"Port {port_id} is still in use.")
                result.append((port.network_id, port_id, None))
                continue
            net_id = item.get("uuid")
            if net_id not in self.state.networks:
                raise ApiError(400, "badRequest", f"Network {net_id} could not be found.")
            result.append((net_id, None, item.get("fixed_ip")))
        return result

    def _attach_ports(self, server: Server, requested: list[tuple[str, str | None, str | None]]) -> None:
        for net_id, port_id, fixed_ip in requested:
            if port_id:
                port = self.state.ports[port_id]
            else:
                made = self.state.create_port(net_id, fixed_ip=fixed_ip)
                if made is None:
                    # Out of addresses: like Nova, the API accepts and the build fails.
                    server.plan, server.plan_message = "error", NETWORK_FAILED.format(id=server.id)
                    continue
                port = made
            port.device_id, port.device_owner = server.id, f"compute:{server.az}"
            server.port_ids.append(port.id)

    def _check_quota(self, cores: int, ram: int, forced: bool) -> None:
        quotas, used = self.state.config.quotas, self.state.usage()
        requested = {"instances": 1, "cores": cores, "ram": ram}
        limits = {"instances": quotas.instances, "cores": quotas.cores, "ram": quotas.ram}
        overs = [k for k in ("instances", "cores", "ram")
                 if limits[k] >= 0 and used[k] + requested[k] > limits[k]]
        if forced and not overs:
            overs, used = ["instances"], {**used, "instances": limits["instances"]}
        if overs:
            first = overs[0]
            what = ", ".join(overs)
            raise ApiError(403, "forbidden", f"Quota exceeded for {what}: Requested {requested[first]}, "
                                             f"but already used {used[first]} of {limits[first]} {what}")

    # -- delete ----------------------------------------------------------------------------------

    def delete_server(self, req: Request) -> Response:
        with self.state.lock:
            server = self.find(req.params["id"])
            if server.deleting_at is not None:
                return Response(204)  # Nova accepts a repeated delete
            fault = self.state.faults.take(("delete_500", "delete_hang", "delete_error"))
            if fault is not None and fault.kind == "delete_500":
                raise ApiError(500, "computeFault", fault.message or _UNEXPECTED)
            timings = self.state.config.timings
            server.deleting_at = time.monotonic()
            server.delete_delay, server.deleted_window = timings.delete_delay, timings.deleted_window
            server.delete_plan = {"delete_hang": "hang", "delete_error": "error"}.get(
                fault.kind if fault else "", "gone")
            server.task_state, server.updated = "deleting", time.time()
            if server.node is not None and server.delete_plan == "gone" and self.state.realnodes is not None:
                self.state.realnodes.teardown(server.node)
        return Response(204)

    # -- actions and metadata --------------------------------------------------------------------

    def action(self, req: Request) -> Response:
        body = req.json()
        with self.state.lock:
            server = self.find(req.params["id"])
            if "os-getConsoleOutput" in body:
                length = (body["os-getConsoleOutput"] or {}).get("length")
                lines = console_log(server)
                if length is not None and int(length) >= 0:
                    lines = lines[-int(length):] if int(length) else []
                return Response(200, {"output": "".join(line + "\n" for line in lines)})
        name = next(iter(body), "")
        raise ApiError(400, "badRequest", f"There is no such action: {name}")

    def get_metadata(self, req: Request) -> Response:
        with self.state.lock:
            return Response(200, {"metadata": dict(self.find(req.params["id"]).metadata)})

    def _metadata_arg(self, req: Request) -> dict[str, str]:
        metadata = req.json().get("metadata")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ApiError(400, "badRequest", "Invalid input for field/attribute metadata.")
        return metadata

    def replace_metadata(self, req: Request) -> Response:
        metadata = self._metadata_arg(req)
        with self.state.lock:
            server = self.find(req.params["id"])
            server.metadata = dict(metadata)
            return Response(200, {"metadata": dict(server.metadata)})

    def merge_metadata(self, req: Request) -> Response:
        metadata = self._metadata_arg(req)
        with self.state.lock:
            server = self.find(req.params["id"])
            server.metadata.update(metadata)
            return Response(200, {"metadata": dict(server.metadata)})

    def get_metadata_item(self, req: Request) -> Response:
        with self.state.lock:
            server, key = self.find(req.params["id"]), req.params["key"]
            if key not in server.metadata:
                raise ApiError(404, "itemNotFound", "Metadata item was not found")
            return Response(200, {"meta": {key: server.metadata[key]}})

    def set_metadata_item(self, req: Request) -> Response:
        meta = req.json().get("meta")
        key = req.params["key"]
        if not isinstance(meta, dict) or list(meta) != [key]:
            raise ApiError(400, "badRequest", "Request body and URI mismatch")
        with self.state.lock:
            self.find(req.params["id"]).metadata[key] = str(meta[key])
        return Response(200, {"meta": meta})

    def delete_metadata_item(self, req: Request) -> Response:
        with self.state.lock:
            server, key = self.find(req.params["id"]), req.params["key"]
            if server.metadata.pop(key, None) is None:
                raise ApiError(404, "itemNotFound", "Metadata item was not found")
        return Response(204)


_UNEXPECTED = ("Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the "
               "Nova API log if possible.\n<class 'nova.exception_Remote.SimulatedFault_Remote'>")


def _links(req: Request, server_id: str) -> list[JSON]:
    return [{"rel": "self", "href": f"{req.base_url}/compute/v2.1/servers/{server_id}"},
            {"rel": "bookmark", "href": f"{req.base_url}/compute/servers/{server_id}"}]


def _filter_ok(key: str, wanted: str | None, have: str) -> bool:
    if wanted is None:
        return True
    # Nova takes status in any case; the rest must match exactly.
    return wanted.upper() == have if key == "status" else wanted == have


def _regex_search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text
