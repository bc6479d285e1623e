"""Serving node requests: take, allocate ready nodes, launch, fulfil, decline, cancel.

A mixin of ProviderWorker; runs on its loop thread. Follows PROTOCOL.md's
hand-off: the request lock is held for every write, the request is re-read
after locking, nodes are unlocked before the single fulfil write.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any

from nodepool import errors
from nodepool.launcher import handover
from nodepool.launcher.deferral import Deferral
from nodepool.launcher.planner import Triage, Verdict, every_pool_declined, triage
from nodepool.model import NodeRequest, RequestState
from nodepool.zk import locks, paths, requests

log = logging.getLogger("nodepool.launcher.requests")

SPARE_CANDIDATES = 16   # spares looked at per label beyond the ones a request needs


@dataclasses.dataclass(eq=False)
class RequestHandler:
    """A request one of our pools has locked and is serving."""

    request: NodeRequest
    lock: Any
    pool: Any
    slots: list[str | None]                 # node id per node_types entry
    ready: set[str] = dataclasses.field(default_factory=set)
    # Launched nodes that are ready and still locked by us, by id (their LaunchTask).
    held: dict[str, Any] = dataclasses.field(default_factory=dict)
    waiting: str | None = None              # why it waits (quota, hosts busy)
    failed: str | None = None
    az: str | None = None

    def missing(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is None]


class RequestHandling(Deferral):
    """The request side of a provider worker."""

    def init_requests(self) -> None:
        self.init_deferral()
        self.handlers: dict[str, RequestHandler] = {}
        self.finished: set[str] = set()
        self.declined: set[tuple[str, str]] = set()
        # (request, pool) -> the request version the pool found it could take:
        # while the pool defers for quota, such a request is not triaged again.
        self.takeable: dict[tuple[str, str], int] = {}

    def handler_node_ids(self) -> set[str]:
        return {s for h in self.handlers.values() for s in h.slots if s is not None}

    def _lock_name(self) -> str:
        return f"{self.ctx.hostname}:{self.name}"

    def _track(self, request_id: str, handled: bool) -> None:
        with self.ctx.lock:
            (self.ctx.handled_requests.add if handled else self.ctx.handled_requests.discard)(
                request_id)

    # -- new requests ---------------------------------------------------------

    def serve_waiting(self) -> None:
        """Each pass: walk every waiting request if something that decided the last
        walk moved (deferral.py), else serve the new and changed ones."""
        if self.walk_needed():
            self.new_requests.clear()
            self.retry_requests.clear()
            self.serve_requests()
        else:
            self.serve_new_requests()

    def serve_new_requests(self) -> None:
        """Requests that arrived or changed (or whose take failed) since the last look."""
        ids = set(self.retry_requests)
        self.retry_requests.clear()
        while self.new_requests:
            ids.add(self.new_requests.popleft())
        if ids:
            self._absorb()
            self.serve_requests(only=ids)

    def serve_requests(self, only: set[str] | None = None) -> None:
        """Take requests in protocol order; a pool at quota defers (never fails).

        Once a pool defers a request, it takes no later one, so freed quota
        goes to the request that is first in line (a big request is not
        starved by small ones behind it). `only`: look at just these requests;
        pools still deferring since the last walk take none of them.
        """
        if self.stopping:
            return
        walk = only is None
        if walk:
            pending = self.ctx.cache.requests()
        else:
            found = (self.ctx.cache.get_request(rid) for rid in only)
            pending = sorted((r for r in found if r is not None), key=lambda r: r.sort_key)
        registered = self.ctx.registered_pools()
        pools = sorted(self.pools.values(), key=lambda p: p.cfg.priority)
        blocked = self.blocked_pools(walk)
        tenant_waits = False
        takes: list[tuple[NodeRequest, Any]] = []
        # Spares counted for requests taken earlier in this pass, by (pool, label):
        # their claims are only sent once the pass has chosen every request.
        promised: collections.Counter = collections.Counter()
        for req in pending:
            if req.state != RequestState.REQUESTED or req.id in self.handlers \
                    or req.id in self.finished:
                continue
            for pool in pools:
                if (req.id, pool.view.id) in self.declined:
                    continue
                if pool.cfg.name in blocked and \
                        self.takeable.get((req.id, pool.cfg.name)) == req.version:
                    continue   # waits for this pool's quota, as in the last pass
                verdict = triage(req, pool.view, registered,
                                 self.fits_ever(pool, req.node_types))
                if verdict.verdict == Verdict.SKIP:
                    continue
                if verdict.verdict == Verdict.TAKE:
                    missing = self.missing_image(pool, req.node_types)
                    if missing:
                        verdict = Triage(Verdict.DECLINE, missing)
                if verdict.verdict == Verdict.DECLINE:
                    self._decline(req.id, pool, verdict.reason)
                    continue
                self.takeable[(req.id, pool.cfg.name)] = req.version
                if pool.cfg.name in blocked:
                    continue
                blocker = self._blocker(req, pool, promised)
                if blocker == "tenant":
                    tenant_waits = True
                    continue   # this tenant is at its limit; others may go ahead
                if blocker is not None:
                    blocked[pool.cfg.name] = (blocker, req.id)
                    continue
                takes.append((req, pool))
                break
        self._take_all(takes)
        for name, pool in self.pools.items():
            pool.paused = name in blocked
        self.deferred(blocked, tenant_waits, walk)

    def _blocker(self, req: NodeRequest, pool, promised: collections.Counter) -> str | None:
        """From the cache alone: why the pool cannot serve this now (None = it can).

        Ready nodes and launches already under way for nobody count first;
        only the rest needs quota.
        """
        need = list(req.node_types)

        def take(labels) -> None:
            for label in labels:
                if label in need:
                    need.remove(label)
                    return
        if req.reuse or not self.adapter.launches:
            counts = {label: self.index.spare_count(pool.cfg.name, label)
                      - promised[(pool.cfg.name, label)] for label in set(need)}
            for label in list(need):
                if counts[label] > 0:
                    counts[label] -= 1
                    promised[(pool.cfg.name, label)] += 1
                    need.remove(label)
        if not need:
            return None
        if not self.adapter.launches:
            return "hosts busy"
        for task in self.launches.values():
            if task.request_id is None and task.pool is pool:
                take(task.node.type)
        if not need:
            return None
        return self.launch_blocker(pool, need, req.tenant_name)

    def _decline(self, request_id: str, pool, reason: str, lock=None) -> None:
        """Add the pool to declined_by (failed when every registered pool declined)."""
        self.declined.add((request_id, pool.view.id))
        own_lock = lock is None
        try:
            if own_lock:
                lock = locks.lock_request(self.ctx.kazoo, request_id, identifier=self._lock_name())
        except errors.LockFailed:
            self.declined.discard((request_id, pool.view.id))
            self.retry_later(request_id)    # someone holds it: decline it once they let go
            return
        try:
            req = requests.get_request(self.ctx.kazoo, request_id)
            if req is None or req.state not in (RequestState.REQUESTED, RequestState.PENDING) \
                    or pool.view.id in req.declined_by:
                return
            req.declined_by.append(pool.view.id)
            if every_pool_declined(req.declined_by, self.ctx.registered_pools()):
                req.set_state(RequestState.FAILED)
                log.info("request=%s Failed: declined by every pool (last: %s)", request_id,
                         reason)
            else:
                req.set_state(RequestState.REQUESTED)
                log.info("request=%s Declined by %s: %s", request_id, pool.view.id, reason)
            requests.update_request(self.ctx.kazoo, req)
        except (errors.NotFound, errors.VersionConflict) as e:
            log.info("request=%s Not declined: %s", request_id, e)
        finally:
            if own_lock:
                locks.release(lock)

    def _take_all(self, takes: list[tuple[NodeRequest, Any]]) -> None:
        """Lock, re-read and serve every request this pass took, their round trips overlapped.

        Two waves, each sent for every request before any answer is awaited:
        the request locks with their re-reads together with the claims of ready
        nodes for the request as the cache shows it, then the fulfil
        transactions of the requests that ready nodes satisfy whole. A request
        that changed meanwhile lets its claims go; the rest launch.
        """
        kazoo, name = self.ctx.kazoo, self._lock_name()
        claiming: set[str] = set()
        started = []
        for cached, pool in takes:
            pending = locks.start_request_lock(kazoo, cached.id, name)
            speculative = RequestHandler(cached, None, pool, [None] * len(cached.node_types))
            started.append((cached, pool, pending, self._start_claim(speculative, claiming),
                            speculative.az))
        commits = []
        for cached, pool, pending, attempt, az in started:
            try:
                lock = locks.finish_request_lock(kazoo, cached.id, name, pending)
            except errors.LockFailed:
                handover.abandon(kazoo, attempt, cached, name)
                self.retry_later(cached.id)
                continue
            req = self._under_lock(cached.id)
            if req is None or req.state != RequestState.REQUESTED or \
                    pool.view.id in req.declined_by:
                locks.release_async(kazoo, lock)
                handover.abandon(kazoo, attempt, cached, name)
                if req is None or req.state != RequestState.REQUESTED:
                    self.finished.add(cached.id)
                continue
            h = RequestHandler(req, lock, pool, [None] * len(req.node_types), az=az)
            claims = handover.settle_claims(kazoo, attempt, req, name)
            if req.node_types != cached.node_types:     # rewritten since the cache saw it
                handover.release(kazoo, claims)
                claims = []
            if claims and len(claims) == len(req.node_types):
                # Everything from ready nodes: allocate, unlock and fulfil in one transaction.
                req.nodes = [c.node.id for c in sorted(claims, key=lambda c: c.slot)]
                req.set_state(RequestState.FULFILLED)
                commits.append((h, claims, handover.send_commit(kazoo, claims, req, lock,
                                                                cache=self.ctx.cache)))
            else:
                self._serve_partly(h, claims)
        for h, claims, pending in commits:
            if handover.finish_commit(kazoo, claims, h.lock, pending):
                self._claimed(claims)
                self.finished.add(h.request.id)
                log.info("request=%s Fulfilled with ready %s", h.request.id,
                         ", ".join(h.request.nodes))
            else:
                locks.release_async(kazoo, h.lock)   # lost a race; the next pass tries again
                self.retry_later(h.request.id)

    def _under_lock(self, request_id: str) -> NodeRequest | None:
        """The request as it is now that we hold its lock (PROTOCOL.md: re-read after
        locking): from the cache when it holds every change made before our lock,
        else read. None: it is gone."""
        settled, req = self.ctx.cache.settled_request(request_id)
        return req if settled else requests.get_request(self.ctx.kazoo, request_id)

    def _serve_partly(self, handler: RequestHandler, claims: list) -> None:
        """Hold the request: allocate what was claimed, launch the rest, mark it pending."""
        kazoo, req = self.ctx.kazoo, handler.request
        if claims and not handover.commit(kazoo, claims):
            claims = []
        self._claimed(claims)
        for claim in claims:
            handler.slots[claim.slot] = claim.node.id
            handler.ready.add(claim.node.id)
        self.handlers[req.id] = handler
        self._track(req.id, True)
        self._launch_missing(handler)
        # Pipelined: the loop does not wait for `pending`. A cancellation shows in
        # the cache; any other surprise makes the fulfil write re-read first.
        req.set_state(RequestState.PENDING)
        kazoo.set_async(paths.request(req.id), req.to_json(), req.version)
        req.version += 1

    # -- filling slots ------------------------------------------------------------

    def _claim(self, h: RequestHandler) -> list:
        attempt = self._start_claim(h, set())
        return handover.settle_claims(self.ctx.kazoo, attempt, h.request, self._lock_name())

    def _start_claim(self, h: RequestHandler, claiming: set[str]) -> list:
        """Send lock attempts for ready nodes fitting the empty slots, none in `claiming`."""
        if not (h.request.reuse or not self.adapter.launches):
            return []
        missing = [h.request.node_types[i] for i in h.missing()]
        # Oldest spares first (the index keeps them in the order they became
        # spares): enough to fill the slots past those other requests are claiming.
        limit = len(missing) + len(claiming) + SPARE_CANDIDATES
        candidates = [n for label in set(missing)
                      for n in self.index.spares(h.pool.cfg.name, label, limit)]
        if not candidates:
            return []
        attempt, az = handover.start_claims(self.ctx.kazoo, self.ctx.cache, h.request, h.slots,
                                            h.pool.view, h.az, self._lock_name(), candidates,
                                            exclude=claiming)
        if attempt:
            h.az = h.az or az
        return attempt

    def _claimed(self, claims) -> None:
        """Committed: these are no longer spares (before the cache says so)."""
        for claim in claims:
            self.index.update(claim.node.id, claim.node, False)

    def _fill_from_ready(self, h: RequestHandler) -> None:
        """Hand ready nodes over to the empty slots of a request we hold (static hosts freed)."""
        claims = self._claim(h)
        if claims and handover.commit(self.ctx.kazoo, claims):
            self._claimed(claims)
            for claim in claims:
                h.slots[claim.slot] = claim.node.id
                h.ready.add(claim.node.id)

    def _adopt_spare_launches(self, h: RequestHandler) -> None:
        """Give empty slots the launches already under way for nobody (a resumed launch,
        a released min-ready node): no second server when one is nearly there."""
        for i in h.missing():
            label = h.request.node_types[i]
            for task in self.launches.values():
                if task.request_id is None and task.pool is h.pool and label in task.node.type \
                        and task.node.id not in h.slots and (h.az is None or task.az in
                                                             (None, h.az)):
                    task.request_id = h.request.id
                    task.node.allocated_to = h.request.id
                    task.node.tenant_name = h.request.tenant_name
                    task.node.requestor = h.request.requestor
                    self.write(task)
                    h.slots[i] = task.node.id
                    break

    def _launch_missing(self, h: RequestHandler) -> None:
        if self.adapter.launches:
            self._adopt_spare_launches(h)
        missing = h.missing()
        if not missing:
            return
        if not self.adapter.launches:
            h.waiting = "every host of the pool is busy"
            return
        labels = [h.request.node_types[i] for i in missing]
        if not self.can_launch(h.pool, labels, h.request.tenant_name):
            h.waiting = "at quota"
            h.pool.paused, h.pool.pause_reason = True, "at quota"
            return
        h.waiting = None
        for i in missing:
            task = self.start_launch(h.pool, h.request.node_types[i], request=h.request, az=h.az)
            h.slots[i] = task.node.id

    # -- callbacks from the lifecycle ----------------------------------------------

    def launch_ready(self, task) -> bool:
        """A launched node is ready; True if a request keeps it locked until fulfilment."""
        h = self.handlers.get(task.request_id or "")
        if h is None or task.node.id not in h.slots:
            return False
        h.ready.add(task.node.id)
        h.held[task.node.id] = task
        return True

    def launch_failed(self, task, reason: str) -> None:
        h = self.handlers.get(task.request_id or "")
        if h is not None:
            h.failed = f"node {task.node.id} failed: {reason}"
            h.slots = [None if s == task.node.id else s for s in h.slots]
        elif task.request_id is None:
            self.spare_launch_failed(task)

    def launch_aborted(self, task) -> None:
        """Quota: the slot is launched again once quota frees; nothing failed."""
        h = self.handlers.get(task.request_id or "")
        if h is not None:
            h.slots = [None if s == task.node.id else s for s in h.slots]
            h.waiting = "at quota"

    # -- progress -----------------------------------------------------------------

    def check_handlers(self) -> None:
        waiting_pools = set()
        for h in list(self.handlers.values()):
            if self.ctx.cache.get_request(h.request.id) is None:
                log.info("request=%s Cancelled by its requestor", h.request.id)
                self._cancel(h)
                continue
            if h.failed:
                self._give_up(h, h.failed)
                continue
            if h.missing():
                if not self.adapter.launches:
                    self._fill_from_ready(h)
                elif not self.stopping:
                    self._launch_missing(h)
            if h.missing() and h.waiting:
                waiting_pools.add(h.pool.cfg.name)
            if not h.missing() and h.ready >= set(h.slots) and \
                    all(self._write_done(t) for t in h.held.values()):
                self._fulfil(h)
        for pool in self.pools.values():    # between walks, a deferring pool stays paused
            pool.paused = pool.cfg.name in waiting_pools or pool.cfg.name in self.deferring
        self.waiting_pools = waiting_pools

    def _fulfil(self, h: RequestHandler) -> None:
        for task in h.held.values():     # unlock every node first (hand-off step 4)
            locks.release_async(self.ctx.kazoo, task.lock)
        h.held.clear()
        req = h.request
        for _ in range(3):
            req.nodes = list(h.slots)
            req.set_state(RequestState.FULFILLED)
            try:
                requests.update_request(self.ctx.kazoo, req)
                log.info("request=%s Fulfilled with %s", req.id, ", ".join(req.nodes))
                break
            except errors.VersionConflict:
                # Someone wrote it without our lock; write our fulfilment over what is there.
                req = requests.get_request(self.ctx.kazoo, req.id)
                if req is None:
                    self._release_slots(h)
                    break
            except errors.NotFound:
                self._release_slots(h)
                break
        self._done(h)

    def _release_slots(self, h: RequestHandler) -> None:
        """Give back every node of a request: building ones finish as spares."""
        for node_id in [s for s in h.slots if s is not None]:
            task = self.launches.get(node_id)
            if task is not None:
                task.request_id = None
                task.node.allocated_to = None
                continue
            held = h.held.pop(node_id, None)
            try:
                if held is not None:
                    held.node.allocated_to = None
                    self.write(held)
                    locks.release_async(self.ctx.kazoo, held.lock)
                elif node_id in h.ready:
                    self.release_node(node_id, expected_request=h.request.id)
            except (errors.LockFailed, errors.NotFound, errors.VersionConflict):
                continue  # cleanup releases it later: its request is gone or reset
        h.slots = [None] * len(h.slots)

    def _cancel(self, h: RequestHandler) -> None:
        self._release_slots(h)
        self._done(h)

    def _give_up(self, h: RequestHandler, reason: str) -> None:
        self._release_slots(h)
        self._decline(h.request.id, h.pool, reason, lock=h.lock)
        self._done(h)

    def _done(self, h: RequestHandler) -> None:
        locks.release_async(self.ctx.kazoo, h.lock)
        self.handlers.pop(h.request.id, None)
        self.finished.add(h.request.id)
        self._track(h.request.id, False)

    def hand_back(self, timeout: float) -> None:
        """On stop: pending requests go back to `requested`; launches stay resumable."""
        for h in list(self.handlers.values()):
            self._release_slots(h)
            try:
                req = requests.get_request(self.ctx.kazoo, h.request.id)
                if req is not None and req.state == RequestState.PENDING:
                    req.set_state(RequestState.REQUESTED)
                    requests.update_request(self.ctx.kazoo, req)
            except (errors.NotFound, errors.VersionConflict):
                pass
            self._done(h)
        for task in list(self.launches.values()):
            if task.node.allocated_to is not None:
                task.node.allocated_to = None
                self.write(task)
            locks.release_async(self.ctx.kazoo, task.lock)
        for task in list(self.deletes.values()):
            locks.release_async(self.ctx.kazoo, task.lock)
        self.drop_deletion_locks()
        self.retry_removals()
        self.launches.clear()
        self.deletes.clear()
