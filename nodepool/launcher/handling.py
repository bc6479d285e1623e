"""The request part of a provider worker: which requests its pools take, defer or decline.

A part of ProviderWorker; runs on its loop thread. It owns the requests our
pools hold (`handlers`), what the walks remember (declined, takeable,
deferral) and the pools' `paused` flags, and walks the waiting requests in
protocol order. Two parts carry out what a walk decides: taking.py (lock,
re-read, claim ready nodes, fulfil or hold) and holding.py (the requests we
hold, until fulfilled, given up, cancelled or handed back).
"""

from __future__ import annotations

import collections
import logging

from nodepool import errors
from nodepool import timeline as tl
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.deferral import Deferral
from nodepool.launcher.deletions import Deletions
from nodepool.launcher.eviction import MakeRoom
from nodepool.launcher.handler import RequestHandler
from nodepool.launcher.holding import Holding
from nodepool.launcher.launches import Launches
from nodepool.launcher.placement import seats_from_components
from nodepool.launcher.planner import (
    Triage,
    Verdict,
    between_owners,
    every_pool_declined,
    launch_elsewhere,
    triage,
)
from nodepool.launcher.reasons import RequestNotes
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.launcher.spares import Spares
from nodepool.launcher.spread import assign
from nodepool.launcher.sweep import Sweep
from nodepool.launcher.taking import Taking
from nodepool.model import NodeRequest, RequestState

log = logging.getLogger("nodepool.launcher.requests")


