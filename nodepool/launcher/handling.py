"""The request part of a provider worker: take, allocate, decline, fulfil, cancel.

A part of ProviderWorker; runs on its loop thread. Follows PROTOCOL.md's
hand-off: the request lock is held for every write, the request is re-read
after locking, nodes are unlocked before the single fulfil write. It owns
the requests our pools hold (`handlers`), what the walks remember
(declined, takeable, deferral) and the pools' `paused` flags; it hears how
launches end through the `LaunchOutcomes` events.
"""

from __future__ import annotations

import collections
import logging

from nodepool import errors
from nodepool import timeline as tl
from nodepool.launcher import handover
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.deferral import Deferral
from nodepool.launcher.effects import Claim
from nodepool.launcher.handler import RequestHandler
from nodepool.launcher.launches import Launches
from nodepool.launcher.planner import Triage, Verdict, every_pool_declined, triage
from nodepool.launcher.reasons import RequestNotes
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.launcher.spares import Spares
from nodepool.launcher.supply import AT_QUOTA
from nodepool.launcher.sweep import Sweep
from nodepool.launcher.tasks import LaunchTask
from nodepool.model import NodeRequest, RequestState

log = logging.getLogger("nodepool.launcher.requests")

SPARE_CANDIDATES = 16   # spares looked at per label beyond the ones a request needs


