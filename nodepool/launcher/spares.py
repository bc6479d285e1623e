"""Spare launches for min-ready: asked on the launcher thread, started by the provider loop.

A part of ProviderWorker. min-ready asks a worker of this process for
unallocated nodes of a label (`want_spares`); the loop starts them like any
launch, under the same quota rules, but for nobody (`allocated_to` None), so
they finish as ready spares and a request that comes meanwhile adopts them.
No node request is written. What is asked and under way is published under
one lock (`spare_status`), so min-ready counts each such node once: as an
ask, then as a launch, until the cache shows it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from typing import Any

from nodepool import errors
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.launches import Launches
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.launcher.tasks import LaunchTask, Phase
from nodepool.model import Node
from nodepool.zk import locks, paths


@dataclasses.dataclass(eq=False)
class Starting:
    """A spare launch whose node create, then fresh lock, is in flight (no loop waits)."""

    pool: PoolState
    label: str
    node: Node
    created: Any                   # kazoo result of the node's create
    locked: locks.LockAttempt | None = None


@dataclasses.dataclass(frozen=True)
class SpareStatus:
    """A consistent view of one worker's spare launches, for min-ready."""

    asked: dict[str, int]       # label -> nodes asked for, not started yet
    launching: dict[str, str]   # node id -> label: spare launches under way (or just ready)
    refused: dict[str, float]   # label -> monotonic time an ask for it was last dropped
    failed: list[str]           # labels whose spare launch failed for good since last asked


