"""The Adapter contract suite: pytest cases every driver's tests inherit (see doc/drivers.md).

Installed with nodepool (it needs pytest), so a driver's own package runs it too.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable

import pytest

from nodepool.drivers.adapter import (
    STANDING,
    Adapter,
    Instance,
    InstanceStatus,
    LaunchContext,
    Resources,
    standing_key,
)
from nodepool.errors import CapacityError, DriverError, LaunchFailure, QuotaError
from nodepool.model import Node
from nodepool.testing.contract_harness import (  # noqa: F401  (re-exported for drivers' tests)
    ContextFactory,
    Faults,
    Loop,
    NoFaults,
    Run,
    context_factory,
    node_for_delete,
)


class AdapterContract:
    """Cases every adapter passes. Subclasses provide the fixtures `adapter_factory`
    (a new adapter instance on the same cloud: a restarted launcher), `make_context`
    (`make_context(label=None, pool=None, **node_fields) -> LaunchContext` with a fresh
    node id: see `context_factory`) and `faults` (a `Faults`)."""

    DEADLINE = 10.0       # seconds a launch or delete may take in the test cloud
    POLL_INTERVAL = 0.0   # seconds between loop ticks
    HANG_TICKS = 10       # ticks after which a hung step counts as hung

    @pytest.fixture
    def adapter(self, adapter_factory: Callable[[], Adapter]) -> Adapter:
        return adapter_factory()

    @pytest.fixture
    def loop(self, adapter: Adapter, faults: Faults) -> Loop:
        return Loop(adapter, faults, deadline=self.DEADLINE, poll_interval=self.POLL_INTERVAL)

    def new_loop(self, adapter: Adapter, faults: Faults) -> Loop:
        return Loop(adapter, faults, deadline=self.DEADLINE, poll_interval=self.POLL_INTERVAL)

    def servers_of(self, adapter: Adapter, node_id: str | None) -> list[Instance]:
        return [i for i in adapter.list_instances() if i.node_id == node_id]

    def listed_instance(self, adapter: Adapter, loop: Loop, make_context: ContextFactory) -> Instance:
        """An instance the listing must show: one launched for a node, or a standing one."""
        raise NotImplementedError

    def test_listed_instances_carry_this_provider(self, adapter: Adapter, loop: Loop,
                                                  make_context: ContextFactory) -> None:
        expected = self.listed_instance(adapter, loop, make_context)
        listing = adapter.list_instances()
        assert expected.external_id in {i.external_id for i in listing}, (expected, listing)
        for instance in listing:
            assert instance.provider == adapter.provider.name, instance

    def test_quota_limits_are_resources_or_unlimited(self, adapter: Adapter) -> None:
        assert adapter.quota_limits() is None or isinstance(adapter.quota_limits(), Resources)

    def test_one_node_costs_one_instance(self, adapter: Adapter) -> None:
        adapter.quota_limits()   # what label_cost may need (it never calls the cloud itself)
        for pool in adapter.provider.pools.values():
            for label in pool.labels.values():
                assert adapter.label_cost(pool, label).instances == 1, (pool.name, label.name)

    def test_delete_of_a_server_that_never_existed_is_success(
            self, loop: Loop, make_context: ContextFactory) -> None:
        node = dataclasses.replace(make_context().node, external_id="no-such-server")
        run = loop.delete(node)
        assert run.complete and not run.transient, run.describe()


class LaunchingAdapterContract(AdapterContract):
    """Cases for drivers that create servers (`launches = True`)."""

    def launch_ready(self, loop: Loop, ctx: LaunchContext) -> Run:
        run = loop.create(ctx)
        assert run.complete, f"launch of node {ctx.node.id} did not finish: {run.describe()}"
        return run

    def assert_gone(self, adapter: Adapter, node_id: str | None) -> None:
        assert self.servers_of(adapter, node_id) == []
        assert [r for r in adapter.list_resources() if r.node_id == node_id] == []

    def listed_instance(self, adapter: Adapter, loop: Loop, make_context: ContextFactory) -> Instance:
        ctx = make_context()
        run = self.launch_ready(loop, ctx)
        (instance,) = self.servers_of(adapter, ctx.node.id)
        assert instance.external_id == run.external_id
        assert (instance.provider, instance.node_id) == (adapter.provider.name, ctx.node.id)
        return instance

    def test_launches(self, adapter: Adapter) -> None:
        assert adapter.launches is True

    def test_full_lifecycle(self, adapter: Adapter, loop: Loop, make_context: ContextFactory) -> None:
        ctx = make_context()
        run = self.launch_ready(loop, ctx)
        instance = run.instance
        assert instance is not None and instance.status == InstanceStatus.READY
        assert (instance.provider, instance.pool, instance.node_id) == (
            adapter.provider.name, ctx.pool.name, ctx.node.id)
        assert instance.interface_ip
        assert instance.external_id == run.external_id
        assert [i.external_id for i in self.servers_of(adapter, ctx.node.id)] == [instance.external_id]
        deletion = loop.delete(node_for_delete(ctx, run))
        assert deletion.complete, deletion.describe()
        self.assert_gone(adapter, ctx.node.id)

    @pytest.mark.parametrize("kind, error", [("quota", QuotaError), ("capacity", CapacityError)])
    def test_refused_create_is_classified(self, adapter: Adapter, loop: Loop, faults: Faults,
                                          make_context: ContextFactory, kind: str,
                                          error: type[DriverError]) -> None:
        faults.fail_next_create(kind)
        ctx = make_context()
        run = loop.create(ctx)
        assert isinstance(run.error, error), run.describe()
        assert loop.delete(node_for_delete(ctx, run)).complete  # the core cleans up all the same
        self.assert_gone(adapter, ctx.node.id)

    def test_transient_error_is_retried(self, adapter: Adapter, loop: Loop, faults: Faults,
                                        make_context: ContextFactory) -> None:
        faults.fail_next_create("transient", retry_after=7.0)
        ctx = make_context()
        run = self.launch_ready(loop, ctx)
        assert run.transient and run.transient[0].retry_after == 7.0, run.describe()
        assert len(self.servers_of(adapter, ctx.node.id)) == 1

    def test_server_in_error_is_a_launch_failure_and_is_cleaned_up(
            self, adapter: Adapter, loop: Loop, faults: Faults, make_context: ContextFactory) -> None:
        faults.fail_next_create("error")
        ctx = make_context()
        run = loop.create(ctx)
        assert isinstance(run.error, LaunchFailure), run.describe()
        assert loop.delete(node_for_delete(ctx, run)).complete
        self.assert_gone(adapter, ctx.node.id)

    def test_hung_build_never_completes_and_can_be_deleted(
            self, adapter: Adapter, loop: Loop, faults: Faults, make_context: ContextFactory) -> None:
        faults.hang_next_create()
        ctx = make_context()
        run = loop.create(ctx, max_ticks=self.HANG_TICKS)
        assert not run.complete and run.error is None, run.describe()
        assert len(self.servers_of(adapter, ctx.node.id)) == 1
        assert loop.delete(node_for_delete(ctx, run)).complete
        self.assert_gone(adapter, ctx.node.id)

    def test_transient_delete_error_is_retried(self, adapter: Adapter, loop: Loop, faults: Faults,
                                               make_context: ContextFactory) -> None:
        ctx = make_context()
        run = self.launch_ready(loop, ctx)
        faults.fail_next_delete("transient")
        deletion = loop.delete(node_for_delete(ctx, run))
        assert deletion.complete and deletion.transient, deletion.describe()
        self.assert_gone(adapter, ctx.node.id)

    def test_hung_delete_stays_incomplete_until_retried(
            self, adapter: Adapter, loop: Loop, faults: Faults, make_context: ContextFactory) -> None:
        ctx = make_context()
        run = self.launch_ready(loop, ctx)
        faults.hang_next_delete()
        hung = loop.delete(node_for_delete(ctx, run), max_ticks=self.HANG_TICKS)
        assert not hung.complete and hung.error is None, hung.describe()
        retry = loop.delete(node_for_delete(ctx, run))  # the core's next attempt
        assert retry.complete, retry.describe()
        self.assert_gone(adapter, ctx.node.id)

    def test_deleting_twice_is_success(self, adapter: Adapter, loop: Loop,
                                       make_context: ContextFactory) -> None:
        ctx = make_context()
        node = node_for_delete(ctx, self.launch_ready(loop, ctx))
        assert loop.delete(node).complete
        again = loop.delete(node)
        assert again.complete and not again.transient, again.describe()

    def test_delete_finds_the_server_by_node_id_tag(self, adapter: Adapter, loop: Loop,
                                                    make_context: ContextFactory) -> None:
        ctx = make_context()
        self.launch_ready(loop, ctx)
        assert loop.delete(dataclasses.replace(ctx.node, external_id=None)).complete
        self.assert_gone(adapter, ctx.node.id)

    def test_leaked_server_is_listed_with_its_node_id(self, adapter: Adapter, loop: Loop,
                                                      faults: Faults) -> None:
        external_id = faults.create_leaked_server("0999999999")
        leaked = [i for i in adapter.list_instances() if i.external_id == external_id]
        assert len(leaked) == 1 and leaked[0].node_id == "0999999999"
        assert leaked[0].provider == adapter.provider.name
        assert loop.delete(Node(id="0999999999", provider=adapter.provider.name)).complete
        self.assert_gone(adapter, "0999999999")

    def test_untagged_server_is_not_listed_as_ours(self, adapter: Adapter, faults: Faults) -> None:
        external_id = faults.create_untagged_server()
        assert external_id not in {i.external_id for i in adapter.list_instances()}

    def test_leaked_resource_is_listed_and_deleted(self, adapter: Adapter, faults: Faults) -> None:
        resource_id = faults.create_leaked_resource("0999999998")
        if resource_id is None:  # a driver that makes no objects besides servers lists none
            assert list(adapter.list_resources()) == []
            return
        found = [r for r in adapter.list_resources() if r.id == resource_id]
        assert len(found) == 1 and found[0].node_id == "0999999998"
        assert found[0].provider == adapter.provider.name
        adapter.delete_resource(found[0])
        assert resource_id not in {r.id for r in adapter.list_resources()}
        adapter.delete_resource(found[0])  # deleting what is gone is success

    def test_parallel_launches_from_an_executor(self, adapter: Adapter, faults: Faults,
                                                make_context: ContextFactory) -> None:
        contexts = [make_context() for _ in range(6)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            loop = Loop(adapter, faults, deadline=self.DEADLINE,
                        poll_interval=self.POLL_INTERVAL, executor=pool)
            runs = [Run(adapter.create(ctx)) for ctx in contexts]
            loop.drive(runs)
        assert all(r.complete for r in runs), [r.describe() for r in runs]
        for ctx in contexts:
            assert len(self.servers_of(adapter, ctx.node.id)) == 1

    def test_resume_after_restart_at_every_step(
            self, adapter: Adapter, adapter_factory: Callable[[], Adapter], loop: Loop,
            faults: Faults, make_context: ContextFactory) -> None:
        reference = self.launch_ready(loop, make_context())
        steps = len(reference.saves)
        assert steps >= 2, f"a create machine saves at least a state per call: {reference.saves}"
        # Stopped right after save k, or after the step following save k ran but
        # before its save was written (the irreversible call happened unrecorded).
        cases = [(k, False) for k in range(1, steps + 1)] + [(k, True) for k in range(steps)]
        for k, lose_write in cases:
            ctx = make_context()
            first = loop.create(ctx, stop_after_saves=k, lose_write=lose_write)
            assert first.stopped and first.error is None, (k, lose_write, first.describe())
            saved = first.saves[-1] if first.saves else None
            restarted = adapter_factory()
            resumed = self.new_loop(restarted, faults).create(ctx, saved)
            where = f"resumed from save {k} {saved} (lost write: {lose_write})"
            assert resumed.complete, f"{where}: {resumed.describe()}"
            assert resumed.instance is not None and resumed.instance.node_id == ctx.node.id
            servers = self.servers_of(restarted, ctx.node.id)
            assert len(servers) == 1, f"{where}: servers {servers}"
            kinds = [r.kind for r in restarted.list_resources() if r.node_id == ctx.node.id]
            assert len(kinds) == len(set(kinds)), f"{where}: duplicated objects {kinds}"
            assert self.new_loop(restarted, faults).delete(node_for_delete(ctx, resumed)).complete
            self.assert_gone(restarted, ctx.node.id)


class StandingAdapterContract(AdapterContract):
    """Cases for drivers whose nodes exist already (`launches = False`, e.g. static hosts).

    Each standing instance has a unique slot key (`standing_key()`: `metadata["standing"]`,
    else its external_id); slots may share an external_id (a static host's slots all
    show the host name). `make_context(label, pool, **node_fields)` names the slot the
    node is for by the node's fields (`place()`).
    """

    def listed_instance(self, adapter: Adapter, loop: Loop, make_context: ContextFactory) -> Instance:
        standing = adapter.standing_instances()
        assert standing, "the test config should give at least one standing instance"
        return standing[0]

    @staticmethod
    def place(standing: Instance) -> dict:
        """The node fields by which a node records the slot it stands for."""
        return {"external_id": standing.external_id, "hostname": standing.hostname,
                "username": standing.username, "connection_port": standing.connection_port,
                "slot": standing.slot}

    def test_does_not_launch(self, adapter: Adapter) -> None:
        assert adapter.launches is False

    def test_standing_instances_are_ready_and_distinct(self, adapter: Adapter) -> None:
        standing = adapter.standing_instances()
        assert standing, "the test config should give at least one standing instance"
        assert len({standing_key(i) for i in standing}) == len(standing)
        pools = adapter.provider.pools
        for instance in standing:
            assert instance.status == InstanceStatus.READY and instance.interface_ip, instance
            assert instance.provider == adapter.provider.name and instance.pool in pools
            labels = instance.metadata.get("labels")
            assert labels and all(name in pools[instance.pool].labels for name in labels)

    def test_listing_is_the_standing_instances(self, adapter: Adapter) -> None:
        assert ({standing_key(i) for i in adapter.list_instances()}
                == {standing_key(i) for i in adapter.standing_instances()})

    def test_create_completes_with_its_instance(self, adapter: Adapter, loop: Loop,
                                                make_context: ContextFactory) -> None:
        for standing in adapter.standing_instances():
            ctx = make_context(standing.metadata["labels"][0], standing.pool,
                               **self.place(standing))
            run = loop.create(ctx)
            assert run.complete and run.instance is not None, run.describe()
            assert run.instance.external_id == standing.external_id
            assert standing_key(run.instance) == standing_key(standing)
            assert run.instance.node_id == ctx.node.id

    def test_create_resumes_from_saved_driver_data(
            self, adapter_factory: Callable[[], Adapter], loop: Loop, adapter: Adapter,
            faults: Faults, make_context: ContextFactory) -> None:
        standing = adapter.standing_instances()[-1]
        ctx = make_context(standing.metadata["labels"][0], standing.pool,
                           **self.place(standing))
        first = loop.create(ctx)
        for saved in [None, {STANDING: standing_key(standing)}, *first.saves]:
            resumed = self.new_loop(adapter_factory(), faults).create(ctx, saved)
            assert resumed.complete, resumed.describe()
            assert resumed.instance is not None
            assert standing_key(resumed.instance) == standing_key(standing)
            if saved is not None and STANDING in saved:
                # The slot key stays in what the machine saves: a resumed record names it.
                assert resumed.machine.driver_data().get(STANDING) == standing_key(standing)

    def test_delete_completes_and_the_host_stays(self, adapter: Adapter, loop: Loop,
                                                 make_context: ContextFactory) -> None:
        standing = adapter.standing_instances()[0]
        ctx = make_context(standing.metadata["labels"][0], standing.pool,
                           **self.place(standing))
        run = loop.create(ctx)
        deletion = loop.delete(node_for_delete(ctx, run))
        assert deletion.complete, deletion.describe()
        assert standing_key(standing) in {standing_key(i) for i in adapter.list_instances()}

    def registered_node(self, standing: Instance) -> Node:
        """A node as the core registers it for a standing instance."""
        return Node(id="0000000001", type=list(standing.metadata["labels"]),
                    provider=standing.provider, pool=standing.pool,
                    external_id=standing.external_id, hostname=standing.hostname,
                    interface_ip=standing.interface_ip, username=standing.username,
                    connection_port=standing.connection_port,
                    connection_type=standing.connection_type, shell_type=standing.shell_type,
                    python_path=standing.python_path, host_keys=list(standing.host_keys or []),
                    slot=standing.slot, driver_data={STANDING: standing_key(standing)})

    def test_a_registered_node_occupies_its_slot_and_is_current(self, adapter: Adapter) -> None:
        for standing in adapter.standing_instances():
            node = self.registered_node(standing)
            assert adapter.standing_slot(node) == standing_key(standing), standing
            assert adapter.standing_outdated(node) is None, standing

    def test_a_node_of_a_slot_no_longer_configured_is_outdated(self, adapter: Adapter) -> None:
        node = self.registered_node(adapter.standing_instances()[0])
        node.interface_ip = node.hostname = "gone.invalid"
        node.driver_data = {STANDING: "no-such-slot"}
        assert adapter.standing_slot(node) is None
        assert adapter.standing_outdated(node)
        assert adapter.standing_outdated(Node(type=["x"])) is None   # not registered by us
