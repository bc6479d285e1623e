"""Requests we hold: how their launches end, their fulfilment, release and cancel.

A part of the request part (handling.py) of one provider worker, on its loop
thread. It hears how launches end (the `LaunchOutcomes` events of
launches.py), fills the empty slots again each pass, and ends each held
request: fulfilled (nodes unlocked before the single fulfil write, as
PROTOCOL.md's hand-off says), given up (declined), cancelled by its
requestor, or handed back on stop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nodepool import errors
from nodepool.launcher.handler import RequestHandler
from nodepool.launcher.launches import Launches
from nodepool.launcher.scope import ProviderScope
from nodepool.launcher.spares import Spares
from nodepool.launcher.supply import AT_QUOTA
from nodepool.launcher.sweep import Sweep
from nodepool.launcher.tasks import LaunchTask
from nodepool.model import NodeRequest, RequestState

if TYPE_CHECKING:
    from nodepool.launcher.handling import Requests
    from nodepool.launcher.taking import Taking

log = logging.getLogger("nodepool.launcher.requests")


class Holding:
    """The held requests of one provider worker's request part."""

    def __init__(self, scope: ProviderScope, launches: Launches, spares: Spares,
                 sweep: Sweep, book: Requests, taking: Taking):
        self.scope = scope
        self.launches = launches
        self.spares = spares
        self.sweep = sweep
        self.book = book       # the requests we hold, and what the walks remember
        self.taking = taking

    # -- launch outcomes (events from the launch part) -----------------------------------

    def launch_ready(self, task: LaunchTask) -> bool:
        """A launched node is ready; True if a request keeps it locked until fulfilment."""
        h = self.book.handlers.get(task.request_id or "")
        if h is None or task.node.id not in h.slots:
            return False
        h.ready.add(task.node.id)
        h.held[task.node.id] = task
        self.book.notes.node_ready(h.request.id, h.pool, task.node.id)
        return True

    def launch_failed(self, task: LaunchTask, reason: str) -> None:
        h = self.book.handlers.get(task.request_id or "")
        if h is not None:
            h.failed = f"node {task.node.id} failed: {reason}"
            h.slots = [None if s == task.node.id else s for s in h.slots]
        elif task.request_id is None:
            self.spares.launch_failed(task)

    def launch_aborted(self, task: LaunchTask, reason: str) -> None:
        """Quota: the pool pauses; the slot is launched again once quota frees."""
        task.pool.paused, task.pool.pause_reason = True, reason
        self.book.notes.quota_refused(task.request_id, task.pool, reason)
        h = self.book.handlers.get(task.request_id or "")
        if h is not None:
            h.slots = [None if s == task.node.id else s for s in h.slots]
            h.waiting = AT_QUOTA

    # -- progress -----------------------------------------------------------------------

    def check_handlers(self) -> None:
        waiting_pools = set()
        for h in list(self.book.handlers.values()):
            if self.scope.ctx.cache.get_request(h.request.id) is None:
                log.info("request=%s Cancelled by its requestor", h.request.id)
                self._cancel(h)
                continue
            if h.failed:
                self._give_up(h, h.failed)
                continue
            self.taking.fill(h, first=False)
            if h.missing() and h.waiting:
                waiting_pools.add(h.pool.cfg.name)
            if not h.missing() and h.ready >= set(h.slots) and \
                    all(self.launches.write_done(t) for t in h.held.values()):
                self._fulfil(h)
        deferring = self.book.deferral.deferring
        for pool in self.scope.pools.values():    # between walks, a deferring pool stays paused
            pool.paused = pool.cfg.name in waiting_pools or pool.cfg.name in deferring
        self.book.waiting_pools = waiting_pools

    def _told_fulfilled(self, req: NodeRequest, h: RequestHandler, launched: bool) -> None:
        """Our fulfilment is in ZooKeeper: the log, the request's timeline, the metrics."""
        log.info("request=%s Fulfilled with %s", req.id, ", ".join(req.nodes))
        self.book.notes.fulfilled(req.id, h.pool, req.nodes)
        self.scope.ctx.metrics.handed_over(req, not launched, self.scope.ctx.clock())

    def _fulfil(self, h: RequestHandler) -> None:
        effects = self.scope.effects
        launched = bool(h.held)          # some node was launched for it (metrics)
        for task in h.held.values():     # unlock every node first (hand-off step 4)
            effects.unlock_async(task.lock)
        h.held.clear()
        req = h.request
        for _ in range(3):
            if req.state == RequestState.FULFILLED and req.nodes == list(h.slots) and \
                    req is not h.request:
                self._told_fulfilled(req, h, launched)
                break   # our own write went through; only its answer was lost
            req.nodes = list(h.slots)
            if req.state != RequestState.FULFILLED:   # a retry after a lost answer
                req.set_state(RequestState.FULFILLED)
            try:
                effects.write_request(req, h.lock)
                self._told_fulfilled(req, h, launched)
                break
            except errors.VersionConflict:
                # Someone wrote it without our lock; write our fulfilment over what is there.
                req = effects.read_request(req.id)
                if req is None:
                    self._release_slots(h)
                    break
            except (errors.NotFound, errors.LockFailed) as e:
                log.info("request=%s Not fulfilled: %s", req.id, e)
                self._release_slots(h)
                break
        self._done(h)

    def _release_slots(self, h: RequestHandler, handing_back: bool = False) -> None:
        """Give back every node of a request: building ones finish as spares, unless
        `handing_back` (the launch part hands them back still serving it)."""
        for node_id in [s for s in h.slots if s is not None]:
            if node_id in self.launches.tasks and handing_back:
                continue
            if self.launches.disown(node_id):
                continue
            held = h.held.pop(node_id, None)
            try:
                if held is not None:
                    held.node.allocated_to = None
                    self.launches.write(held)
                    self.scope.effects.unlock_async(held.lock)
                elif node_id in h.ready:
                    self.sweep.release(node_id, expected_request=h.request.id)
            except (errors.LockFailed, errors.NotFound, errors.VersionConflict):
                continue  # cleanup releases it later: its request is gone or reset
        h.slots = [None] * len(h.slots)

    def _cancel(self, h: RequestHandler) -> None:
        self._release_slots(h)
        self._done(h)

    def _give_up(self, h: RequestHandler, reason: str) -> None:
        self._release_slots(h)
        self.book.decline(h.request.id, h.pool, reason, lock=h.lock)
        self._done(h)

    def _done(self, h: RequestHandler) -> None:
        self.scope.effects.unlock_async(h.lock)
        self.book.handlers.pop(h.request.id, None)
        self.book.finished.add(h.request.id)
        self.book.track(h.request.id, False)

    def hand_back(self) -> None:
        """On stop: pending requests go back to `requested` (waits for each)."""
        effects = self.scope.effects
        for h in list(self.book.handlers.values()):
            self._release_slots(h, handing_back=True)
            try:
                req = effects.read_request(h.request.id)
                if req is not None and req.state == RequestState.PENDING:
                    req.set_state(RequestState.REQUESTED)
                    effects.write_request(req, h.lock)
            except (errors.NotFound, errors.VersionConflict, errors.LockFailed):
                pass
            self._done(h)