class Requests:
    """The requests of one provider worker."""

    def __init__(self, scope: ProviderScope, supply, launches: Launches, spares: Spares,
                 sweep: Sweep, capacity: Capacity, cloud: CloudView, absorb):
        self.scope = scope
        self.supply = supply
        self.launches = launches
        self.spares = spares
        self.sweep = sweep
        self.capacity = capacity
        self.cloud = cloud
        self._absorb = absorb      # fold the cache's changes in before a look at requests
        self.deferral = Deferral(scope, launches, capacity, cloud, lambda: len(self.handlers))
        self.handlers: dict[str, RequestHandler] = {}
        self.finished: set[str] = set()
        self.declined: set[tuple[str, str]] = set()
        # (request, pool) -> the request version the pool found it could take:
        # while the pool defers for quota, such a request is not triaged again.
        self.takeable: dict[tuple[str, str], int] = {}
        self.new_requests: collections.deque = collections.deque()  # ids, on the cache thread
        self.retry_requests: set[str] = set()
        self.waiting_pools: set[str] = set()          # pools a request of ours waits in
        self.notes = RequestNotes(scope, capacity)    # the requests' timelines (reasons.py)
        self._said_paused: dict[str, bool] = {}       # pool -> paused, as last logged

    def handler_node_ids(self) -> set[str]:
        return {s for h in self.handlers.values() for s in h.slots if s is not None}

    def _track(self, request_id: str, handled: bool) -> None:
        ctx = self.scope.ctx
        with ctx.lock:
            (ctx.handled_requests.add if handled else ctx.handled_requests.discard)(request_id)

    def timers(self, now: float) -> list[float]:
        return [now + self.scope.tuning.request_retry] if self.retry_requests else []

    # -- events, on the cache thread -------------------------------------------------------

    def request_arrived(self, request_id: str) -> None:
        self.new_requests.append(request_id)

    def request_event(self, request_id: str) -> None:
        self.deferral.request_event(request_id)

    def forget_request(self, request_id: str) -> None:
        """(Loop thread) a request is gone: drop what the walks remembered of it."""
        self.finished.discard(request_id)
        self.retry_requests.discard(request_id)
        self.notes.forget(request_id)
        for pool in self.scope.pools.values():
            self.declined.discard((request_id, pool.view.id))
            self.takeable.pop((request_id, pool.cfg.name), None)

    def _back_to_requested(self, request_id: str) -> bool:
        """A request we finished with that is `requested` again for sure (no change of it
        still on its way to the cache): our fulfilment did not land (its lock was lost),
        or the lost-request reset gave it back. Serve it like a new one."""
        settled, req = self.scope.ctx.cache.settled_request(request_id)
        if settled and req is not None and req.state == RequestState.REQUESTED:
            self.finished.discard(request_id)
            return True
        return False

    def retry_later(self, request_id: str) -> None:
        """A take that failed for a passing reason: look at the request again next pass."""
        self.retry_requests.add(request_id)

    # -- looking at requests ------------------------------------------------------------

    def serve_waiting(self) -> None:
        """Each pass: walk every waiting request if something that decided the last
        walk moved (deferral.py), else serve the new and changed ones."""
        if self.deferral.walk_needed(self.waiting_pools):
            self.new_requests.clear()
            self.retry_requests.clear()
            self.serve_requests()
        else:
            self.serve_new_requests()
        self._say_pauses()

    def _say_pauses(self) -> None:
        """Log (INFO) a pool pausing and resuming, once each, with why; not every pass."""
        for name, pool in self.scope.pools.items():
            if pool.paused == self._said_paused.get(name, False):
                continue
            self._said_paused[name] = pool.paused
            where = f"pool {name} of provider {self.scope.name}"
            if not pool.paused:
                log.info("%s resumed: it takes requests again", where.capitalize())
                continue
            deferring = self.deferral.deferring.get(name)
            if deferring is not None and deferring.kind != "paused":
                why = tl.CAUSES.get(deferring.kind, deferring.kind) + \
                    f" (first in line: request {deferring.head})"
            else:
                why = pool.pause_reason or tl.CAUSES["paused"]
            log.info("%s paused: %s", where.capitalize(), why)

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
        if self.scope.stopping or self.scope.provider.max_concurrency == 0:
            return   # max-concurrency 0: as Nodepool, the provider handles no request at all
        walk = only is None
        cache = self.scope.ctx.cache
        if walk:
            pending = cache.requests()
        else:
            found = (cache.get_request(rid) for rid in only)
            pending = sorted((r for r in found if r is not None), key=lambda r: r.sort_key)
        pools = sorted(self.scope.pools.values(), key=lambda p: p.cfg.priority)
        blocked = self.deferral.blocked_pools(walk, self.waiting_pools)
        looked = _Look(self.scope.ctx.registered_pools(), blocked)
        for req in pending:
            if req.state != RequestState.REQUESTED or req.id in self.handlers \
                    or (req.id in self.finished and not self._back_to_requested(req.id)):
                continue
            for pool in pools:
                if self._consider(req, pool, looked):
                    looked.takes.append((req, pool))
                    break
        self._take_all(looked.takes)
        for name, pool in self.scope.pools.items():
            pool.paused = name in blocked
        self.deferral.deferred(blocked, looked.tenant_waits, walk, self.waiting_pools)

    def _consider(self, req: NodeRequest, pool: PoolState, looked: _Look) -> bool:
        """Does `pool` take `req` in this pass? Declines and deferrals are noted."""
        blocked = looked.blocked
        if (req.id, pool.view.id) in self.declined:
            return False
        if pool.cfg.name in blocked and self.takeable.get((req.id, pool.cfg.name)) == req.version:
            self.notes.behind(req, pool, blocked[pool.cfg.name])
            return False   # waits for this pool's quota, as in the last pass
        verdict = triage(req, pool.view, looked.registered,
                         self.capacity.never_fits(pool, req.node_types))
        if verdict.verdict == Verdict.SKIP:
            return False
        self.notes.seen(req.id, pool)
        if verdict.verdict == Verdict.TAKE:
            missing = self.cloud.missing_image(pool.cfg, req.node_types)
            if missing:
                verdict = Triage(Verdict.DECLINE, missing)
        if verdict.verdict == Verdict.DECLINE:
            self._decline(req.id, pool, verdict.reason)
            return False
        self.takeable[(req.id, pool.cfg.name)] = req.version
        if pool.cfg.name in blocked:
            self.notes.behind(req, pool, blocked[pool.cfg.name])
            return False
        blocker = "concurrency" if self._at_concurrency(looked) else \
            self._blocker(req, pool, looked.promised)
        if blocker is not None:
            self.notes.deferred(req, pool, blocker)
        if blocker == "tenant":
            looked.tenant_waits = True
            return False   # this tenant is at its limit; others may go ahead
        if blocker is not None:
            blocked[pool.cfg.name] = (blocker, req.id)
            return False
        return True

    def _at_concurrency(self, looked: _Look) -> bool:
        """max-concurrency, as Nodepool counts it: requests handled at once (held by us,
        or taken in this pass), from their take until their nodes are ready or failed."""
        limit = self.scope.provider.max_concurrency
        return limit > 0 and len(self.handlers) + len(looked.takes) >= limit

    def _blocker(self, req: NodeRequest, pool: PoolState,
                 promised: collections.Counter) -> str | None:
        """From the cache alone: why the pool cannot serve this now (None = it can).

        Ready nodes count first (spares promised to requests taken earlier in
        this pass excepted); the supply says why the rest cannot be had.
        """
        if self.capacity.request_past_tenant_limits(pool, req.node_types, req.tenant_name):
            return "tenant"   # spares count: a tenant may not pass its limit by taking them
        need = list(req.node_types)
        if self.supply.reuses_ready(req):
            index, name = self.scope.index, pool.cfg.name
            counts = {label: index.spare_count(name, label) - promised[(name, label)]
                      for label in set(need)}
            for label in list(need):
                if counts[label] > 0:
                    counts[label] -= 1
                    promised[(name, label)] += 1
                    need.remove(label)
        if not need:
            return None
        return self.supply.shortfall(req, pool, need)

    def _decline(self, request_id: str, pool: PoolState, reason: str, lock=None) -> None:
        """Add the pool to declined_by (failed when every registered pool declined)."""
        effects = self.scope.effects
        self.declined.add((request_id, pool.view.id))
        own_lock = lock is None
        try:
            if own_lock:
                lock = effects.lock_request(request_id)
        except errors.LockFailed:
            self.declined.discard((request_id, pool.view.id))
            self.retry_later(request_id)    # someone holds it: decline it once they let go
            return
        try:
            req = effects.read_request(request_id)
            if req is None or req.state not in (RequestState.REQUESTED, RequestState.PENDING) \
                    or pool.view.id in req.declined_by:
                return
            req.declined_by.append(pool.view.id)
            if every_pool_declined(req.declined_by, self.scope.ctx.registered_pools()):
                req.set_state(RequestState.FAILED)
                log.info("request=%s Failed: declined by every pool (last: %s)", request_id,
                         reason)
            else:
                req.set_state(RequestState.REQUESTED)
                log.info("request=%s Declined by %s: %s", request_id, pool.view.id, reason)
            effects.write_request(req, lock)
            self.notes.declined(request_id, pool, reason, req.state == RequestState.FAILED)
        except (errors.NotFound, errors.VersionConflict, errors.LockFailed) as e:
            log.info("request=%s Not declined: %s", request_id, e)
        finally:
            if own_lock:
                effects.unlock(lock)

    # -- taking -----------------------------------------------------------------------

    def _take_all(self, takes: list[tuple[NodeRequest, PoolState]]) -> None:
        """Lock, re-read and serve every request this pass took, their round trips overlapped.

        Two waves, each sent for every request before any answer is awaited:
        the request locks with their re-reads together with the claims of ready
        nodes for the request as the cache shows it, then the fulfil
        transactions of the requests that ready nodes satisfy whole. A request
        that changed meanwhile lets its claims go; the rest launch.
        """
        effects = self.scope.effects
        claiming: set[str] = set()
        started = []
        for cached, pool in takes:
            locking = effects.lock_request_async(cached.id)
            speculative = RequestHandler(cached, None, pool, [None] * len(cached.node_types))
            started.append((cached, pool, locking, self._start_claim(speculative, claiming),
                            speculative.az))
        commits: list = []
        try:
            for i, (cached, pool, locking, attempts, az) in enumerate(started):
                h = None
                try:
                    h = self._take(cached, pool, locking, attempts, az)
                    if h is not None:
                        self._claim_or_serve(h, cached, attempts, commits)
                except Exception:
                    # The pass ends here (ZooKeeper lost, most likely): locks sent for
                    # this request and the next would never be settled, nor let go.
                    held = h is not None and h.request.id in self.handlers
                    self._withdraw(started[i + 1:] if held else started[i:])
                    raise
        finally:
            self._finish_commits(commits)

    def _finish_commits(self, commits: list) -> None:
        """Collect the fulfil transactions sent (never raises: a failed or unknown one
        lets its locks go and the request is looked at again)."""
        effects = self.scope.effects
        for h, claims, pending in commits:
            if effects.finish_commit(claims, h.lock, pending):
                self._claimed(claims)
                self.finished.add(h.request.id)
                self.scope.ctx.metrics.handed_over(h.request, True, self.scope.ctx.clock())
                log.info("request=%s Fulfilled with ready %s", h.request.id,
                         ", ".join(h.request.nodes))
                self.notes.fulfilled(h.request.id, h.pool, h.request.nodes, ready=True)
            else:
                effects.unlock_async(h.lock)   # lost a race; the next pass tries again
                self.retry_later(h.request.id)

    def _claim_or_serve(self, h: RequestHandler, cached: NodeRequest, attempts,
                        commits: list) -> None:
        """Settle the ready nodes claimed for a request we now hold: a fulfil transaction
        when they are all it needs (sent; collected with the others), else serve it."""
        effects = self.scope.effects
        claims = handover.settle_claims(effects, attempts, h.request)
        if h.request.node_types != cached.node_types:     # rewritten since the cache saw it
            effects.release_claims(claims)
            claims = []
        if claims and len(claims) == len(h.request.node_types):
            # Everything from ready nodes: allocate, unlock and fulfil in one transaction.
            req = h.request
            req.nodes = [c.node.id for c in sorted(claims, key=lambda c: c.slot)]
            req.set_state(RequestState.FULFILLED)
            commits.append((h, claims, effects.commit_claims_async(claims, req, h.lock)))
        else:
            self._serve_partly(h, claims)

    def _withdraw(self, started: list) -> None:
        """The pass ends in a take wave (ZooKeeper lost, most likely): the request and
        node locks sent for these would never be settled, nor let go."""
        for _, _, locking, claims, _ in started:
            self.scope.effects.withdraw_lock(locking.lock)
            for claim in claims:
                self.scope.effects.withdraw_lock(claim.attempt.lock)

    def _take(self, cached: NodeRequest, pool: PoolState, locking, attempts,
              az: str | None) -> RequestHandler | None:
        """The request, locked and re-read, if it is still ours to serve."""
        effects = self.scope.effects
        try:
            lock = effects.finish_request_lock(cached.id, locking)
        except errors.LockFailed:
            handover.abandon(effects, attempts, cached)
            self.retry_later(cached.id)
            return None
        req = self._under_lock(cached.id)
        if req is None or req.state != RequestState.REQUESTED or \
                pool.view.id in req.declined_by:
            effects.unlock_async(lock)
            handover.abandon(effects, attempts, cached)
            if req is None or req.state != RequestState.REQUESTED:
                self.finished.add(cached.id)
            return None
        return RequestHandler(req, lock, pool, [None] * len(req.node_types), az=az)

    def _under_lock(self, request_id: str) -> NodeRequest | None:
        """The request as it is now that we hold its lock (PROTOCOL.md: re-read after
        locking): from the cache when it holds every change made before our lock,
        else read. None: it is gone."""
        settled, req = self.scope.ctx.cache.settled_request(request_id)
        return req if settled else self.scope.effects.read_request(request_id)

    def _serve_partly(self, handler: RequestHandler, claims: list[Claim]) -> None:
        """Hold the request: allocate what was claimed, launch the rest, mark it pending."""
        req = handler.request
        if claims and not self.scope.effects.commit_claims(claims):
            claims = []
        self._fill_slots(handler, claims)
        self.handlers[req.id] = handler
        self._track(req.id, True)
        self._fill(handler, first=True)
        # Pipelined: the loop does not wait for it. A cancellation shows in
        # the cache; any other surprise makes the fulfil write re-read first.
        req.set_state(RequestState.PENDING)
        self.scope.effects.write_request_async(req, handler.lock)

    # -- filling slots ------------------------------------------------------------------

    def _start_claim(self, h: RequestHandler, claiming: set[str]) -> list:
        """Send lock attempts for ready nodes fitting the empty slots, none in `claiming`."""
        if not self.supply.reuses_ready(h.request):
            return []
        missing = [h.request.node_types[i] for i in h.missing()]
        # Oldest spares first (the index keeps them in the order they became
        # spares): enough to fill the slots past those other requests are claiming.
        limit = len(missing) + len(claiming) + self.scope.tuning.spare_candidates
        index, name = self.scope.index, h.pool.cfg.name
        candidates = [n for label in set(missing) for n in index.spares(name, label, limit)
                      if self.supply.usable(n)]
        if not candidates:
            return []
        attempts, az = handover.start_claims(self.scope.effects, self.scope.ctx.cache,
                                             h.request, h.slots, h.pool.view, h.az,
                                             candidates, exclude=claiming)
        if attempts:
            h.az = h.az or az
        return attempts

    def _claimed(self, claims: list[Claim]) -> None:
        """Committed: these are no longer spares (before the cache says so)."""
        for claim in claims:
            self.scope.index.update(claim.node.id, claim.node, False)

    def _fill_slots(self, h: RequestHandler, claims: list[Claim]) -> None:
        self._claimed(claims)
        for claim in claims:
            h.slots[claim.slot] = claim.node.id
            h.ready.add(claim.node.id)

    def claim_ready(self, h: RequestHandler) -> None:
        """Hand ready nodes over to the empty slots of a request we hold (waits)."""
        attempts = self._start_claim(h, set())
        claims = handover.settle_claims(self.scope.effects, attempts, h.request)
        if claims and self.scope.effects.commit_claims(claims):
            self._fill_slots(h, claims)

    def _fill(self, h: RequestHandler, first: bool) -> None:
        """Ask the supply for the empty slots; note why they stay empty."""
        if not h.missing():
            return
        h.waiting = self.supply.fill(h, first)
        if h.waiting:
            self.notes.held_waiting(h)
        if h.waiting == AT_QUOTA:
            h.pool.paused, h.pool.pause_reason = True, AT_QUOTA

    # -- launch outcomes (events from the launch part) -----------------------------------

    def launch_ready(self, task: LaunchTask) -> bool:
        """A launched node is ready; True if a request keeps it locked until fulfilment."""
        h = self.handlers.get(task.request_id or "")
        if h is None or task.node.id not in h.slots:
            return False
        h.ready.add(task.node.id)
        h.held[task.node.id] = task
        self.notes.node_ready(h.request.id, h.pool, task.node.id)
        return True

    def launch_failed(self, task: LaunchTask, reason: str) -> None:
        h = self.handlers.get(task.request_id or "")
        if h is not None:
            h.failed = f"node {task.node.id} failed: {reason}"
            h.slots = [None if s == task.node.id else s for s in h.slots]
        elif task.request_id is None:
            self.spares.launch_failed(task)

    def launch_aborted(self, task: LaunchTask, reason: str) -> None:
        """Quota: the pool pauses; the slot is launched again once quota frees."""
        task.pool.paused, task.pool.pause_reason = True, reason
        self.notes.quota_refused(task.request_id, task.pool, reason)
        h = self.handlers.get(task.request_id or "")
        if h is not None:
            h.slots = [None if s == task.node.id else s for s in h.slots]
            h.waiting = AT_QUOTA

    # -- progress -----------------------------------------------------------------------

    def check_handlers(self) -> None:
        waiting_pools = set()
        for h in list(self.handlers.values()):
            if self.scope.ctx.cache.get_request(h.request.id) is None:
                log.info("request=%s Cancelled by its requestor", h.request.id)
                self._cancel(h)
                continue
            if h.failed:
                self._give_up(h, h.failed)
                continue
            self._fill(h, first=False)
            if h.missing() and h.waiting:
                waiting_pools.add(h.pool.cfg.name)
            if not h.missing() and h.ready >= set(h.slots) and \
                    all(self.launches.write_done(t) for t in h.held.values()):
                self._fulfil(h)
        deferring = self.deferral.deferring
        for pool in self.scope.pools.values():    # between walks, a deferring pool stays paused
            pool.paused = pool.cfg.name in waiting_pools or pool.cfg.name in deferring
        self.waiting_pools = waiting_pools

    def _told_fulfilled(self, req: NodeRequest, h: RequestHandler, launched: bool) -> None:
        """Our fulfilment is in ZooKeeper: the log, the request's timeline, the metrics."""
        log.info("request=%s Fulfilled with %s", req.id, ", ".join(req.nodes))
        self.notes.fulfilled(req.id, h.pool, req.nodes)
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

    def _release_slots(self, h: RequestHandler) -> None:
        """Give back every node of a request: building ones finish as spares."""
        for node_id in [s for s in h.slots if s is not None]:
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
        self._decline(h.request.id, h.pool, reason, lock=h.lock)
        self._done(h)

    def _done(self, h: RequestHandler) -> None:
        self.scope.effects.unlock_async(h.lock)
        self.handlers.pop(h.request.id, None)
        self.finished.add(h.request.id)
        self._track(h.request.id, False)

    def hand_back(self) -> None:
        """On stop: pending requests go back to `requested` (waits for each)."""
        effects = self.scope.effects
        for h in list(self.handlers.values()):
            self._release_slots(h)
            try:
                req = effects.read_request(h.request.id)
                if req is not None and req.state == RequestState.PENDING:
                    req.set_state(RequestState.REQUESTED)
                    effects.write_request(req, h.lock)
            except (errors.NotFound, errors.VersionConflict, errors.LockFailed):
                pass
            self._done(h)


class _Look:
    """What one look at the waiting requests gathers as it goes."""

    def __init__(self, registered: list, blocked: dict[str, tuple[str, str]]):
        self.registered = registered
        self.blocked = blocked                 # pool name -> (blocker kind, first in line)
        self.tenant_waits = False
        self.takes: list[tuple[NodeRequest, PoolState]] = []
        # Spares counted for requests taken earlier in this pass, by (pool, label):
        # their claims are only sent once the pass has chosen every request.
        self.promised: collections.Counter = collections.Counter()
