"""FakeAdapter: the contract suite over the in-memory cloud, plus the fake's own knobs."""

from __future__ import annotations

import time
from typing import Callable

import pytest
from adapter_contract import LaunchingAdapterContract, Loop, Run, context_factory

from nodepool.config import OpenStackLabel
from nodepool.drivers.adapter import Adapter, InstanceStatus, Listing, Resources
from nodepool.errors import ConfigurationError, QuotaError
from nodepool.model import Node
from nodepool.testing.fake_adapter import SAMPLE_PROVIDER as PROVIDER
from nodepool.testing.fake_adapter import FakeAdapter, FakeClock, FakeCloud, FakeFaults


class TestFakeAdapterContract(LaunchingAdapterContract):
    """The whole contract, with and without the floating-IP step, on a fake clock."""

    @pytest.fixture(params=[True, False], ids=["floating-ip", "fixed-ip"])
    def floating_ips(self, request: pytest.FixtureRequest) -> bool:
        return request.param

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def cloud(self, clock: FakeClock) -> FakeCloud:
        return FakeCloud(boot_delay=3.0, clock=clock)  # three ticks in BUILD

    @pytest.fixture
    def adapter_factory(self, cloud: FakeCloud, floating_ips: bool) -> Callable[[], Adapter]:
        return lambda: FakeAdapter(PROVIDER, cloud, floating_ips=floating_ips)

    @pytest.fixture
    def faults(self, cloud: FakeCloud, clock: FakeClock) -> FakeFaults:
        return FakeFaults(cloud, PROVIDER.name, clock)

    @pytest.fixture
    def make_context(self) -> Callable:
        return context_factory(PROVIDER)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> FakeCloud:
    return FakeCloud(clock=clock)


@pytest.fixture
def adapter(cloud: FakeCloud) -> FakeAdapter:
    return FakeAdapter(PROVIDER, cloud)


@pytest.fixture
def loop(adapter: FakeAdapter, cloud: FakeCloud, clock: FakeClock) -> Loop:
    return Loop(adapter, FakeFaults(cloud, PROVIDER.name, clock))


make_context = context_factory(PROVIDER)


def test_a_launch_makes_one_create_call_and_one_list_call_per_tick(
        loop: Loop, cloud: FakeCloud) -> None:
    run = loop.create(make_context())
    assert run.complete
    assert cloud.creates == 1 and cloud.calls["create_floating_ip"] == 1
    assert cloud.list_calls == loop.ticks
    assert cloud.calls["get_server"] == cloud.calls["find_servers"] == 0


@pytest.mark.parametrize("with_listing", [True, False], ids=["listing", "no-listing"])
def test_every_advance_makes_at_most_one_cloud_call(
        adapter: FakeAdapter, cloud: FakeCloud, with_listing: bool) -> None:
    def drive(machine) -> None:
        for _ in range(50):
            if machine.complete:
                return
            listing = None
            if with_listing:
                listing = Listing({i.external_id: i for i in adapter.list_instances()},
                                  time.monotonic())
            before = sum(cloud.calls.values())
            machine.advance(listing)
            assert sum(cloud.calls.values()) - before <= 1, machine.state
        raise AssertionError(f"stuck in {machine.state}")

    ctx = make_context()
    create = adapter.create(ctx)
    drive(create)
    drive(adapter.create(ctx, {"state": "submit", "external_id": None}))  # resumed: looks first
    drive(adapter.delete(ctx.node))
    assert adapter.list_instances() == [] and adapter.list_resources() == []


def test_server_stays_building_until_the_boot_delay_passes(clock: FakeClock) -> None:
    cloud = FakeCloud(boot_delay=30.0, clock=clock)
    adapter = FakeAdapter(PROVIDER, cloud)
    run = Loop(adapter, FakeFaults(cloud, PROVIDER.name)).create(make_context(), max_ticks=20)
    assert not run.complete and run.machine.state == "wait-active"
    assert [i.status for i in adapter.list_instances()] == [InstanceStatus.BUILDING]
    clock.advance(30.0)
    loop = Loop(adapter, FakeFaults(cloud, PROVIDER.name))
    loop.drive([run])
    assert run.complete and run.instance.status == InstanceStatus.READY


def test_boot_delay_on_real_monotonic_time() -> None:
    cloud = FakeCloud(boot_delay=0.05)
    adapter = FakeAdapter(PROVIDER, cloud)
    started = time.monotonic()
    run = Loop(adapter, FakeFaults(cloud, PROVIDER.name), poll_interval=0.005).create(make_context())
    assert run.complete, run.describe()
    assert time.monotonic() - started >= 0.05


def test_fault_count_applies_to_the_next_creates_only(loop: Loop, cloud: FakeCloud) -> None:
    cloud.fail_next_create("quota", count=2)
    assert isinstance(loop.create(make_context()).error, QuotaError)
    assert isinstance(loop.create(make_context()).error, QuotaError)
    assert loop.create(make_context()).complete


def test_unknown_fault_kind_is_refused(cloud: FakeCloud) -> None:
    with pytest.raises(ValueError, match="known: quota"):
        cloud.fail_next_create("meteor")
    with pytest.raises(ValueError, match="known: transient"):
        cloud.fail_next_delete("quota")


