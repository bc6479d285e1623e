"""The simulator's own JSON control API under /_sim: faults, timings, quotas, state, call counts, reset."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from .faults import KINDS, build_fault
from .httpkit import JSON, ApiError, Request, Response, Router
from .models import Server, iso
from .state import CloudState

PREFIX = "/_sim"


class ControlApi:
    def __init__(self, state: CloudState, reset: Callable[[], None]) -> None:
        self.state = state
        self._reset = reset

    def register(self, router: Router) -> None:
        routes = (
            ("GET", "", self.index), ("GET", "/state", self.get_state),
            ("GET", "/servers", self.list_servers), ("GET", "/servers/{id}", self.get_server),
            ("POST", "/servers/{id}/status", self.force_status),
            ("POST", "/servers/{id}/finish-delete", self.finish_delete),
            ("GET", "/calls", self.get_calls), ("DELETE", "/calls", self.clear_calls),
            ("GET", "/requests", self.get_requests),
            ("GET", "/faults", self.list_faults), ("POST", "/faults", self.add_fault),
            ("DELETE", "/faults", self.clear_faults),
            ("GET", "/config", self.get_config), ("PATCH", "/config", self.patch_config),
            ("POST", "/ports", self.leak_port), ("DELETE", "/tokens", self.revoke_tokens),
            ("POST", "/reset", self.reset),
        )
        for method, path, handler in routes:
            router.add(method, PREFIX + path, handler, "control", public=True)

    def index(self, req: Request) -> Response:
        return Response(200, {"url": req.base_url, "auth_url": f"{req.base_url}/identity",
                              "region": self.state.config.region, "fault_kinds": KINDS,
                              "real_nodes": self.state.realnodes is not None})

    # -- inspection ----------------------------------------------------------------------------

    def server_summary(self, server: Server) -> JSON:
        ports = self.state.server_ports(server)
        node = server.node
        return {
            "id": server.id, "name": server.name, "status": server.status, "task_state": server.task_state,
            "metadata": dict(server.metadata), "flavor": server.flavor_id, "image": server.image_id,
            "key_name": server.key_name, "availability_zone": server.az, "fault": server.fault,
            "fixed_ips": [p.ip for p in ports],
            "floating_ips": [f.address for p in ports for f in self.state.fips_of_port(p.id)],
            "port_ids": [p.id for p in ports], "block_devices": server.block_devices, "volumes": server.volumes,
            "created": iso(server.created), "deleting": server.deleting_at is not None,
            "node": None if node is None else {"namespace": node.namespace, "ip": node.ip, "ready": node.ready,
                                               "error": node.error, "gone": node.gone},
        }

    def get_state(self, req: Request) -> Response:
        with self.state.lock:
            s = self.state
            body = {
                "servers": [self.server_summary(x) for x in s.servers.values()],
                "floating_ips": [{"id": f.id, "address": f.address, "port_id": f.port_id, "status": f.status}
                                 for f in s.fips.values()],
                "ports": [{"id": p.id, "network_id": p.network_id, "ip": p.ip, "status": p.status,
                           "device_id": p.device_id, "device_owner": p.device_owner, "created": iso(p.created)}
                          for p in s.ports.values()],
                "images": [{"id": i.id, "name": i.name, "status": i.status, "size": i.size,
                            "properties": dict(i.properties)} for i in s.images.values()],
                "keypairs": sorted(s.keypairs), "usage": s.usage(),
                "quotas": dataclasses.asdict(s.config.quotas), "timings": dataclasses.asdict(s.config.timings),
                "faults": s.faults.list(), "calls": dict(s.calls),
                "namespaces": s.realnodes.namespaces() if s.realnodes is not None else [],
            }
        return Response(200, body)

    def _server(self, server_id: str) -> Server:
        server = self.state.servers.get(server_id)
        if server is None:
            raise ApiError(404, "not_found", f"no server {server_id} (never created, or already gone)")
        return server

    def list_servers(self, req: Request) -> Response:
        with self.state.lock:
            return Response(200, {"servers": [self.server_summary(s) for s in self.state.servers.values()]})

    def get_server(self, req: Request) -> Response:
        with self.state.lock:
            return Response(200, {"server": self.server_summary(self._server(req.params["id"]))})

    def force_status(self, req: Request) -> Response:
        """Make a server fail (or stop, or recover) later in its life, as hypervisors do."""
        body = req.json()
        status = str(body.get("status", "")).upper()
        with self.state.lock:
            server = self._server(req.params["id"])
            if status == "ERROR":
                self.state.fail_server(server, body.get("message") or "Simulated hypervisor failure")
            elif status in ("ACTIVE", "SHUTOFF"):
                server.status, server.task_state, server.fault = status, None, None
                server.power_state, server.updated = (1 if status == "ACTIVE" else 4), time.time()
            else:
                raise ApiError(400, "bad_request", f"status must be ERROR, ACTIVE or SHUTOFF, got {status!r}")
            return Response(200, {"server": self.server_summary(server)})

    def finish_delete(self, req: Request) -> Response:
        """Let a server whose delete hangs go away now (one already gone: nothing to do)."""
        with self.state.lock:
            if req.params["id"] not in self.state.servers:
                return Response(202, {"server": req.params["id"], "gone": True})
            server = self._server(req.params["id"])
            server.deleting_at = server.deleting_at or time.monotonic()
            server.delete_plan, server.delete_delay, server.deleted_window = "gone", 0.0, 0.0
            if server.node is not None and self.state.realnodes is not None:
                self.state.realnodes.teardown(server.node)
        return Response(202, {"server": req.params["id"]})

    def get_calls(self, req: Request) -> Response:
        with self.state.lock:
            return Response(200, {"calls": dict(self.state.calls)})

    def clear_calls(self, req: Request) -> Response:
        with self.state.lock:
            self.state.calls.clear()
            self.state.requests.clear()
        return Response(204)

    def get_requests(self, req: Request) -> Response:
        limit = int(req.arg("limit") or 100)
        with self.state.lock:
            entries = list(self.state.requests)[-limit:]
        return Response(200, {"requests": entries})

    # -- faults and settings --------------------------------------------------------------------

    def list_faults(self, req: Request) -> Response:
        return Response(200, {"faults": self.state.faults.list()})

    def add_fault(self, req: Request) -> Response:
        try:
            fault = build_fault(req.json())
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "bad_request", str(exc)) from exc
        self.state.faults.add(fault)
        return Response(201, {"fault": fault.as_dict()})

    def clear_faults(self, req: Request) -> Response:
        self.state.faults.clear()
        return Response(204)

    def _config(self) -> JSON:
        config = self.state.config
        return {"timings": dataclasses.asdict(config.timings), "quotas": dataclasses.asdict(config.quotas),
                "region": config.region, "max_microversion": config.max_microversion,
                "flavors": [dataclasses.asdict(f) for f in config.flavors],
                "availability_zones": list(config.availability_zones)}

    def get_config(self, req: Request) -> Response:
        with self.state.lock:
            return Response(200, self._config())

    def patch_config(self, req: Request) -> Response:
        body = req.json()
        unknown = set(body) - {"timings", "quotas"}
        if unknown:
            raise ApiError(400, "bad_request", f"can change only timings and quotas, not {sorted(unknown)}")
        with self.state.lock:
            try:
                self.state.config.timings.update(body.get("timings") or {})
                self.state.config.quotas.update(body.get("quotas") or {})
            except (ValueError, TypeError) as exc:
                raise ApiError(400, "bad_request", str(exc)) from exc
            return Response(200, self._config())

    def leak_port(self, req: Request) -> Response:
        """Make a port nobody owns, optionally created `age` seconds ago, as leak-cleanup tests need."""
        body: dict[str, Any] = req.json()
        with self.state.lock:
            net_name = body.get("network", "private")
            nets = [n for n in self.state.networks.values() if n.name == net_name or n.id == net_name]
            if not nets:
                raise ApiError(400, "bad_request", f"no network {net_name!r}")
            port = self.state.create_port(nets[0].id, body.get("device_id", ""),
                                          body.get("device_owner", "compute:nova"), name=body.get("name", ""))
            if port is None:
                raise ApiError(409, "conflict", f"network {net_name} has no free address")
            port.status = body.get("status", "DOWN")
            port.created = port.updated = time.time() - float(body.get("age", 0))
            return Response(201, {"port": {"id": port.id, "ip": port.ip, "status": port.status,
                                           "created": iso(port.created)}})

    def revoke_tokens(self, req: Request) -> Response:
        with self.state.lock:
            self.state.tokens.clear()
        return Response(204)

    def reset(self, req: Request) -> Response:
        self._reset()
        return Response(204)