class Requests:
    """The requests of one provider worker."""

    def __init__(self, scope: ProviderScope, supply, launches: Launches, spares: Spares,
                 sweep: Sweep, capacity: Capacity, cloud: CloudView, absorb,
                 deletions: Deletions):
        self.scope = scope
        self.supply = supply
        self.launches = launches
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
        # node -> the request waiting for its launch under way elsewhere; replaced whole
        # (never changed in place), as the cache thread reads it (launch_moved).
        self.launch_waits: dict[str, str] = {}
        self.notes = RequestNotes(scope, capacity)    # the requests' timelines (reasons.py)
        self._said_paused: dict[str, bool] = {}       # pool -> paused, as last logged
        self.taking = Taking(scope, supply, self)
        self.room = MakeRoom(scope, supply, capacity, cloud, deletions)   # eviction.py
        self.holding = Holding(scope, launches, spares, sweep, self, self.taking)

    def handler_node_ids(self) -> set[str]:
        return {s for h in self.handlers.values() for s in h.slots if s is not None}

    def track(self, request_id: str, handled: bool) -> None:
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

    def launch_moved(self, node_id: str) -> None:
        """A node changed (any provider's): a request waiting for its launch is looked
        at again (_launched_elsewhere)."""
        request_id = self.launch_waits.get(node_id)
        if request_id is not None:
            self.new_requests.append(request_id)

    def _stop_waiting(self, request_id: str) -> None:
        if request_id in self.launch_waits.values():
            self.launch_waits = {n: r for n, r in self.launch_waits.items() if r != request_id}

    def forget_request(self, request_id: str) -> None:
        """(Loop thread) a request is gone: drop what the walks remembered of it."""
        self.finished.discard(request_id)
        self.retry_requests.discard(request_id)
        self._stop_waiting(request_id)
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
                    or (req.id in self.finished and not self._back_to_requested(req.id)) \
                    or self._launched_elsewhere(req):
                continue
            for pool in pools:
                if self._consider(req, pool, looked):
                    looked.takes.append((req, pool))
                    break
        self.taking.take_all(looked.takes)
        self.room.apply(self.notes)    # after the claims: no node a take claims is deleted
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
            self.decline(req.id, pool, verdict.reason)
            return False
        self.takeable[(req.id, pool.cfg.name)] = req.version
        if pool.cfg.name in blocked:
            self.notes.behind(req, pool, blocked[pool.cfg.name])
            return False
        blocker, need = ("concurrency", []) if self._at_concurrency(looked) else \
            self._blocker(req, pool, looked.promised)
        if blocker is not None:
            self.notes.deferred(req, pool, blocker)
        if blocker == "tenant":
            looked.tenant_waits = True
            return False   # this tenant is at its limit; others may go ahead
        if blocker is not None:
            blocked[pool.cfg.name] = (blocker, req.id)
            self.room.consider(req, pool, blocker, need, looked.promised)
            return False
        return True

    def _launched_elsewhere(self, req: NodeRequest) -> bool:
        """Does a launch for `req` go on that we do not run (planner.launch_elsewhere)?
        Then the request waits: it is looked at again when that node changes (resumed
        for it by its provider's next owner, or ended) or the spread does (notify)."""
        node = launch_elsewhere(self.scope.ctx.cache.allocated_nodes(req.id),
                                self.launches.tasks, self._runnable)
        if node is None:
            self._stop_waiting(req.id)
            return False
        if self.launch_waits.get(node.id) != req.id:
            self._stop_waiting(req.id)
            self.launch_waits = {**self.launch_waits, node.id: req.id}
            # Locked: its taker is at work (a take's usual moment). Unlocked: handed
            # over, waiting for the provider's next owner, which is worth saying.
            say = log.debug if self.scope.ctx.cache.is_node_locked(node.id) else log.info
            say("request=%s Waits for its launch under way in provider %s (node %s)",
                req.id, node.provider, node.id)
        return True

    def spread_moved(self) -> None:
        """(Cache thread) launchers came, went or changed what they serve: the requests
        waiting for a launch elsewhere are looked at again."""
        self.new_requests.extend(set(self.launch_waits.values()))

    def _at_concurrency(self, looked: _Look) -> bool:
        """max-concurrency, as Nodepool counts it: requests handled at once (held by us,
        or taken in this pass), from their take until their nodes are ready or failed."""
        limit = self.scope.provider.max_concurrency
        return limit > 0 and len(self.handlers) + len(looked.takes) >= limit

    def _blocker(self, req: NodeRequest, pool: PoolState, promised: collections.Counter
                 ) -> tuple[str | None, list[str]]:
        """From the cache alone: why the pool cannot serve this now (None = it can), and
        the labels its ready nodes do not serve.

        Ready nodes count first (spares promised to requests taken earlier in
        this pass excepted); the supply says why the rest cannot be had.
        """
        if self.capacity.request_past_tenant_limits(pool, req.node_types, req.tenant_name):
            return "tenant", []   # spares count: a tenant may not pass its limit by taking them
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
            return None, need
        return self.supply.shortfall(req, pool, need), need

    def decline(self, request_id: str, pool: PoolState, reason: str, lock=None) -> None:
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
            registered = self.scope.ctx.registered_pools()
            if every_pool_declined(req.declined_by, registered) and \
                    not self._in_transit(req.node_types, registered):
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

    def _in_transit(self, labels: list[str], registered: list) -> bool:
        """A provider of our config that offers `labels` is between owners (a hand-over or
        a takeover: no pool of it registered, yet a live launcher should run it): the
        request waits for its pool instead of failing."""
        offered = self._offered()
        waiting = between_owners(labels, offered, registered, self._runnable(offered))
        if waiting:
            log.info("Not failing a request for %s: provider(s) %s are between owners",
                     ", ".join(labels), ", ".join(waiting))
        return bool(waiting)

    def _offered(self) -> dict[str, list[frozenset[str]]]:
        """provider -> the label sets of its pools (our config)."""
        return {name: [frozenset(pool.labels) for pool in provider.pools.values()]
                for name, provider in self.scope.ctx.config.providers.items()}

    def _runnable(self, offered: dict | None = None) -> dict[str, str]:
        """provider -> the live launcher that should run it (the spread)."""
        seats = seats_from_components(self.scope.ctx.cache.launcher_components())
        if not seats:
            return {}
        return assign(offered or self._offered(),
                      {lid: seat.serves for lid, seat in seats.items()})


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