def test_cloud_quota_refuses_a_create_over_it(loop: Loop, cloud: FakeCloud) -> None:
    cloud.quota = Resources(instances=1, cores=100, ram=100000)
    assert loop.create(make_context()).complete
    assert isinstance(loop.create(make_context()).error, QuotaError)
    assert cloud.creates == 2 and len(cloud.servers) == 1


def test_quota_limits_subtract_what_others_use(adapter: FakeAdapter, cloud: FakeCloud,
                                               loop: Loop) -> None:
    assert adapter.quota_limits() is None
    cloud.quota = Resources(instances=10, cores=20, ram=20480)
    cloud.add_server({}, flavor="medium")  # someone else's
    assert loop.create(make_context()).complete  # ours: the core counts it itself
    assert adapter.quota_limits() == Resources(instances=9, cores=18, ram=16384)


def test_label_cost_follows_flavor_name_min_ram_and_volume(adapter: FakeAdapter) -> None:
    pool = PROVIDER.pools["main"]
    cost = {name: adapter.label_cost(pool, label) for name, label in pool.labels.items()}
    assert cost["plain"] == Resources(instances=1, cores=1, ram=1024)
    assert cost["big"] == Resources(instances=1, cores=4, ram=8192)
    assert cost["roomy"] == Resources(instances=1, cores=2, ram=4096)
    assert cost["volume"] == Resources(instances=1, cores=1, ram=1024, volumes=1, volume_gb=80)


def test_unknown_flavor_is_a_configuration_error_before_any_call(
        loop: Loop, cloud: FakeCloud) -> None:
    bad = OpenStackLabel(name="bad", cloud_image="img", flavor_name="huge")
    ctx = make_context()
    ctx.label = bad
    run = loop.create(ctx)
    assert isinstance(run.error, ConfigurationError) and "flavor-name 'huge'" in str(run.error)
    assert cloud.creates == 0


def test_other_providers_servers_are_not_listed(adapter: FakeAdapter, cloud: FakeCloud) -> None:
    cloud.add_server({"nodepool_provider_name": "other", "nodepool_node_id": "0000000001"})
    assert adapter.list_instances() == []


def test_resumed_submit_without_a_listing_finds_the_server_by_tag(
        adapter: FakeAdapter, cloud: FakeCloud, loop: Loop) -> None:
    ctx = make_context()
    first = loop.create(ctx, stop_after_saves=1, lose_write=True)  # the create call ran
    assert first.stopped and first.saves == [{"state": "submit", "external_id": None}]
    resumed = adapter.create(ctx, first.saves[-1])
    resumed.advance(None)
    assert cloud.calls["find_servers"] == 1 and cloud.creates == 1
    assert resumed.external_id == first.external_id


def test_delete_removes_the_nodes_floating_ips(adapter: FakeAdapter, cloud: FakeCloud,
                                               loop: Loop) -> None:
    ctx = make_context()
    run = loop.create(ctx)
    assert run.instance is not None and run.instance.public_ipv4
    assert len(cloud.floating_ips) == 1
    assert loop.delete(ctx.node).complete
    assert cloud.servers == {} and cloud.floating_ips == {}


def test_counters_count_each_kind_of_call(adapter: FakeAdapter, cloud: FakeCloud,
                                         loop: Loop) -> None:
    contexts = [make_context() for _ in range(3)]
    runs = [Run(adapter.create(ctx)) for ctx in contexts]
    loop.drive(runs)
    assert all(r.complete for r in runs)
    for ctx in contexts:
        assert loop.delete(ctx.node).complete
    assert (cloud.creates, cloud.deletes) == (3, 3)


def test_first_delete_advance_issues_the_delete_when_the_id_is_known(
        adapter: FakeAdapter, cloud: FakeCloud) -> None:
    # The core's leak cleanup advances a delete machine once per scan.
    leaked = cloud.add_server({"nodepool_provider_name": PROVIDER.name,
                               "nodepool_node_id": "0000000077"})
    ghost = Node(id="0000000077", provider=PROVIDER.name, external_id=leaked)
    adapter.delete(ghost).advance(Listing({}, 0.0))
    assert cloud.deletes == 1 and cloud.servers == {}


def test_floating_ips_filtered_by_node_tag_follow_creates_and_deletes(cloud: FakeCloud) -> None:
    def tags(node_id: str) -> dict[str, str]:
        return {"nodepool_provider_name": PROVIDER.name, "nodepool_node_id": node_id}

    first, second = cloud.add_floating_ip(tags("a")), cloud.add_floating_ip(tags("a"))
    other = cloud.add_floating_ip(tags("b"))
    cloud.add_floating_ip({"owner": "someone else"})
    assert [f.id for f in cloud.list_floating_ips(tags("a"))] == [first, second]
    cloud.delete_floating_ip(first)
    assert [f.id for f in cloud.list_floating_ips(tags("a"))] == [second]
    assert [f.id for f in cloud.list_floating_ips({"nodepool_node_id": "b"})] == [other]
    assert cloud.list_floating_ips({"nodepool_node_id": "b", "nodepool_provider_name": "x"}) == []
    cloud.delete_floating_ip(second)
    assert cloud.list_floating_ips(tags("a")) == []
    assert len(cloud.list_floating_ips()) == 2
