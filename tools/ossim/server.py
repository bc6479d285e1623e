"""The HTTP server: one ThreadingHTTPServer on 127.0.0.1 routing to every API, and the Simulator class."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .cinder import CinderApi
from .config import SimConfig
from .control import ControlApi
from .glance import GlanceApi
from .httpkit import (
    ERROR_FORMATTERS,
    ApiError,
    Request,
    Response,
    Router,
    keystone_error,
    service_of,
)
from .keystone import KeystoneApi
from .neutron import NeutronApi
from .nova import MIN_MICROVERSION, NovaApi, parse_microversion
from .nova_servers import ServersApi
from .state import CloudState

log = logging.getLogger("ossim")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 refuses bursts of parallel clients

    def __init__(self, address: tuple[str, int], sim: "Simulator") -> None:
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a benchmark stopping, a timeout) is not worth a traceback.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses connections
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        response = self.server.sim.dispatch(self.command, self.path, dict(self.headers.items()), self._read_body())
        payload = response.encode()
        self.send_response(response.status)
        if payload or response.status not in (204, 304):
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class Simulator:
    """An OpenStack cloud on 127.0.0.1: start(), use .url/.auth_url or a clouds.yaml, stop()."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        # A private copy: run-time changes through the control API must not leak into the caller's config.
        self.config = dataclasses.replace(copy.deepcopy(config or SimConfig()), **overrides)
        if not ipaddress.ip_address(self.config.host).is_loopback:
            raise ValueError(f"host {self.config.host!r}: the simulator serves only loopback addresses")
        self._initial_quotas = copy.deepcopy(self.config.quotas)
        self._initial_timings = copy.deepcopy(self.config.timings)
        self.state: CloudState | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._realnodes: Any = None
        self.router = Router()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Simulator":
        if self.config.real_nodes:
            from .realnodes import RealNodes
            self._realnodes = RealNodes(self.config.real_cidr, self.config.authorized_keys)
            self.config.real_cidr = self._realnodes.start()
        try:
            self.state = CloudState(self.config)
            self.state.realnodes = self._realnodes
            nova = NovaApi(self.state)
            for api in (KeystoneApi(self.state), nova, ServersApi(self.state, nova), GlanceApi(self.state),
                        NeutronApi(self.state), CinderApi(self.state), ControlApi(self.state, self.reset)):
                api.register(self.router)
            self._httpd = _Server((self.config.host, self.config.port), self)
        except BaseException:
            if self._realnodes is not None:
                self._realnodes.stop()
            raise
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ossim-http", daemon=True)
        self._thread.start()
        log.info("OpenStack simulator at %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            # Idle keep-alive connections would otherwise keep answering from their handler threads.
            with self._httpd.connections_lock:
                for conn in list(self._httpd.connections):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self._httpd = None
        if self._realnodes is not None:
            self._realnodes.stop()
            self._realnodes = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all servers, FIPs, ports, faults and counts; tear real nodes down."""
        assert self.state is not None
        with self.state.lock:
            self.config.quotas.update(dataclasses.asdict(self._initial_quotas))
            self.config.timings.update(dataclasses.asdict(self._initial_timings))
        for server in self.state.reset():
            if server.node is not None and self._realnodes is not None:
                self._realnodes.teardown(server.node)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is not None:
            return self._httpd.server_address[1]
        if self.config.port:
            return self.config.port  # a fixed port is known before start()
        raise RuntimeError("the port is chosen by start(); start the simulator first")

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity"

    def cloud_config(self) -> dict[str, Any]:
        """The clouds.yaml entry for this simulator."""
        return {"auth_type": "password",
                "auth": {"auth_url": self.auth_url, "username": self.config.username,
                         "password": self.config.password, "project_name": self.config.project_name,
                         "user_domain_name": self.config.domain_name,
                         "project_domain_name": self.config.domain_name},
                "identity_api_version": 3, "region_name": self.config.region}

    def write_clouds_yaml(self, path: str, cloud_name: str = "local", username: str | None = None,
                          **extra: Any) -> str:
        """Write a clouds.yaml; extra keys (e.g. status_code_retries=2) go into the cloud's entry.
        `username`: one of `extra_users` instead of the main user."""
        import yaml

        entry = {**self.cloud_config(), **extra}
        if username is not None:
            entry["auth"] = {**entry["auth"], "username": username}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            yaml.safe_dump({"clouds": {cloud_name: entry}}, fh, sort_keys=False)
        return path

    def client(self) -> "Any":
        from .client import ControlClient
        return ControlClient(self.url)

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        started = time.monotonic()
        parsed = urllib.parse.urlsplit(raw_path)
        path = parsed.path.rstrip("/") or "/"
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        lower = {k.lower(): v for k, v in headers.items()}
        route, params, path_exists = self.router.match(method, path)
        service = route.service if route else service_of(path)
        req = Request(method, path, query, lower, body, self.url, params, token=lower.get("x-auth-token"))
        try:
            response = self._answer(req, route, path_exists)
        except ApiError as exc:
            # Every service's auth middleware (keystonemiddleware) answers 401 in Keystone's format.
            response = keystone_error(exc) if exc.status == 401 else ERROR_FORMATTERS[service](exc)
        except Exception as exc:  # a simulator bug must still answer, and say so
            log.exception("simulator error on %s %s", method, raw_path)
            response = ERROR_FORMATTERS[service](ApiError(500, "computeFault", f"simulator error: {exc!r}"))
        request_id = "req-" + str(uuid.uuid4())
        response.headers.setdefault("x-openstack-request-id", request_id)
        if service == "compute":
            response.headers["x-compute-request-id"] = request_id
            if route is not None and not route.public:
                version = "%d.%d" % req.microversion
                response.headers["OpenStack-API-Version"] = f"compute {version}"
                response.headers["X-OpenStack-Nova-API-Version"] = version
                response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        if service != "control" and self.state is not None:
            key = f"{method} {route.template}" if route else f"{method} {path} (unknown)"
            self.state.record_call(key, {
                "method": method, "path": path, "query": parsed.query, "status": response.status,
                "microversion": lower.get("openstack-api-version") or lower.get("x-openstack-nova-api-version"),
                "route": route.template if route else None, "time": time.time(),
                "user": self.state.token_users.get(req.token or ""),
                "ms": round((time.monotonic() - started) * 1000, 3)})
        return response

    def _answer(self, req: Request, route: Any, path_exists: bool) -> Response:
        assert self.state is not None
        if route is None:
            if path_exists:
                raise ApiError(405, "badMethod", f"The method {req.method} is not allowed for this resource.")
            raise ApiError(404, "itemNotFound", f"The resource could not be found: {req.path}")
        if route.service == "control":
            self.state.tick()
            return route.handler(req)
        if not route.public and req.token not in self.state.tokens:
            raise ApiError(401, "Unauthorized", "The request you have made requires authentication.",
                           {"WWW-Authenticate": f"Keystone uri=\"{self.auth_url}\""})
        self._injected(req)
        if route.service == "compute" and not route.public:
            req.microversion = self._microversion(req)
        self.state.tick()
        return route.handler(req)

    def _injected(self, req: Request) -> None:
        assert self.state is not None
        faults = self.state.faults
        latency = faults.take(("latency",), req.method, req.path)
        if latency is not None:
            time.sleep(latency.seconds)  # the latency is the fault being simulated
        limited = faults.take(("rate_limit",), req.method, req.path)
        if limited is not None:
            raise ApiError(429, "overLimit", limited.message or "This request was rate-limited.",
                           {"Retry-After": _seconds(limited.retry_after)})
        failed = faults.take(("http_error",), req.method, req.path)
        if failed is not None:
            kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
                    503: "serviceUnavailable"}.get(failed.status, "computeFault")
            # A 503 usually comes from a proxy that says when to come back; clients honour it.
            extra = {"Retry-After": _seconds(failed.retry_after)} if failed.status == 503 else {}
            raise ApiError(failed.status, kind, failed.message or f"Injected HTTP {failed.status}", extra)

    def _microversion(self, req: Request) -> tuple[int, int]:
        header = req.header("OpenStack-API-Version") or ""
        text = header.split()[-1] if header.lower().startswith("compute") else ""
        text = text or req.header("X-OpenStack-Nova-API-Version") or MIN_MICROVERSION
        maximum = parse_microversion(self.config.max_microversion)
        if text.lower() == "latest":
            return maximum
        try:
            wanted = parse_microversion(text)
        except ValueError as exc:
            raise ApiError(400, "badRequest", f"Invalid format for API version {text}") from exc
        if not parse_microversion(MIN_MICROVERSION) <= wanted <= maximum:
            raise ApiError(406, "notAcceptable", f"Version {text} is not supported by the API. Minimum is "
                                                 f"{MIN_MICROVERSION} and maximum is {self.config.max_microversion}.")
        return wanted


def _seconds(value: float) -> str:
    # keystoneauth parses Retry-After with int(); a fractional value makes it fall back to its own delay.
    return str(int(value)) if value == int(value) else str(value)
