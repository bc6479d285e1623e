"""The in-memory cloud under FakeAdapter: servers, floating IPs, quota, faults and call counters."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time
from typing import Callable, Iterable, Mapping

from nodepool.drivers.adapter import Resources

# Metadata keys of our tags (Nodepool's own names, so its tools recognise them).
TAG_PROVIDER = "nodepool_provider_name"
TAG_POOL = "nodepool_pool_name"
TAG_NODE = "nodepool_node_id"

FLAVORS: Mapping[str, Resources] = {
    "small": Resources(instances=1, cores=1, ram=1024),
    "medium": Resources(instances=1, cores=2, ram=4096),
    "large": Resources(instances=1, cores=4, ram=8192),
}

CREATE_FAULTS = ("quota", "capacity", "transient", "error", "hang")
DELETE_FAULTS = ("transient", "hang")


class FakeClock:
    """A monotonic clock that moves only when a test advances it (thread-safe)."""

    def __init__(self, start: float = 1000.0):
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class FakeCloudError(Exception):
    """What the fake SDK raises: an error code that the adapter classifies from a table."""

    def __init__(self, code: str, message: str = "", retry_after: float | None = None):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retry_after = retry_after


@dataclasses.dataclass
class FakeServer:
    id: str
    name: str
    flavor: str
    metadata: dict[str, str]
    created_at: float
    ready_at: float
    status: str = "BUILD"   # BUILD, ACTIVE, ERROR, DELETING
    fate: str = "active"    # what BUILD turns into at ready_at: active, error, or hang (never)
    private_ipv4: str | None = None
    public_ipv4: str | None = None
    az: str = "nova"
    fault: str | None = None


@dataclasses.dataclass
class FakeFloatingIP:
    id: str
    address: str
    server_id: str | None
    metadata: dict[str, str]
    created_at: float


class FakeCloud:
    """An in-memory compute API; every FakeAdapter of a test shares one (a restart keeps it)."""

    def __init__(self, *, boot_delay: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 quota: Resources | None = None, flavors: Mapping[str, Resources] = FLAVORS,
                 region: str = "fake-region", id_prefix: str = ""):
        self.boot_delay = boot_delay
        # Before every server and floating IP id: clouds in several processes (the fleet
        # benchmark's launchers) then never give two servers the same id.
        self.id_prefix = id_prefix
        self.clock = clock
        self.quota = quota  # None = unlimited
        self.flavors = dict(flavors)
        self.region = region
        self.servers: dict[str, FakeServer] = {}
        self.floating_ips: dict[str, FakeFloatingIP] = {}
        # node-id tag -> the ids of its floating IPs, in order (the index a cloud has)
        self._fips_by_node: dict[str, dict[str, None]] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self._create_faults: collections.deque[tuple[str, float | None]] = collections.deque()
        self._delete_faults: collections.deque[tuple[str, float | None]] = collections.deque()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- fault injection and counters ---------------------------------------

    def fail_next_create(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        """The next `count` creates fail with `kind` (see CREATE_FAULTS)."""
        if kind not in CREATE_FAULTS:
            raise ValueError(f"unknown create fault {kind!r}; known: {', '.join(CREATE_FAULTS)}")
        with self._lock:
            self._create_faults.extend([(kind, retry_after)] * count)

    def fail_next_delete(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        """The next `count` server deletes fail with `kind` (see DELETE_FAULTS)."""
        if kind not in DELETE_FAULTS:
            raise ValueError(f"unknown delete fault {kind!r}; known: {', '.join(DELETE_FAULTS)}")
        with self._lock:
            self._delete_faults.extend([(kind, retry_after)] * count)

    @property
    def creates(self) -> int:
        return self.calls["create_server"]

    @property
    def deletes(self) -> int:
        return self.calls["delete_server"]

    @property
    def list_calls(self) -> int:
        return self.calls["list_servers"]

    # -- the SDK: each method is one API round trip --------------------------

    def list_servers(self) -> list[FakeServer]:
        with self._lock:
            self.calls["list_servers"] += 1
            return [self._view(s) for s in self.servers.values()]

    def find_servers(self, metadata: Mapping[str, str]) -> list[FakeServer]:
        """Servers whose metadata contains every given item (one filtered list call)."""
        with self._lock:
            self.calls["find_servers"] += 1
            return [self._view(s) for s in self.servers.values()
                    if all(s.metadata.get(k) == v for k, v in metadata.items())]

    def get_server(self, server_id: str) -> FakeServer | None:
        with self._lock:
            self.calls["get_server"] += 1
            server = self.servers.get(server_id)
            return self._view(server) if server else None

    def create_server(self, name: str, flavor: str, metadata: Mapping[str, str],
                      az: str | None = None) -> FakeServer:
        with self._lock:
            self.calls["create_server"] += 1
            kind, retry_after = (self._create_faults.popleft() if self._create_faults
                                 else ("", None))
            if kind == "quota":
                raise FakeCloudError("OverQuota", "Quota exceeded for instances")
            if kind == "capacity":
                raise FakeCloudError("NoValidHost", "No valid host was found")
            if kind == "transient":
                raise FakeCloudError("RateLimited", "slow down", retry_after=retry_after)
            if flavor not in self.flavors:
                raise FakeCloudError("FlavorNotFound", f"flavor {flavor!r} does not exist")
            cost = self.flavors[flavor]
            if self.quota is not None and not (self._usage(None) + cost).fits_in(self.quota):
                raise FakeCloudError("OverQuota", "Quota exceeded for cores, ram or instances")
            return self._view(self._add(name, flavor, metadata, az, fate=kind or "active"))

    def delete_server(self, server_id: str) -> None:
        with self._lock:
            self.calls["delete_server"] += 1
            server = self.servers.get(server_id)
            if server is None:
                raise FakeCloudError("NotFound", f"server {server_id}")
            kind, retry_after = (self._delete_faults.popleft() if self._delete_faults
                                 else ("", None))
            if kind == "transient":
                raise FakeCloudError("ServiceUnavailable", "try again", retry_after=retry_after)
            if kind == "hang":
                server.status = "DELETING"  # accepted, and then nothing happens
                return
            del self.servers[server_id]
            for fip in self.floating_ips.values():
                if fip.server_id == server_id:
                    fip.server_id = None

    def create_floating_ip(self, server_id: str, metadata: Mapping[str, str]) -> FakeFloatingIP:
        """Allocate a floating IP and attach it to the server, in one call."""
        with self._lock:
            self.calls["create_floating_ip"] += 1
            server = self.servers.get(server_id)
            if server is None:
                raise FakeCloudError("NotFound", f"server {server_id}")
            fip = self._add_fip(metadata, server_id)
            server.public_ipv4 = fip.address
            return dataclasses.replace(fip, metadata=dict(fip.metadata))

    def list_floating_ips(self, metadata: Mapping[str, str] | None = None
                          ) -> list[FakeFloatingIP]:
        """Every floating IP, or those whose metadata contains every given item (filtered
        by the cloud, as Neutron filters by tags)."""
        with self._lock:
            self.calls["list_floating_ips"] += 1
            candidates: Iterable[FakeFloatingIP] = self.floating_ips.values()
            if metadata and TAG_NODE in metadata:
                candidates = [self.floating_ips[i]
                              for i in self._fips_by_node.get(metadata[TAG_NODE], ())]
            return [dataclasses.replace(f, metadata=dict(f.metadata)) for f in candidates
                    if not metadata or all(f.metadata.get(k) == v for k, v in metadata.items())]

    def delete_floating_ip(self, fip_id: str) -> None:
        with self._lock:
            self.calls["delete_floating_ip"] += 1
            fip = self.floating_ips.pop(fip_id, None)
            if fip is None:
                raise FakeCloudError("NotFound", f"floating ip {fip_id}")
            node_id = fip.metadata.get(TAG_NODE, "")
            tagged = self._fips_by_node.get(node_id)
            if tagged is not None:
                tagged.pop(fip_id, None)
                if not tagged:
                    del self._fips_by_node[node_id]
            server = self.servers.get(fip.server_id or "")
            if server is not None:
                server.public_ipv4 = None

    def get_limits(self, provider: str) -> tuple[Resources | None, Resources]:
        """(the cloud's quota, what servers not tagged with `provider` use)."""
        with self._lock:
            self.calls["get_limits"] += 1
            return self.quota, self._usage(provider)

    # -- test helpers (no API call counted) ----------------------------------

    def add_server(self, metadata: Mapping[str, str], flavor: str = "small") -> str:
        """An ACTIVE server made outside any adapter (a leak, or someone else's)."""
        with self._lock:
            return self._add(f"outside-{len(self.servers)}", flavor, metadata, None, "active").id

    def add_floating_ip(self, metadata: Mapping[str, str]) -> str:
        with self._lock:
            return self._add_fip(metadata, None).id

    # -- internals -----------------------------------------------------------

    def _add(self, name: str, flavor: str, metadata: Mapping[str, str], az: str | None,
             fate: str) -> FakeServer:
        n = next(self._ids)
        now = self.clock()
        server = FakeServer(id=f"{self.id_prefix}srv-{n:05d}", name=name, flavor=flavor, metadata=dict(metadata),
                            created_at=now, ready_at=now + self.boot_delay, fate=fate,
                            private_ipv4=f"10.0.{n // 250}.{n % 250 + 1}", az=az or "nova")
        self.servers[server.id] = server
        return server

    def _add_fip(self, metadata: Mapping[str, str], server_id: str | None) -> FakeFloatingIP:
        n = next(self._ids)
        fip = FakeFloatingIP(id=f"{self.id_prefix}fip-{n:05d}", address=f"203.0.{n // 250}.{n % 250 + 1}",
                             server_id=server_id, metadata=dict(metadata), created_at=self.clock())
        self.floating_ips[fip.id] = fip
        if TAG_NODE in fip.metadata:
            self._fips_by_node.setdefault(fip.metadata[TAG_NODE], {})[fip.id] = None
        return fip

    def _view(self, server: FakeServer) -> FakeServer:
        """Bring BUILD up to date with the clock; return a copy the caller may keep."""
        if server.status == "BUILD" and server.fate != "hang" and self.clock() >= server.ready_at:
            server.status = "ERROR" if server.fate == "error" else "ACTIVE"
            if server.fate == "error":
                server.fault = "Build of instance aborted: fake hypervisor fault"
        return dataclasses.replace(server, metadata=dict(server.metadata))

    def _usage(self, exclude_provider: str | None) -> Resources:
        total = Resources()
        for server in self.servers.values():
            if exclude_provider is None or server.metadata.get(TAG_PROVIDER) != exclude_provider:
                total = total + self.flavors.get(server.flavor, Resources(instances=1))
        return total
