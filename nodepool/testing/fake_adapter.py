"""FakeAdapter: the reference driver of the Adapter contract, over the in-memory FakeCloud."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

from nodepool.config import OpenStackLabel, Pool, PoolLabel, Provider
from nodepool.config.model import by_name
from nodepool.drivers.adapter import (
    Adapter,
    CloudResource,
    CreateStateMachine,
    DeleteStateMachine,
    Instance,
    InstanceStatus,
    LaunchContext,
    Listing,
    Resources,
)
from nodepool.errors import (
    CapacityError,
    ConfigurationError,
    DriverError,
    LaunchFailure,
    QuotaError,
    TransientError,
)
from nodepool.model import Node
from nodepool.testing.fake_cloud import (  # noqa: F401  (re-exported for tests)
    CREATE_FAULTS,
    DELETE_FAULTS,
    FLAVORS,
    TAG_NODE,
    TAG_POOL,
    TAG_PROVIDER,
    FakeClock,
    FakeCloud,
    FakeCloudError,
    FakeServer,
)

# The one table that turns the fake SDK's error codes into the taxonomy.
ERROR_CLASSES: Mapping[str, type[DriverError]] = {
    "OverQuota": QuotaError,
    "NoValidHost": CapacityError,
    "RateLimited": TransientError,
    "ServiceUnavailable": TransientError,
    "FlavorNotFound": ConfigurationError,
}

# A provider for FakeAdapter's tests: one pool whose labels pick a flavor by name, by min-ram,
# and boot from a volume.
SAMPLE_PROVIDER = Provider(name="fake-cloud", driver="fake", pools=by_name([Pool(
    name="main",
    labels=by_name([
        PoolLabel(name="plain"),
        OpenStackLabel(name="big", cloud_image="img", flavor_name="large"),
        OpenStackLabel(name="roomy", cloud_image="img", min_ram=3000),
        OpenStackLabel(name="volume", cloud_image="img", flavor_name="small",
                       boot_from_volume=True, volume_size=80),
    ]),
)]))

_STATUS = {"BUILD": InstanceStatus.BUILDING, "ACTIVE": InstanceStatus.READY,
           "ERROR": InstanceStatus.ERROR, "DELETING": InstanceStatus.DELETING}


def classify(error: FakeCloudError, default: type[DriverError] = LaunchFailure) -> DriverError:
    cls = ERROR_CLASSES.get(error.code, default)
    if cls is TransientError:
        return TransientError(str(error), retry_after=error.retry_after)
    return cls(str(error))


class FakeAdapter(Adapter):
    """The Adapter contract over a FakeCloud; `floating_ips` adds an attach-IP step."""

    def __init__(self, provider: Any, cloud: FakeCloud | None = None, *, floating_ips: bool = True):
        super().__init__(provider)
        self.cloud = cloud if cloud is not None else FakeCloud()
        self.floating_ips = floating_ips

    @property
    def api(self) -> FakeCloud:
        """The cloud, for a call: fenced like a real driver's calls (Adapter.fence)."""
        self.fence()
        return self.cloud

    def create(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None
               ) -> CreateStateMachine:
        return FakeCreate(self, ctx, driver_data)

    def delete(self, node: Node) -> DeleteStateMachine:
        return FakeDelete(self, node)

    def list_instances(self) -> list[Instance]:
        try:
            servers = self.api.list_servers()
        except FakeCloudError as e:
            raise classify(e, TransientError) from e
        return [self.instance(s) for s in servers if s.metadata.get(TAG_PROVIDER) == self.provider.name]

    def list_resources(self) -> list[CloudResource]:
        return [CloudResource(kind="floating-ip", id=f.id, provider=f.metadata.get(TAG_PROVIDER),
                              node_id=f.metadata.get(TAG_NODE), created_at=f.created_at,
                              detail=f.address)
                for f in self.api.list_floating_ips()
                if f.metadata.get(TAG_PROVIDER) == self.provider.name]

    def delete_resource(self, resource: CloudResource) -> None:
        try:
            self.api.delete_floating_ip(resource.id)
        except FakeCloudError as e:
            if e.code != "NotFound":
                raise classify(e, TransientError) from e

    def quota_limits(self) -> Resources | None:
        quota, others = self.api.get_limits(self.provider.name)
        return None if quota is None else quota - others

    def label_cost(self, pool: Any, label: Any) -> Resources:
        cost = self.cloud.flavors[self.flavor_for(label)]
        if getattr(label, "boot_from_volume", False):
            cost = cost + Resources(volumes=1, volume_gb=getattr(label, "volume_size", 50))
        return cost

    def flavor_for(self, label: Any) -> str:
        """The label's flavor-name, else the smallest flavor with at least its min-ram."""
        where = f"provider {self.provider.name}: label {label.name}"
        name = getattr(label, "flavor_name", None)
        if name:
            if name not in self.cloud.flavors:
                raise ConfigurationError(f"{where}: flavor-name {name!r} is not in the cloud "
                                         f"(it has {', '.join(sorted(self.cloud.flavors))})")
            return name
        min_ram = getattr(label, "min_ram", 0) or 0
        fitting = sorted((r.ram, n) for n, r in self.cloud.flavors.items() if r.ram >= min_ram)
        if not fitting:
            raise ConfigurationError(f"{where}: no flavor has min-ram {min_ram} MiB")
        return fitting[0][1]

    def instance(self, server: FakeServer) -> Instance:
        md = server.metadata
        return Instance(
            external_id=server.id, status=_STATUS[server.status],
            provider=md.get(TAG_PROVIDER), pool=md.get(TAG_POOL), node_id=md.get(TAG_NODE),
            interface_ip=server.public_ipv4 or server.private_ipv4,
            public_ipv4=server.public_ipv4, private_ipv4=server.private_ipv4,
            az=server.az, region=self.cloud.region, hostname=server.name,
            fault=server.fault, metadata=dict(md))


