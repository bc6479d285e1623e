"""One provider's worker: the loop that drives its parts, and how they are wired.

One thread per provider runs a pass whenever something may have changed (a
cache event, a finished cloud call, a keyscan, a timer), never on a fixed
beat. A pass is two halves (`_pass_steps`): the sync steps take in what
happened (ZooKeeper events, finished cloud steps, answers to pipelined
calls, the listing and limits), then the act steps decide and act
(hand-overs first, then cleanup, machines, spares); a step that fails backs
off alone (guarded.py). Blocking cloud calls go to a small executor per
provider; every ZooKeeper write goes through the effects module, on the
loop thread. doc/internals.md draws the parts and the events between them.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from nodepool.config.model import Provider
from nodepool.drivers.adapter import Adapter
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.context import LauncherContext
from nodepool.launcher.deletions import Deletions
from nodepool.launcher.effects import ZkEffects
from nodepool.launcher.fence import LeaseFence, NoFence
from nodepool.launcher.guarded import ZOOKEEPER_LOST, GuardedSteps
from nodepool.launcher.handling import Requests
from nodepool.launcher.indexes import ProviderIndex
from nodepool.launcher.launches import Launches
from nodepool.launcher.leaks import Leaks
from nodepool.launcher.planner import PoolView
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.launcher.spares import Spares, SpareStatus
from nodepool.launcher.supply import CloudSupply, StandingSupply
from nodepool.launcher.sweep import Sweep
from nodepool.launcher.vanished import Vanished
from nodepool.model import Node, RequestState
from nodepool.zk import cache as zkcache

log = logging.getLogger("nodepool.launcher.provider")

FENCED_POLL = 0.05   # seconds between looks at the fence while the lease is unproven
SETTLE_CREATES = 5.0   # seconds a stopping worker waits for its creates' answers


class ProviderWorker:
    """Drives one provider for as long as this launcher holds the provider's lease."""

    def __init__(self, ctx: LauncherContext, provider: Provider, adapter: Adapter,
                 fence: LeaseFence | NoFence | None = None):
        self.name = provider.name
        self.thread: threading.Thread | None = None
        self.wakeup = threading.Event()
        self.passes = 0   # loop passes completed (tests wait on it: "two more passes went by")
        self._changes: collections.deque = collections.deque()   # from the cache thread
        scope = self.scope = ProviderScope(
            ctx=ctx, provider=provider, adapter=adapter, pools={},
            index=ProviderIndex(provider.name, lambda node: self.capacity.node_cost(node)),
            effects=ZkEffects(ctx.cache, lambda: ctx.kazoo, f"{ctx.hostname}:{provider.name}",
                              self.wake, on_round_trip=ctx.metrics.zk_round_trip),
            executor=ThreadPoolExecutor(max_workers=ctx.tuning.executor_workers,
                                        thread_name_prefix=f"cloud-{provider.name}"),
            wake=self.wake, log=logging.LoggerAdapter(log, {"provider": provider.name}),
            fence=fence or NoFence())
        adapter.fence = scope.fence.check   # every cloud call waits for proof of the lease
        adapter.observe_call = lambda call, seconds, error: ctx.metrics.cloud_call(
            provider.name, call, seconds, error)
        adapter.statsd = ctx.metrics.statsd_config(f"nodepool.task.{provider.name}")
        self.cloud = CloudView(scope, reads_limits=adapter.launches)
        self.deletions = Deletions(scope, self.cloud)
        self.capacity = Capacity(
            scope, self.cloud,
            in_flight=lambda: self.launches.nodes() + self.spares.starting_nodes())
        self.launches = Launches(scope, self.cloud, self.capacity, self.deletions)
        self.supply = CloudSupply(scope, self.launches, self.capacity) if adapter.launches \
            else StandingSupply(scope, self.launches, self.provider_nodes)
        self._build_pools()
        self.spares = Spares(scope, self.launches, self.capacity, self.cloud,
                             launches_spares=self.supply.launches_nodes)
        self.sweep = Sweep(scope, self.deletions, self.launches.resume, self._busy,
                           self.spares.unnamed_starting, can_resume=self.supply.launches_nodes)
        self.requests = Requests(scope, self.supply, self.launches, self.spares, self.sweep,
                                 self.capacity, self.cloud, self._absorb, self.deletions)
        self.leaks = Leaks(scope, lambda: self.launches.tasks,
                           Vanished(scope, self.deletions.lock_for_deletion))
        # Wired once: how launches end is an event for the request part; a static
        # supply claims freed hosts through it; the listing's pace follows the waits.
        self.launches.outcomes = self.requests.holding
        if isinstance(self.supply, StandingSupply):
            self.supply.claim_ready = self.requests.taking.claim_ready
        self.cloud.follow_waits(lambda: self.launches.waits() + self.deletions.waits())
        self.steps = self._pass_steps()
        self._zk_lost_said = False
        self._fenced = True        # until the first proof (fence.py), silently
        self._fence_said = False

    def _build_pools(self) -> None:
        ctx, provider = self.scope.ctx, self.scope.provider
        for pool_cfg in provider.pools.values():
            pool_id = (f"{ctx.hostname}-PoolWorker.{provider.name}-{pool_cfg.name}-"
                       f"{uuid.uuid4().hex}")
            view = PoolView(id=pool_id, provider=provider.name, name=pool_cfg.name,
                            labels=frozenset(pool_cfg.labels),
                            max_servers=self.supply.pool_max_servers(pool_cfg),
                            priority=pool_cfg.priority, launches=self.supply.launches_nodes)
            self.scope.pools[pool_cfg.name] = PoolState(cfg=pool_cfg, view=view)

    # -- what the launcher and min-ready call (other threads) ---------------------------

    @property
    def pools(self) -> dict[str, PoolState]:
        return self.scope.pools

    @property
    def spare_labels(self) -> dict[str, int]:
        return self.spares.spare_labels

    def want_spares(self, label: str, count: int) -> None:
        self.spares.want_spares(label, count)

    def spare_status(self) -> SpareStatus:
        return self.spares.spare_status()

    def request_full_cleanup(self) -> None:
        """Timer: look at every node again (ages, holds, anything an event missed)."""
        self.sweep.want_full()
        self.wake()

    def refresh_quota(self) -> None:
        """The quota job: re-read the cloud's limits."""
        self.cloud.refresh_limits()

    def request_leak_scan(self) -> None:
        self.leaks.want_scan()

    def wake(self) -> None:
        # Set already: the loop has not woken yet, and what was queued before this
        # call is taken in by the pass it wakes for (it clears the flag first).
        if not self.wakeup.is_set():
            self.wakeup.set()

    def notify(self, event) -> None:
        """A cache event (on the cache's thread): note what changed, wake the loop."""
        if event.kind in (zkcache.NODE, zkcache.NODE_LOCK):
            node = event.value
            if node is None or node.provider == self.name:
                self._changes.append(event.id)
            self.requests.launch_moved(event.id)
        elif event.kind == zkcache.REQUEST:
            if event.value is None:
                self._changes.append(("request-gone", event.id))
            elif event.value.state == RequestState.REQUESTED:
                self.requests.request_arrived(event.id)
            self.requests.request_event(event.id)
        elif event.kind == zkcache.POOL_COMPONENT:
            self.requests.deferral.want_walk()   # other pools' priorities and pauses
        elif event.kind in (zkcache.LAUNCHER_COMPONENT, zkcache.LEASE):
            self.requests.spread_moved()
        self.wake()

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        ctx, index = self.scope.ctx, self.scope.index
        for node in ctx.cache.nodes():
            index.update(node.id, node, ctx.cache.is_node_locked(node.id))
        for pool in self.pools.values():
            pool.component = ctx.registry.register_pool(
                pool.view.id, self.name, pool.cfg.name, sorted(pool.view.labels),
                priority=pool.cfg.priority, paused=False)
        self.thread = threading.Thread(target=self._run, name=f"provider-{self.name}",
                                       daemon=True)
        self.thread.start()
        self.scope.log.info("Provider %s started with pools %s", self.name, ", ".join(self.pools))

    def stop(self, timeout: float = 20.0, hand_back: bool = True) -> None:
        """Stop taking work; hand pending requests back; leave launches resumable."""
        self.scope.stopping = True
        self.wake()
        started = time.monotonic()
        if self.thread is not None:
            self.thread.join(timeout)
        # A static slot's node already sent is in the cache before the next owner looks.
        self.supply.settle(SETTLE_CREATES if self.scope.ctx.zk.connected else 0.0)
        if hand_back:
            # Cloud calls under way end before anything is handed back (and before the
            # lease goes): the next owner then finds by its tag a server being created.
            self._drain_calls(max(1.0, timeout - (time.monotonic() - started)))
        if hand_back and self.scope.ctx.zk.connected:
            try:
                self.requests.holding.hand_back()
                self.launches.hand_back()
                self.deletions.hand_back()
            except Exception:
                self.scope.log.exception("Handing back work of provider %s failed", self.name)
        for pool in self.pools.values():
            if pool.component is not None:
                pool.component.unregister()
        self.scope.executor.shutdown(wait=False, cancel_futures=True)
        self.scope.adapter.stop()
        self.scope.log.info("Provider %s stopped", self.name)

    def _drain_calls(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the cloud calls already sent; queued ones are dropped."""
        drain = threading.Thread(target=self.scope.executor.shutdown, name=f"drain-{self.name}",
                                 kwargs={"wait": True, "cancel_futures": True}, daemon=True)
        drain.start()
        drain.join(timeout)
        if drain.is_alive():
            self.scope.log.warning("Provider %s: cloud calls still under way after %.0fs; "
                                   "handing back anyway", self.name, timeout)

    def _run(self) -> None:
        scope = self.scope
        while not scope.stopping:
            timeout = max(0.0, min(scope.tuning.idle_wait, self._next_timer() - time.monotonic()))
            self.wakeup.wait(timeout)
            self.wakeup.clear()
            if scope.stopping:
                break
            if not scope.ctx.zk.connected:
                continue  # suspended: act again once the session is back
            if not self._lease_proven():
                continue  # may have lost the lease: neither decide nor write (fence.py)
            try:
                started = time.monotonic()
                self.steps.run(started)
                scope.ctx.metrics.loop_pass(self.name, time.monotonic() - started)
                self._zk_lost_said = False
            except ZOOKEEPER_LOST as e:
                # Expected at a leader loss or after a pause; recovery is the session's.
                self._resync()
                if not self._zk_lost_said:
                    self._zk_lost_said = True
                    scope.log.warning("Provider %s: ZooKeeper connection lost during a pass "
                                      "(%s); waiting for the session", self.name,
                                      type(e).__name__)
            self.passes += 1

    def _lease_proven(self) -> bool:
        """Is our lease held for sure? Says so when that changes; while not, the loop
        looks again every FENCED_POLL seconds (the session probe answers within T/5)."""
        proven = self.scope.fence.holds()
        if proven == self._fenced:
            self._fenced = not proven
            if self._fenced:   # it was proven before: say it
                self._fence_said = True
                self.scope.log.warning("Provider %s: no recent proof that our lease is held "
                                       "(ZooKeeper session); pausing until there is",
                                       self.name)
            elif self._fence_said:
                self._fence_said = False
                self.scope.log.info("Provider %s: lease proven again; resuming", self.name)
        return proven

    # -- a pass ----------------------------------------------------------------------------

    def _pass_steps(self) -> GuardedSteps:
        """A pass: take in what happened (sync), then decide and act; a requestor waiting
        on a ready node goes first. Each step fails and backs off on its own."""
        sync = [
            ("absorb", lambda now: self._absorb()),           # cache events: index, nodes to see
            ("sweep sync", lambda now: self.sweep.sync()),    # a hold or ready age expired
            ("collect launches", self.launches.collect),      # cloud steps, keyscans, writes
            ("collect deletions", self.deletions.collect),
            ("spare starts", lambda now: self.spares.advance_starts()),   # creates and locks
            ("deletion locks", lambda now: self.deletions.settle_locks()),
            ("cloud sync", lambda now: self.cloud.sync()),    # the listing and the limits
            ("leaks sync", lambda now: self.leaks.sync()),    # a leak listing came: judge it
        ]
        act = [
            ("resume orphans", lambda now: self.sweep.first_pass()),   # before serving
            ("check handlers", lambda now: self.requests.holding.check_handlers()),   # fill, fulfil
            ("serve waiting", lambda now: self.requests.serve_waiting()),   # a walk, or new
            ("cloud act", self.cloud.act),                    # a listing or limits that are due
            ("leaks act", lambda now: self.leaks.act()),      # a leak scan that is due
            ("retry removals", lambda now: self.deletions.retry_removals()),
            ("sweep apply", lambda now: self.sweep.apply()),  # delete, release, resume
            ("serve new", lambda now: self.requests.serve_new_requests()),   # came meanwhile
            ("supply", self.supply.act),                      # static: free slots become ready
            ("advance launches", self.launches.advance),      # machines whose step is due
            ("advance deletions", self.deletions.advance),
            ("serve new again", lambda now: self.requests.serve_new_requests()),
            ("spare asks", self.spares.serve_spare_asks),     # after requests: pools they paused
            ("publish pauses", lambda now: self._publish_pauses()),   # a no-op when unchanged
        ]
        return GuardedSteps(f"provider {self.name}", self.scope.log, self.scope.tuning,
                            sync + act, on_failure=self._resync)

    def _resync(self) -> None:
        """A pass was cut short (ZooKeeper lost, a step failed): what it had taken from
        its queues may not have been acted on, so look at every request and node again."""
        self.requests.deferral.want_walk()
        self.sweep.want_full()

    def _publish_pauses(self) -> None:
        for pool in self.pools.values():
            if pool.component is not None:
                pool.component.update(paused=pool.paused)

    def _absorb(self) -> None:
        """Fold the changes the cache reported into the index and the sweep."""
        cache, index = self.scope.ctx.cache, self.scope.index
        while self._changes:
            change = self._changes.popleft()
            if isinstance(change, tuple):   # a request vanished: revisit its nodes
                self.sweep.changed_all(index.allocated.get(change[1], set()))
                self.requests.forget_request(change[1])
                continue
            index.update(change, cache.get_node(change), cache.is_node_locked(change))
            self.sweep.changed(change)

    def _next_timer(self) -> float:
        """The earliest monotonic time at which something is due without an event."""
        now = time.monotonic()
        if self._fenced:
            return now + FENCED_POLL
        times = [now + self.scope.tuning.idle_wait, *self.sweep.timers(),
                 *self.launches.timers(), *self.deletions.timers(), *self.cloud.timers(),
                 *self.supply.timers(), *self.requests.timers(now), *self.steps.timers()]
        return min(times)

    def _busy(self) -> set[str]:
        """Node ids some part is working on: the sweep leaves them alone."""
        busy = self.deletions.busy() | set(self.launches.tasks) | \
            self.requests.handler_node_ids()
        return busy | {n.id for n in self.spares.starting_nodes() if n.id is not None}

    def provider_nodes(self) -> list[Node]:
        """Our provider's nodes: the cache overlaid with the launches under way."""
        nodes = {n.id: n for n in self.scope.ctx.cache.nodes() if n.provider == self.name}
        for node in self.launches.nodes():
            nodes[node.id] = node
        return list(nodes.values())
