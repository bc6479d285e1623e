"""One provider's worker: the loop that drives its requests, launches and deletions.

One thread per provider runs `_tick()` whenever something may have changed
(a cache event, a finished cloud call, a keyscan, a timer), never on a fixed
beat. Blocking cloud calls go to a small executor per provider; everything
that writes ZooKeeper happens on the loop thread, one place, under locks.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from nodepool.drivers.adapter import Adapter, Listing, Resources
from nodepool.launcher import quota
from nodepool.launcher.context import LauncherContext
from nodepool.launcher.handling import RequestHandling
from nodepool.launcher.indexes import ProviderIndex
from nodepool.launcher.leaks import LeakCleanup
from nodepool.launcher.lifecycle import Lifecycle
from nodepool.launcher.planner import PoolView
from nodepool.launcher.spares import SpareLaunching
from nodepool.model import Node, RequestState
from nodepool.zk import cache as zkcache
from nodepool.zk import images

log = logging.getLogger("nodepool.launcher.provider")

EXECUTOR_WORKERS = 4
# Machines waiting on the cloud (BUILD -> ACTIVE, deletes) share one listing,
# taken more often the younger the youngest wait is (an eighth of its age):
# a server that boots in 1 s is seen within ~0.1 s of it, one that takes a
# minute costs a list call every 2 s, not fifty a second.
LISTING_MIN_INTERVAL = 0.02
LISTING_MAX_INTERVAL = 2.0
LISTING_AGE_FRACTION = 1 / 8
IDLE_WAIT = 60.0
IMAGE_CACHE_SECONDS = 5.0
REQUEST_RETRY = 0.1   # seconds before a request whose take failed is looked at again


@dataclasses.dataclass(eq=False)
class PoolState:
    """One of this provider's pools at run time."""

    cfg: Any
    view: PoolView
    component: Any = None
    paused: bool = False
    pause_reason: str = ""