class Spares:
    """The min-ready side of a provider worker: asks, spare launches starting, their status."""

    def __init__(self, scope: ProviderScope, launches: Launches, capacity: Capacity,
                 cloud: CloudView, launches_spares: bool):
        self.scope = scope
        self.launches = launches
        self.capacity = capacity
        self.cloud = cloud
        self.spare_lock = threading.Lock()
        self._spare_asks: dict[str, int] = {}
        self._spare_launching: dict[str, str] = {}
        self._spare_refused: dict[str, float] = {}
        self._spare_failed: list[str] = []
        self._spare_tasks: dict[str, LaunchTask] = {}                   # loop thread only
        self._spare_unseen: dict[str, tuple[LaunchTask, float]] = {}   # loop thread only
        self._spare_reason: dict[str, str] = {}                         # loop thread only
        self.starting: list[Starting] = []                             # loop thread only
        # label -> best (lowest) priority of our pools offering it; fixed for our life.
        self.spare_labels: dict[str, int] = {}
        if launches_spares:   # static hosts are registered, never launched
            for pool in scope.pools.values():
                for label in pool.cfg.labels:
                    self.spare_labels[label] = min(self.spare_labels.get(label, math.inf),
                                                   pool.cfg.priority)

    # -- called by min-ready, on the launcher thread --------------------------------

    def want_spares(self, label: str, count: int) -> None:
        """Launch `count` more unallocated `label` nodes (dropped if they cannot start now)."""
        with self.spare_lock:
            self._spare_asks[label] = self._spare_asks.get(label, 0) + count
        self.scope.wake()

    def spare_status(self) -> SpareStatus:
        """What is asked and under way; the failures it reports are reported once."""
        with self.spare_lock:
            failed, self._spare_failed = self._spare_failed, []
            return SpareStatus(dict(self._spare_asks), dict(self._spare_launching),
                               dict(self._spare_refused), failed)

    # -- on the loop thread -----------------------------------------------------------

    def serve_spare_asks(self, now: float) -> None:
        """Start the spare launches asked for, as quota allows; publish what is under way.

        The asks served are taken off in the same locked step that publishes
        the launches they started, so min-ready never sees neither.
        """
        with self.spare_lock:
            asks = dict(self._spare_asks)
        started: dict[str, int] = {}
        try:
            for label, count in asks.items():
                started[label] = self._launch_spares(label, count)
        finally:
            with self.spare_lock:
                for label, count in asks.items():
                    left = self._spare_asks.get(label, 0) - count
                    if left > 0:
                        self._spare_asks[label] = left
                    else:
                        self._spare_asks.pop(label, None)
                    if label in started:
                        if started[label] < count:
                            self._spare_refused[label] = now
                        else:
                            self._spare_refused.pop(label, None)
                self._publish_spares(now)

    def _launch_spares(self, label: str, count: int) -> int:
        """Start up to `count` spare launches of `label` in our pools, best priority first."""
        if self.scope.stopping or label not in self.spare_labels:
            return 0
        pools = sorted((p for p in self.scope.pools.values() if label in p.cfg.labels),
                       key=lambda p: p.cfg.priority)
        started, reasons = 0, []
        for pool in pools:
            if started >= count:
                break
            if pool.paused:     # requests wait for this pool's quota: they go first
                reasons.append(f"pool {pool.cfg.name} is paused ({pool.pause_reason or 'quota'})")
                continue
            missing = self.cloud.missing_image(pool.cfg, [label])
            if missing:
                reasons.append(missing)
                continue
            here = 0
            while started < count:
                blocker = self.capacity.launch_blocker(pool, [label], None)
                if blocker is not None:
                    reasons.append(f"pool {pool.cfg.name} at its {blocker} limit")
                    break
                self._start_spare(pool, label)
                started += 1
                here += 1
            if here:
                self.scope.log.info("provider=%s min-ready: launching %d spare %s node(s) in "
                                    "pool %s", self.scope.name, here, label, pool.cfg.name)
        if started < count:
            reason = "; ".join(reasons) or "no pool offers it"
            # Asked again every few seconds while short: say it once per reason.
            level = logging.INFO if self._spare_reason.get(label) != reason else logging.DEBUG
            self._spare_reason[label] = reason
            self.scope.log.log(level, "provider=%s min-ready: %d spare %s node(s) not launched "
                               "now: %s", self.scope.name, count - started, label, reason)
        else:
            self._spare_reason.pop(label, None)
        return started

    def _publish_spares(self, now: float) -> None:
        """Under `spare_lock`: our spare launches by node id, for min-ready to count.

        A spare that got ready stays listed until the cache shows it (min-ready
        counts it from there on); one that failed or was adopted by a request
        leaves the list at once.
        """
        if not self.spare_labels:
            return
        tasks = {t.node.id: t for t in self.launches.tasks.values()
                 if t.request_id is None and t.node.type}
        cache = self.scope.ctx.cache
        for node_id, task in self._spare_tasks.items():
            if node_id not in tasks and task.phase == Phase.DONE and \
                    task.request_id is None and cache.get_node(node_id) is None:
                self._spare_unseen.setdefault(node_id, (task, now))
        unseen_max = self.scope.tuning.spare_unseen_max
        for node_id, (task, since) in list(self._spare_unseen.items()):
            if cache.get_node(node_id) is not None or now - since > unseen_max:
                del self._spare_unseen[node_id]
            else:
                tasks.setdefault(node_id, task)
        self._spare_tasks = tasks
        self._spare_launching = {node_id: t.node.type[0] for node_id, t in tasks.items()}
        for start in self.starting:     # no id yet: a key no cache node has
            self._spare_launching[start.node.id or f"starting-{id(start)}"] = start.label

    # -- starting without waiting ----------------------------------------------------

    def _start_spare(self, pool: PoolState, label: str) -> None:
        """Send the node's create; `advance_starts` locks it and starts the launch.

        A spare is for nobody, so no one waits for it: its two round trips
        (create, then the fresh lock) overlap the loop's other work instead of
        holding up the hand-overs of the same pass.
        """
        node = self.launches.new_node(pool, label)
        created = self.scope.effects.create_node_async(node)
        self.starting.append(Starting(pool, label, node, created))

    def starting_nodes(self) -> list[Node]:
        return [s.node for s in self.starting]

    def unnamed_starting(self) -> bool:
        """Is a spare's create unanswered (its node may show in the cache without an id
        we know)?"""
        return any(s.node.id is None for s in self.starting)

    def advance_starts(self) -> None:
        """Each pass: take the answers that came; lock created nodes; launch locked ones."""
        effects = self.scope.effects
        for start in list(self.starting):
            if start.locked is None:
                if not start.created.ready():
                    continue
                try:
                    path, _ = start.created.get()
                except Exception as e:
                    self.starting.remove(start)
                    self.scope.log.warning("provider=%s min-ready: creating a spare %s node "
                                           "failed: %s", self.scope.name, start.label, e)
                    continue
                start.node.id, start.node.version = paths.basename(path), 0
                start.locked = effects.lock_fresh_node_async(start.node.id)
                continue
            if not start.locked.ready():
                continue
            self.starting.remove(start)
            try:
                lock = effects.finish_fresh_node_lock(start.locked, start.node.id)
            except (errors.LockFailed, errors.NotFound) as e:
                # Someone else holds it (or removed it): cleanup decides its fate.
                self.scope.log.warning("node=%s provider=%s Spare not started: %s",
                                       start.node.id, self.scope.name, e)
                continue
            self.launches.begin(start.pool, start.label, start.node, lock)

    def launch_failed(self, task: LaunchTask) -> None:
        """A launch for nobody failed for good: min-ready backs off the label."""
        if task.node.type:
            with self.spare_lock:
                self._spare_failed.append(task.node.type[0])