class FakeCreate(CreateStateMachine):
    """start -> submit (create call) -> wait-active -> [attach-ip (FIP call)] -> complete."""

    SUBMIT = "submit"
    WAIT = "wait-active"
    ATTACH = "attach-ip"
    COMPLETE = "complete"

    def __init__(self, adapter: FakeAdapter, ctx: LaunchContext,
                 driver_data: Mapping[str, Any] | None = None):
        super().__init__(ctx, driver_data)
        self.adapter = adapter
        self.cloud = adapter.cloud
        # Listings older than our last call (or our birth) may not show its effect yet.
        self.called_at = time.monotonic()
        # Resumed, or after a failed call: the call may have happened; look before creating.
        self._look_first = driver_data is not None
        self._server: Instance | None = None
        self._steps = {self.START: self._start, self.SUBMIT: self._submit,
                       self.WAIT: self._wait_active, self.ATTACH: self._attach_ip,
                       self.COMPLETE: self._attach_ip}

    def advance(self, listing: Listing | None) -> None:
        try:
            self._steps[self.state](listing)
        except FakeCloudError as e:
            self._look_first = True
            self.called_at = time.monotonic()
            raise classify(e) from e

    def _tags(self) -> dict[str, str]:
        return {TAG_PROVIDER: self.adapter.provider.name, TAG_POOL: self.ctx.pool.name,
                TAG_NODE: self.ctx.node.id or "", "nodepool_node_label": self.ctx.label.name}

    def _start(self, listing: Listing | None) -> None:
        self.adapter.flavor_for(self.ctx.label)  # a ConfigurationError before any cloud call
        self.state = self.SUBMIT

    def _submit(self, listing: Listing | None) -> None:
        if self.external_id is None and self._look_first:
            if listing is None:
                found = self.adapter.api.find_servers({TAG_PROVIDER: self.adapter.provider.name,
                                                 TAG_NODE: self.ctx.node.id or ""})
                self.external_id = found[0].id if found else None
            elif listing.taken_at < self.called_at:
                return  # wait for a listing that would show a server made before we looked
            else:
                instance = listing.by_node_id(self.ctx.node.id or "")
                self.external_id = instance.external_id if instance else None
            self._look_first = False
            if self.external_id is None and listing is None:
                return  # we made our one call; create on the next advance
        if self.external_id is None:
            name = f"{self.ctx.label.name}-{self.adapter.provider.name}-{self.ctx.node.id}"
            server = self.adapter.api.create_server(name, self.adapter.flavor_for(self.ctx.label),
                                              self._tags(), az=self.ctx.az)
            self.external_id = server.id
            self.called_at = time.monotonic()
        self.state = self.WAIT

    def _observe(self, listing: Listing | None) -> tuple[bool, Instance | None]:
        assert self.external_id is not None

        def fetch() -> Instance | None:
            server = self.adapter.api.get_server(self.external_id)
            return self.adapter.instance(server) if server else None
        return self.observe(listing, fetch)

    def _wait_active(self, listing: Listing | None) -> None:
        seen, instance = self._observe(listing)
        if not seen or (instance is not None and instance.status == InstanceStatus.BUILDING):
            return
        self._server = self._ready(instance)
        if self._wants_floating_ip() and not self._server.public_ipv4:
            self.state = self.ATTACH
        else:
            self._finish(self._server)

    def _attach_ip(self, listing: Listing | None) -> None:
        if self._server is None:  # resumed here: learn the server (it may have its IP already)
            seen, instance = self._observe(listing)
            if not seen:
                return
            self._server = self._ready(instance)
            if self._server.public_ipv4 or not self._wants_floating_ip():
                self._finish(self._server)
            return
        fip = self.adapter.api.create_floating_ip(self._server.external_id, self._tags())
        self._finish(dataclasses.replace(self._server, public_ipv4=fip.address,
                                         interface_ip=fip.address))

    def _ready(self, instance: Instance | None) -> Instance:
        if instance is None:
            raise LaunchFailure(f"node {self.ctx.node.id}: server {self.external_id} vanished")
        if instance.status != InstanceStatus.READY:
            raise LaunchFailure(f"node {self.ctx.node.id}: server {self.external_id} is "
                                f"{instance.status.value}: {instance.fault or 'no fault given'}")
        return instance

    def _wants_floating_ip(self) -> bool:
        return self.adapter.floating_ips and getattr(self.ctx.pool, "auto_floating_ip", True)

    def _finish(self, instance: Instance) -> None:
        self.instance = instance
        self.state = self.COMPLETE
        self.complete = True