class ProviderWorker(RequestHandling, Lifecycle, LeakCleanup, SpareLaunching):
    """Drives one provider for as long as this launcher holds the provider's lease."""

    def __init__(self, ctx: LauncherContext, provider: Any, adapter: Adapter):
        self.ctx = ctx
        self.provider = provider
        self.adapter = adapter
        self.log = logging.LoggerAdapter(log, {"provider": provider.name})
        self.name = provider.name
        self.executor = ThreadPoolExecutor(max_workers=EXECUTOR_WORKERS,
                                           thread_name_prefix=f"cloud-{provider.name}")
        self.wakeup = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.pools: dict[str, PoolState] = {}
        self.listing: Listing | None = None
        self.listing_future: Future | None = None
        self.listing_wanted = False
        self.listing_started = 0.0
        self.limits: Resources | None = None
        self.limits_future: Future | None = None
        self.limits_stale = True
        self.standing: dict[str, Any] = {}     # static slots by external id
        self.standing_retry: dict[str, float] = {}
        self.resumed = False
        self.passes = 0   # loop passes completed (tests wait on it: "two more passes went by")
        self.image_cache: dict[str, tuple[Any, float]] = {}
        self.index = ProviderIndex(provider.name, self._node_cost)
        self.changes: collections.deque = collections.deque()
        self.new_requests: collections.deque = collections.deque()  # ids, since serve_requests
        self.dirty: set[str] = set()
        self.full_cleanup = True
        self.expiry_at = math.inf     # wall-clock time of the next hold/ready-age expiry
        self.init_requests()
        self.init_lifecycle()
        self.init_leaks()
        for pool_cfg in provider.pools.values():
            pool_id = (f"{ctx.hostname}-PoolWorker.{provider.name}-{pool_cfg.name}-"
                       f"{uuid.uuid4().hex}")
            view = PoolView(id=pool_id, provider=provider.name, name=pool_cfg.name,
                            labels=frozenset(pool_cfg.labels), max_servers=pool_cfg.max_servers,
                            priority=pool_cfg.priority, launches=adapter.launches)
            self.pools[pool_cfg.name] = PoolState(cfg=pool_cfg, view=view)
        self.init_spares()

    # -- life -------------------------------------------------------------

    def start(self) -> None:
        for node in self.ctx.cache.nodes():
            self.index.update(node.id, node, self.ctx.cache.is_node_locked(node.id))
        for pool in self.pools.values():
            pool.component = self.ctx.registry.register_pool(
                pool.view.id, self.provider.name, pool.cfg.name, sorted(pool.view.labels),
                priority=pool.cfg.priority, paused=False)
        if not self.adapter.launches:
            self.standing = {i.external_id: i for i in self.adapter.standing_instances()}
            self._size_static_pools()
        self.thread = threading.Thread(target=self._run, name=f"provider-{self.name}",
                                       daemon=True)
        self.thread.start()
        self.log.info("Provider %s started with pools %s", self.name, ", ".join(self.pools))

    def stop(self, timeout: float = 20.0, hand_back: bool = True) -> None:
        """Stop taking work; hand pending requests back; leave launches resumable."""
        self.stopping = True
        self.wake()
        if self.thread is not None:
            self.thread.join(timeout)
        if hand_back and self.ctx.zk.connected:
            try:
                self.hand_back(timeout)
            except Exception:
                self.log.exception("Handing back work of provider %s failed", self.name)
        for pool in self.pools.values():
            if pool.component is not None:
                pool.component.unregister()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.adapter.stop()
        self.log.info("Provider %s stopped", self.name)

    def wake(self) -> None:
        self.wakeup.set()

    def notify(self, event) -> None:
        """A cache event (on the cache's thread): note what changed, wake the loop."""
        if event.kind in (zkcache.NODE, zkcache.NODE_LOCK):
            node = event.value
            if node is None or node.provider == self.name:
                self.changes.append(event.id)
        elif event.kind == zkcache.REQUEST:
            if event.value is None:
                self.changes.append(("request-gone", event.id))
            elif event.value.state == RequestState.REQUESTED:
                self.new_requests.append(event.id)
            self.request_event(event.id)
        elif event.kind == zkcache.POOL_COMPONENT:
            self.walk_wanted = True     # other pools' priorities and pauses decide triage
        self.wake()

    def request_full_cleanup(self) -> None:
        """Timer: look at every node again (ages, holds, anything an event missed)."""
        self.full_cleanup = True
        self.wake()

    def _absorb(self) -> None:
        """Fold the changes the cache reported into the indexes and the dirty set."""
        cache = self.ctx.cache
        while self.changes:
            change = self.changes.popleft()
            if isinstance(change, tuple):   # a request vanished: revisit its nodes
                self.dirty |= self.index.allocated.get(change[1], set())
                self.forget_request(change[1])
                continue
            self.index.update(change, cache.get_node(change), cache.is_node_locked(change))
            self.dirty.add(change)

    def _run(self) -> None:
        while not self.stopping:
            timeout = max(0.0, min(IDLE_WAIT, self._next_timer() - time.monotonic()))
            self.wakeup.wait(timeout)
            self.wakeup.clear()
            if self.stopping:
                break
            if not self.ctx.zk.connected:
                continue  # suspended: act again once the session is back
            try:
                self._tick()
            except Exception:
                self.log.exception("Provider %s loop pass failed; continuing", self.name)
                time.sleep(0.05)  # a fault must not become a busy loop

    def _tick(self) -> None:
        # Hand-over first: a requestor waiting on a ready node should not wait
        # behind deletions and launches of this same pass.
        now = time.monotonic()
        self._absorb()
        if self.ctx.clock() >= self.expiry_at:
            self.full_cleanup = True
        if not self.resumed:
            # First pass after taking the provider: resume orphaned launches before
            # serving, so a request gets the server already booting, not a second one.
            self.apply_cleanup()
            self.resumed = True
        self.collect_finished(now)
        self.advance_starts()
        self.advance_deletion_locks()
        self.check_handlers()
        self.serve_waiting()
        self._refresh_listing(now)
        self._refresh_limits()
        self.leak_tick()
        self.retry_removals()
        self.apply_cleanup()
        self.serve_new_requests()    # those that arrived while we deleted
        if not self.adapter.launches:
            self.register_standing(now)
        self.advance_tasks(now)
        self.serve_new_requests()
        # After requests: a pool they paused for quota launches no spares.
        self.serve_spare_asks(now)
        self._update_paused()
        self.passes += 1

    def _next_timer(self) -> float:
        """The earliest monotonic time at which something is due without an event."""
        now = time.monotonic()
        times = [now + IDLE_WAIT]
        if self.expiry_at != math.inf:
            times.append(now + (self.expiry_at - self.ctx.clock()) + 0.01)
        times += self.task_timers()
        if self.listing_wanted and self.listing_future is None:
            times.append(self._listing_due())
        times += self.standing_retry.values()
        if self.retry_requests:
            times.append(now + REQUEST_RETRY)
        return min(times)

    # -- shared cloud state -------------------------------------------------

    def _call(self, fn, *args) -> Future:
        future = self.executor.submit(fn, *args)
        future.add_done_callback(lambda _: self.wake())
        return future

    def _refresh_listing(self, now: float) -> None:
        if self.listing_future is not None and self.listing_future.done():
            future, self.listing_future = self.listing_future, None
            try:
                instances = future.result()
                self.listing = Listing({i.external_id: i for i in instances},
                                       self.listing_started)
            except Exception as e:
                self.log.warning("Listing servers of %s failed: %s", self.name, e)
        if (self.listing_wanted and self.listing_future is None and
                (self.listing is None or now >= self._listing_due())):
            self.listing_wanted = False
            self.listing_started = now   # before the call: what it shows is at least this new
            self.listing_future = self._call(self.adapter.list_instances)

    def _refresh_limits(self) -> None:
        if self.limits_future is not None and self.limits_future.done():
            future, self.limits_future = self.limits_future, None
            try:
                self.limits = future.result()
                self.limits_stale = False
            except Exception as e:
                self.log.warning("Reading quota of %s failed: %s", self.name, e)
        if self.limits_stale and self.limits_future is None and self.adapter.launches:
            self.limits_stale = False
            self.limits_future = self._call(self.adapter.quota_limits)

    def _listing_due(self) -> float:
        if self.listing is None:
            return 0.0
        now = time.monotonic()
        waits = [now - t.waiting_since for t in (*self.launches.values(), *self.deletes.values())
                 if t.waiting_since is not None]
        youngest = min(waits, default=0.0)
        interval = min(LISTING_MAX_INTERVAL, max(LISTING_MIN_INTERVAL,
                                                  youngest * LISTING_AGE_FRACTION))
        return self.listing.taken_at + interval

    def refresh_quota(self) -> None:
        """Called by the maintenance job and after a quota error: re-read the cloud's limits."""
        self.limits_stale = True
        self.wake()

    # -- quota --------------------------------------------------------------

    def provider_nodes(self) -> dict[str, Node]:
        """Our provider's nodes: the cache overlaid with what we created but the cache
        may not show yet (so two launches in one pass never both take the last slot)."""
        nodes = {n.id: n for n in self.ctx.cache.nodes() if n.provider == self.name}
        for task in self.launches.values():
            nodes[task.node.id] = task.node
        return nodes

    def pending_nodes(self) -> list[Node]:
        """Launches this loop made that the cache has not reported yet."""
        return [n for n in [t.node for t in self.launches.values()] + self.starting_nodes()
                if n.id is None or not self.index.known(n.id)]

    def label_cost(self, pool_cfg: Any, label_name: str) -> Resources:
        label = pool_cfg.labels.get(label_name)
        if label is None:
            return Resources(instances=1)
        return self.adapter.label_cost(pool_cfg, label)

    def _node_cost(self, node: Node) -> Resources:
        pool = self.pools.get(node.pool or "")
        fallback = (lambda n: self.label_cost(pool.cfg, n.type[0])) if pool and node.type \
            else (lambda n: Resources(instances=1))
        return quota.node_cost(node, fallback)

    def can_launch(self, pool: PoolState, labels: list[str], tenant: str | None) -> bool:
        return self.launch_blocker(pool, labels, tenant) is None

    def launch_blocker(self, pool: PoolState, labels: list[str], tenant: str | None
                       ) -> str | None:
        """Which limit launching `labels` in `pool` would break right now, if any:
        "concurrency", "pool", "provider" or "tenant"."""
        need = Resources()
        for label in labels:
            need = need + self.label_cost(pool.cfg, label)
        mc = self.provider.max_concurrency
        if mc and mc > 0 and len(self.launches) + len(self.starting) + len(labels) > mc:
            return "concurrency"
        # Launches this loop made that the cache has not reported yet count too.
        pending = self.pending_nodes()
        in_pool = self.index.usage(pool.cfg.name) + quota.usage(
            [n for n in pending if n.pool == pool.cfg.name], self._node_cost)
        if not quota.fits(need, in_pool, quota.pool_limits(pool.cfg)):
            return "pool"
        if self.limits is not None and not getattr(pool.cfg, "ignore_provider_quota", False):
            total = self.index.usage() + quota.usage(pending, self._node_cost)
            if not quota.fits(need, total, self.limits):
                return "provider"
        limits = self.ctx.config.tenant_resource_limits.get(tenant) if tenant else None
        if limits is not None:
            tenant_nodes = [n for n in self.ctx.cache.nodes() if n.tenant_name == tenant]
            if not quota.fits(need, quota.usage(tenant_nodes, self._node_cost),
                              quota.tenant_limits(limits)):
                return "tenant"
        return None

    def fits_ever(self, pool: PoolState, labels: list[str]) -> bool:
        need = Resources()
        for label in labels:
            if label not in pool.cfg.labels:
                return True  # the label check declines it with a better reason
            need = need + self.label_cost(pool.cfg, label)
        return need.fits_in(quota.pool_limits(pool.cfg))

    def resolve_image(self, label: Any):
        """The ready upload a diskimage label boots (cached briefly: uploads change rarely)."""
        name = getattr(label, "diskimage", None)
        if not name:
            return None
        now = time.monotonic()
        cached = self.image_cache.get(name)
        if cached is not None and now - cached[1] <= IMAGE_CACHE_SECONDS:
            return cached[0]
        upload = images.latest_upload(self.ctx.kazoo, name, self.name)
        if upload is not None:   # a missing image is looked up again next time
            self.image_cache[name] = (upload, now)
        return upload

    def missing_image(self, pool: PoolState, labels: list[str]) -> str | None:
        """Why the pool cannot serve these labels for want of an image, if it cannot."""
        for name in labels:
            label = pool.cfg.labels.get(name)
            if getattr(label, "diskimage", None) and self.resolve_image(label) is None:
                return f"no ready upload of image {label.diskimage} to provider {self.name}"
        return None

    def _size_static_pools(self) -> None:
        """A static pool holds as many nodes as its hosts have slots."""
        for pool in self.pools.values():
            slots = sum(1 for i in self.standing.values() if i.pool == pool.cfg.name)
            pool.view = dataclasses.replace(pool.view, max_servers=slots)

    def _update_paused(self) -> None:
        for pool in self.pools.values():
            if pool.component is not None:
                pool.component.update(paused=pool.paused)
