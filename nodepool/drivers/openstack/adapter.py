"""OpenStackAdapter: the Adapter contract over openstacksdk for one `driver: openstack` provider."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as sdk_exc

from nodepool.drivers.adapter import (
    Adapter,
    CloudResource,
    CreateStateMachine,
    DeleteStateMachine,
    Instance,
    LaunchContext,
    Resources,
)
from nodepool.drivers.openstack import quota
from nodepool.drivers.openstack.cloud import Cloud
from nodepool.drivers.openstack.create import OpenStackCreate
from nodepool.drivers.openstack.delete import OpenStackDelete
from nodepool.drivers.openstack.lookup import Catalog
from nodepool.drivers.openstack.resources import LeakScanner
from nodepool.drivers.openstack.servers import TAG_NODE, TAG_PROVIDER, to_instance
from nodepool.errors import ConfigurationError, CostUnknown
from nodepool.model import Node

log = logging.getLogger("nodepool.drivers.openstack")

# quota_limits() reuses the last listing when it is this fresh (seconds).
LISTING_REUSE = 10.0
# Servers seen tagged with us are remembered this long after they vanish, so
# a port they leave behind can still be attributed to its node.
FORGET_AFTER = 6 * 3600.0


class OpenStackAdapter(Adapter):
    """One provider's OpenStack cloud: launches, deletions, listings, quota, leaks.

    The SDK connection is made on the first call (from whichever executor
    thread comes first) and shared; flavors, networks and image ids are
    cached in `catalog`. Every API call goes through `cloud.call()`, under
    the provider's `rate` and through the one `classify()`.
    """

    def __init__(self, provider: Any):
        super().__init__(provider)
        self.cloud = Cloud(provider, fence=lambda: self.fence(),
                           observe=lambda *call: self.observe_call(*call),
                           statsd=lambda: self.statsd)
        self.catalog = Catalog(self.cloud)
        self.leaks = LeakScanner(self)
        self._lock = threading.Lock()
        self._servers: list[dict[str, Any]] = []   # the last listing, every server of the project
        self._listed_at: float | None = None       # monotonic time of that listing
        self._ours: dict[str, tuple[str | None, float]] = {}  # server id -> (node id, last seen)
        self._warned_labels: set[str] = set()
        # Costs are told only once a limits read has answered: the flavors are cached
        # within that read, and a cost known before the limits would let the launcher
        # launch past a quota it has not read yet.
        self._limits_answered = False

    # -- state machines ---------------------------------------------------

    def create(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None
               ) -> CreateStateMachine:
        return OpenStackCreate(self, ctx, driver_data)

    def delete(self, node: Node) -> DeleteStateMachine:
        return OpenStackDelete(self, node)

    # -- listings -----------------------------------------------------------

    @property
    def region(self) -> str | None:
        """region-name, else the region clouds.yaml gives (known once connected)."""
        return self.cloud.region_name

    def instance(self, server: Mapping[str, Any]) -> Instance:
        return to_instance(server, self.region, self.catalog.external_network_names(),
                           private=self.cloud.private)

    def list_instances(self) -> list[Instance]:
        """Our servers from one `GET /servers/detail` (one per 1,000 servers)."""
        servers = self.cloud.list_servers()
        self._remember(servers)
        return [self.instance(s) for s in servers
                if (s.get("metadata") or {}).get(TAG_PROVIDER) == self.provider.name]

    def find_instance(self, node_id: str) -> Instance | None:
        """Our server tagged with `node_id`, from one listing call."""
        for instance in self.list_instances():
            if instance.node_id == node_id:
                return instance
        return None

    def _remember(self, servers: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        with self._lock:
            self._servers, self._listed_at = servers, now
            for server in servers:
                meta = server.get("metadata") or {}
                if meta.get(TAG_PROVIDER) == self.provider.name:
                    self._ours[server["id"]] = (meta.get(TAG_NODE), now)
            for server_id, (_, seen) in list(self._ours.items()):
                if now - seen > FORGET_AFTER:
                    del self._ours[server_id]

    def known_servers(self) -> dict[str, str | None]:
        """Server id -> node id of every server lately seen tagged with this provider."""
        with self._lock:
            return {server_id: node_id for server_id, (node_id, _) in self._ours.items()}

    def current_server_ids(self) -> set[str] | None:
        """Ids of every server in the last listing; None if there was none yet."""
        with self._lock:
            if self._listed_at is None:
                return None
            return {s["id"] for s in self._servers}

    @property
    def makes_floating_ips(self) -> bool:
        return any(getattr(p, "auto_floating_ip", False) for p in self.provider.pools.values())

    # -- leaks ------------------------------------------------------------

    def list_resources(self) -> list[CloudResource]:
        return self.leaks.scan()

    def delete_resource(self, resource: CloudResource) -> None:
        self.leaks.delete(resource)

    # -- quota ------------------------------------------------------------

    def quota_limits(self) -> Resources | None:
        """Nova's and Cinder's absolute limits minus what servers not tagged with us
        (and volumes not theirs) use.

        Also warms the flavor cache, so label_cost() (called on the loop
        thread) rarely has to ask the cloud itself.
        """
        limits = self.cloud.call("get limits", lambda conn: conn.compute.get_limits())
        volume = self.cloud.call("get volume limits", _volume_limits)
        self.catalog.flavors()
        with self._lock:
            age = None if self._listed_at is None else time.monotonic() - self._listed_at
            fresh = age is not None and age < LISTING_REUSE
            servers = self._servers
        if not fresh:
            servers = self.cloud.list_servers()
            self._remember(servers)
        others = quota.others_usage(servers, self.provider.name, self.catalog.flavor_by_id)
        volume_absolute = volume.absolute if volume is not None else None
        others = others + quota.others_volumes(volume_absolute, servers, self.provider)
        found = quota.quota_limits(limits.absolute, others, volume_absolute)
        self._limits_answered = True
        return found

    def label_cost(self, pool: Any, label: Any) -> Resources:
        if not self._limits_answered or self.catalog.cached_flavors() is None:
            # both read by quota_limits, off the loop
            raise CostUnknown(f"provider {self.provider.name}: the flavors are not read yet")
        try:
            flavor = self.catalog.flavor_for(label)
        except ConfigurationError as e:
            # The launch itself fails with this error and says why; counting the
            # node as one instance meanwhile keeps the provider loop going.
            if label.name not in self._warned_labels:
                self._warned_labels.add(label.name)
                log.error("provider=%s %s", self.provider.name, e)
            cost = Resources(instances=1)
            if getattr(label, "boot_from_volume", False):
                cost = cost + Resources(volumes=1, volume_gb=label.volume_size)
            return cost
        return quota.label_cost(flavor, label)

    def stop(self) -> None:
        self.cloud.close()


def _volume_limits(conn: Any) -> Any:
    """Cinder's limits through the SDK's public API; None when the cloud has no
    block-storage service in its catalog (volumes are then unlimited, as in Nodepool)."""
    try:
        return conn.block_storage.get_limits()
    except (sdk_exc.ServiceDisabledException, ksa_exc.EndpointNotFound):
        return None