class FakeDelete(DeleteStateMachine):
    """start (find by id or tag, delete) -> wait-gone -> delete-ips -> deleted."""

    DELETE = "delete-server"
    WAIT = "wait-gone"
    IPS = "delete-ips"
    DONE = "deleted"

    def __init__(self, adapter: FakeAdapter, node: Node):
        super().__init__(node)
        self.adapter = adapter
        self.cloud = adapter.cloud
        saved = node.driver_data if isinstance(node.driver_data, dict) else {}
        self.external_id: str | None = node.external_id or saved.get("external_id")
        self._called_at = time.monotonic()
        self._fips: list[str] | None = None
        self._steps = {self.START: self._start, self.DELETE: self._delete_server,
                       self.WAIT: self._wait_gone, self.IPS: self._delete_ips}

    def advance(self, listing: Listing | None) -> None:
        try:
            self._steps[self.state](listing)
        except FakeCloudError as e:
            raise classify(e, TransientError) from e

    def _start(self, listing: Listing | None) -> None:
        if self.external_id is None and self.node.id is not None:
            if listing is None:
                found = self.adapter.api.find_servers({TAG_PROVIDER: self.adapter.provider.name,
                                                 TAG_NODE: self.node.id})
                self.external_id = found[0].id if found else None
                self.state = self.DELETE if self.external_id else self.IPS
                return  # that was this advance's call
            if listing.taken_at < self._called_at:
                return
            instance = listing.by_node_id(self.node.id)
            self.external_id = instance.external_id if instance else None
        if self.external_id:
            self._delete_server(listing)  # the first advance issues the delete
        else:
            self.state = self.IPS

    def _delete_server(self, listing: Listing | None) -> None:
        assert self.external_id is not None
        try:
            self.adapter.api.delete_server(self.external_id)
        except FakeCloudError as e:
            if e.code != "NotFound":  # already gone is success
                raise
        self._called_at = time.monotonic()
        self.state = self.WAIT

    def _wait_gone(self, listing: Listing | None) -> None:
        assert self.external_id is not None
        if listing is None:
            gone = self.adapter.api.get_server(self.external_id) is None
        elif listing.taken_at < self._called_at:
            return
        else:
            gone = self.external_id not in listing.instances
        if gone:
            self.state = self.IPS

    def _delete_ips(self, listing: Listing | None) -> None:
        if self._fips is None:
            mine = {TAG_PROVIDER: self.adapter.provider.name, TAG_NODE: self.node.id}
            self._fips = [f.id for f in self.adapter.api.list_floating_ips(mine)
                          if self.node.id is not None]
        elif self._fips:
            try:
                self.adapter.api.delete_floating_ip(self._fips[0])
            except FakeCloudError as e:
                if e.code != "NotFound":
                    raise
            self._fips.pop(0)
        if not self._fips:
            self.state = self.DONE
            self.complete = True


class FakeFaults:
    """The contract suite's fault hooks (tests/adapter_contract.py `Faults`) over a FakeCloud."""

    def __init__(self, cloud: FakeCloud, provider_name: str, clock: FakeClock | None = None,
                 tick_seconds: float = 1.0):
        self.cloud = cloud
        self.provider_name = provider_name
        self.clock = clock
        self.tick_seconds = tick_seconds

    def fail_next_create(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        self.cloud.fail_next_create(kind, count, retry_after)

    def fail_next_delete(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        self.cloud.fail_next_delete(kind, count, retry_after)

    def hang_next_create(self) -> None:
        self.cloud.fail_next_create("hang")

    def hang_next_delete(self) -> None:
        self.cloud.fail_next_delete("hang")

    def create_leaked_server(self, node_id: str) -> str:
        return self.cloud.add_server({TAG_PROVIDER: self.provider_name, TAG_NODE: node_id})

    def create_untagged_server(self) -> str:
        return self.cloud.add_server({})

    def create_leaked_resource(self, node_id: str) -> str | None:
        return self.cloud.add_floating_ip({TAG_PROVIDER: self.provider_name, TAG_NODE: node_id})

    def tick(self) -> None:
        if self.clock is not None:
            self.clock.advance(self.tick_seconds)
