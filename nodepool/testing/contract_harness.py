"""The provider-loop harness of the contract suite: Faults hooks, Loop, Run and context helpers."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from typing import Any, Callable, Mapping, Protocol

from nodepool.drivers.adapter import (
    Adapter,
    CreateStateMachine,
    DeleteStateMachine,
    Instance,
    LaunchContext,
    Listing,
)
from nodepool.errors import DriverError, TransientError
from nodepool.model import Node


class Faults(Protocol):
    """What a driver's test double of its cloud lets the suite do to it."""

    def fail_next_create(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        """kind: quota, capacity, transient (saying retry_after), error (server goes ERROR), hang."""

    def fail_next_delete(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        """kind: transient, hang (the delete is accepted and the server never goes)."""

    def hang_next_create(self) -> None: ...

    def hang_next_delete(self) -> None: ...

    def create_leaked_server(self, node_id: str) -> str:
        """A server tagged with this provider and `node_id`, made outside the adapter; its id."""

    def create_untagged_server(self) -> str:
        """A server without our tags (someone else's); its id."""

    def create_leaked_resource(self, node_id: str) -> str | None:
        """A tagged non-server object (floating IP...); None if the driver has none."""

    def tick(self) -> None:
        """Called once per loop tick (a fake clock moves here; a real cloud's hook does nothing)."""


ContextFactory = Callable[..., LaunchContext]


class NoFaults:
    """The Faults of a driver without a cloud to break (static hosts): only `tick` is used."""

    def tick(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"{name}: this driver has no cloud to inject faults into")


@dataclasses.dataclass
class Run:
    """One machine driven by the Loop, with what the core would have persisted for it."""

    machine: CreateStateMachine | DeleteStateMachine
    stop_after_saves: int | None = None  # stop once this many states were saved
    lose_write: bool = False             # ... or at the next change, without saving it
    saves: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    transient: list[TransientError] = dataclasses.field(default_factory=list)
    error: DriverError | None = None
    stopped: bool = False
    last: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.machine.complete

    @property
    def done(self) -> bool:
        return self.machine.complete or self.error is not None or self.stopped

    @property
    def external_id(self) -> str | None:
        return getattr(self.machine, "external_id", None)

    @property
    def instance(self) -> Instance | None:
        return getattr(self.machine, "instance", None)

    def describe(self) -> str:
        return (f"state={self.machine.state!r} complete={self.complete} error={self.error!r} "
                f"transient={len(self.transient)} saves={self.saves}")


def _snapshot(machine: CreateStateMachine | DeleteStateMachine) -> dict[str, Any]:
    if isinstance(machine, CreateStateMachine):
        return machine.driver_data()
    return {"state": machine.state}


class Loop:
    """Mimics the provider loop: one listing per tick, advance every machine, persist changes."""

    def __init__(self, adapter: Adapter, faults: Faults, *, deadline: float = 10.0,
                 poll_interval: float = 0.0,
                 executor: concurrent.futures.Executor | None = None):
        self.adapter = adapter
        self.faults = faults
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.executor = executor
        self.ticks = 0

    def listing(self) -> Listing:
        taken_at = time.monotonic()
        instances = self.adapter.list_instances()
        return Listing(instances={i.external_id: i for i in instances}, taken_at=taken_at)

    def create(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None, *,
               max_ticks: int | None = None, stop_after_saves: int | None = None,
               lose_write: bool = False) -> Run:
        saved = json.loads(json.dumps(driver_data)) if driver_data is not None else None
        run = Run(self.adapter.create(ctx, saved), stop_after_saves, lose_write)
        run.last = _snapshot(run.machine)
        self.drive([run], max_ticks)
        return run

    def delete(self, node: Node, *, max_ticks: int | None = None) -> Run:
        run = Run(self.adapter.delete(node))
        run.last = _snapshot(run.machine)
        self.drive([run], max_ticks)
        return run

    def drive(self, runs: list[Run], max_ticks: int | None = None) -> None:
        """Tick until every run is done, `max_ticks` ticks passed, or the deadline."""
        deadline = time.monotonic() + self.deadline
        ticks = 0
        while True:
            active = [r for r in runs if not r.done]
            if not active or (max_ticks is not None and ticks >= max_ticks):
                return
            if time.monotonic() > deadline:
                return
            if ticks and self.poll_interval:
                time.sleep(self.poll_interval)  # the loop's poll cadence, not a wait for luck
            self.faults.tick()
            listing = self.listing()
            if self.executor is not None:
                list(self.executor.map(lambda r: self._step(r, listing), active))
            else:
                for run in active:
                    self._step(run, listing)
            ticks += 1
            self.ticks += 1

    def _step(self, run: Run, listing: Listing) -> None:
        try:
            run.machine.advance(listing)
        except TransientError as e:
            run.transient.append(e)  # the core retries the same step after a backoff
        except DriverError as e:
            run.error = e
        data = _snapshot(run.machine)
        json.dumps(data)  # it must fit in the node's JSON
        if data == run.last:
            return
        if run.stop_after_saves is not None and len(run.saves) == run.stop_after_saves:
            run.stopped = True  # the launcher died before this write
            return
        run.saves.append(data)
        run.last = data
        if (run.stop_after_saves is not None and not run.lose_write
                and len(run.saves) == run.stop_after_saves):
            run.stopped = True  # the launcher died right after this write


def context_factory(provider: Any) -> ContextFactory:
    """`make(label=None, pool=None, **node_fields)`: a LaunchContext for a new node id
    (default: the first pool and its first label)."""
    ids = iter(range(1, 10**9))

    def make(label: str | None = None, pool: str | None = None, **node_fields: Any) -> LaunchContext:
        pool_value = provider.pools[pool] if pool else next(iter(provider.pools.values()))
        value = pool_value.labels[label] if label else next(iter(pool_value.labels.values()))
        node = Node(id=f"{next(ids):010d}", type=[value.name], provider=provider.name,
                    pool=pool_value.name, **node_fields)
        return LaunchContext(node=node, provider=provider, pool=pool_value, label=value)
    return make


def node_for_delete(ctx: LaunchContext, run: Run | None = None) -> Node:
    """The node as the core hands it to delete(): with external_id and driver_data if known."""
    node = dataclasses.replace(ctx.node)
    if run is not None and isinstance(run.machine, CreateStateMachine):
        node.external_id = run.machine.external_id or node.external_id
        node.driver_data = run.machine.driver_data()
    return node
