"""One provider's openstacksdk connection, made once and lazily; every call limited, classified."""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from typing import Any, Callable, TypeVar

import openstack
import openstack.config
import openstack.connection
import requests
from openstack import exceptions as sdk_exc
from openstack import utils as sdk_utils

from nodepool.drivers.openstack.errors import classify, is_not_found
from nodepool.drivers.ratelimit import RateLimiter, guarded_call
from nodepool.errors import DriverError, TransientError

log = logging.getLogger("nodepool.drivers.openstack")

T = TypeVar("T")

# The newest compute microversion we read raw server JSON at (2.96 adds
# pinned_availability_zone, 2.90 the hostname, 2.47 the embedded flavor).
COMPUTE_MICROVERSION = "2.96"
# A request that never answers would hold an executor thread forever; used
# when clouds.yaml sets no api_timeout.
DEFAULT_API_TIMEOUT = 60.0
SERVICES = ("compute", "network", "image")


class Cloud:
    """The SDK connection of one provider and the single door every API call goes through.

    The SDK must not retry or sleep inside our calls: the core owns backoff
    (TransientError.retry_after), so connect and status-code retries are
    forced to 0 whatever clouds.yaml says (openstacksdk's own defaults give
    the image service 5 retries on 503).
    """

    def __init__(self, provider: Any, limiter: RateLimiter | None = None,
                 fence: Callable[[], None] = lambda: None,
                 observe: Callable[[str, float, str | None], None] = lambda *_: None,
                 statsd: Callable[[], dict | None] = lambda: None):
        self.provider = provider
        self.fence = fence      # raises when the provider's lease may be lost (no call then)
        self.observe = observe  # (call, seconds, error class or None) of each call: metrics
        self.statsd = statsd    # openstacksdk's own statsd: host, port, prefix (or None)
        self.limiter = limiter or RateLimiter(getattr(provider, "rate", 0.0))
        self._lock = threading.Lock()
        self._conn: openstack.connection.Connection | None = None
        self._microversion: str | None = None
        self._compute_url: str | None = None   # the compute endpoint, found at connect
        self.region_name: str | None = getattr(provider, "region_name", None)
        # clouds.yaml `private: true`: nodes are reached on their private address and
        # need no floating IP (openstacksdk's and Nodepool's meaning). Known once connected.
        self.private = False

    # -- the connection --------------------------------------------------

    def _connect(self) -> openstack.connection.Connection:
        kwargs: dict[str, Any] = {}
        if getattr(self.provider, "region_name", None):
            kwargs["region_name"] = self.provider.region_name
        # openstacksdk times every request itself and sends it to statsd under our
        # prefix (nodepool.task.<provider>.<service>.<method>.<path>.<status>), as
        # Nodepool has it do.
        loader = openstack.config.OpenStackConfig(app_name="nodepool",
                                                  statsd_config=self.statsd())
        region = loader.get_one(cloud=self.provider.cloud, **kwargs)
        config = region.config
        self.private = bool(config.get("private", False))
        for key in list(config):
            if key.endswith(("status_code_retries", "connect_retries")):
                config[key] = 0
        config["status_code_retries"] = 0
        config["connect_retries"] = 0
        for service in SERVICES:  # defaults.json sets image_status_code_retries: 5
            config[f"{service}_status_code_retries"] = 0
        if not config.get("api_timeout"):
            config["api_timeout"] = DEFAULT_API_TIMEOUT
        conn = openstack.connection.Connection(config=region)
        # Proxies are built on first attribute access without a lock (and run
        # version discovery then): build them here, once, under ours.
        for service in SERVICES:
            getattr(conn, service)
        self._microversion = sdk_utils.maximum_supported_microversion(
            conn.compute, COMPUTE_MICROVERSION)
        self._compute_url = conn.compute.get_endpoint()
        _read_environment_once(conn, [self._compute_url, *[
            getattr(conn, service).get_endpoint() for service in SERVICES]])
        self.region_name = self.region_name or conn.config.get_region_name("compute")
        return conn

    def connection(self) -> openstack.connection.Connection:
        conn = self._conn
        if conn is not None:
            return conn
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
                log.info("provider=%s Connected to cloud %s (compute microversion %s)",
                         self.provider.name, self.provider.cloud, self._microversion)
            return self._conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing is best effort: the provider is going away
                log.debug("provider=%s closing the connection failed", self.provider.name,
                          exc_info=True)

    # -- calls -----------------------------------------------------------

    def call(self, what: str, fn: Callable[[openstack.connection.Connection], T], *,
             default: type[DriverError] = TransientError, not_found: Any = ...) -> T:
        """Run one API call under the rate limit; errors come out classified.

        `not_found`, when given, is returned for a 404 instead of raising.
        """
        return guarded_call(self.limiter, self.fence, self.observe, what,
                            lambda: fn(self.connection()), classify, is_not_found,
                            f"provider {self.provider.name}", default, not_found)

    def compute(self, conn: openstack.connection.Connection, method: str, path: str, *,
                params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
                ) -> Any:
        """One compute request at our microversion; its JSON body (None when empty).

        Raw JSON, no SDK resource objects: building a `Server` resource costs the
        SDK about 2 ms each (a listing of a thousand servers would take seconds of
        CPU per tick), and a create or delete through one costs twice a plain
        request. The endpoint found at connect is given as the override, so
        keystoneauth does not search and copy the service catalog on every call.
        Errors are the SDK's own exception classes (`raise_from_response`).
        """
        kwargs: dict[str, Any] = {"microversion": self._microversion}
        if self._compute_url:
            kwargs["endpoint_override"] = self._compute_url
        if params:
            kwargs["params"] = params
        if body is not None:
            kwargs["json"] = body
        response = conn.compute.request(path, method, **kwargs)
        sdk_exc.raise_from_response(response)
        return response.json() if response.content else None

    def compute_json(self, conn: openstack.connection.Connection, path: str,
                     params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET a compute path as JSON."""
        return self.compute(conn, "GET", path, params=params) or {}

    def create_server(self, what: str, args: dict[str, Any],
                      default: type[DriverError] = TransientError) -> str:
        """POST /servers from create_server()-style arguments; the new server's id."""
        body = {_CREATE_BODY.get(key, key): value for key, value in args.items()}
        answer = self.call(what, lambda conn: self.compute(conn, "POST", "/servers",
                                                           body={"server": body}),
                           default=default)
        server = (answer or {}).get("server") or {}
        if not server.get("id"):
            raise default(f"provider {self.provider.name}: {what}: Nova answered without a "
                          f"server id")
        return server["id"]

    def delete_server(self, what: str, server_id: str) -> None:
        """DELETE /servers/{id}; a server already gone is success."""
        self.call(what, lambda conn: self.compute(conn, "DELETE", f"/servers/{server_id}"),
                  not_found=None)

    def list_servers(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every server (detail), following Nova's pages; one call per page of 1,000."""
        servers: list[dict[str, Any]] = []
        query = dict(params or {})
        while True:
            page = self.call("list servers",
                             lambda conn: self.compute_json(conn, "/servers/detail", query))
            servers.extend(page.get("servers") or [])
            marker = _next_marker(page.get("servers_links"))
            if marker is None or not page.get("servers"):
                return servers
            query["marker"] = marker

    def get_server(self, server_id: str, default: type[DriverError] = TransientError
                   ) -> dict[str, Any] | None:
        """One server's JSON, or None when it is gone (404)."""
        body = self.call(f"get server {server_id}",
                         lambda conn: self.compute_json(conn, f"/servers/{server_id}"),
                         default=default, not_found=None)
        return None if body is None else body.get("server")


def _read_environment_once(conn: openstack.connection.Connection, urls: list[str]) -> None:
    """What requests takes from the environment, read at connect instead of per request.

    requests (under keystoneauth) otherwise walks the whole environment twice per
    request for HTTP(S)_PROXY and NO_PROXY: a quarter of a listing's CPU here. The
    proxies are kept only when they are the same for every endpoint (and keystone);
    a CA bundle from REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE becomes the session's
    `verify` where it would have replaced `True`, as requests does. What is sent
    where stays what it was (no ~/.netrc Basic auth: OpenStack takes tokens); a
    changed environment takes a reconnect.
    """
    auth_url = (conn.config.config.get("auth") or {}).get("auth_url")
    found = [requests.utils.get_environ_proxies(url) for url in [*urls, auth_url] if url]
    if not found or any(proxies != found[0] for proxies in found):
        return
    session = conn.session        # keystoneauth's Session; .session is its requests.Session
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify in (True, None):
        session.verify = bundle
    session.session.proxies.update(found[0])
    session.session.trust_env = False


# create_server() argument names (openstacksdk's Server attributes) -> Nova's request keys.
_CREATE_BODY = {"flavor_id": "flavorRef", "image_id": "imageRef",
                "block_device_mapping": "block_device_mapping_v2"}


def _next_marker(links: Any) -> str | None:
    for link in links or []:
        if link.get("rel") == "next":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(link.get("href", "")).query)
            markers = query.get("marker")
            if markers:
                return markers[0]
    return None
