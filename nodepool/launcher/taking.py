"""Taking requests: lock and re-read them, claim ready nodes, fulfil or hold them.

A part of the request part (handling.py) of one provider worker, on its loop
thread. The walk chooses which requests its pools take; this part carries
out the takes of one pass with their round trips overlapped (PROTOCOL.md's
hand-off: the request lock held for every write, the request re-read after
locking), claims ready nodes for empty slots, and asks the supply to launch
the rest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nodepool import errors
from nodepool.launcher import handover
from nodepool.launcher.effects import Claim
from nodepool.launcher.handler import RequestHandler
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.launcher.supply import AT_QUOTA
from nodepool.model import NodeRequest, RequestState

if TYPE_CHECKING:
    from nodepool.launcher.handling import Requests

log = logging.getLogger("nodepool.launcher.requests")


class Taking:
    """The takes and claims of one provider worker's request part."""

    def __init__(self, scope: ProviderScope, supply, book: Requests):
        self.scope = scope
        self.supply = supply
        self.book = book     # the requests we hold, and what the walks remember

    # -- taking -----------------------------------------------------------------------

    def take_all(self, takes: list[tuple[NodeRequest, PoolState]]) -> None:
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
                    held = h is not None and h.request.id in self.book.handlers
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
                self.book.finished.add(h.request.id)
                self.scope.ctx.metrics.handed_over(h.request, True, self.scope.ctx.clock())
                log.info("request=%s Fulfilled with ready %s", h.request.id,
                         ", ".join(h.request.nodes))
                self.book.notes.fulfilled(h.request.id, h.pool, h.request.nodes, ready=True)
            else:
                effects.unlock_async(h.lock)   # lost a race; the next pass tries again
                self.book.retry_later(h.request.id)

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
            self.book.retry_later(cached.id)
            return None
        req = self._under_lock(cached.id)
        if req is None or req.state != RequestState.REQUESTED or \
                pool.view.id in req.declined_by:
            effects.unlock_async(lock)
            handover.abandon(effects, attempts, cached)
            if req is None or req.state != RequestState.REQUESTED:
                self.book.finished.add(cached.id)
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
        self.book.handlers[req.id] = handler
        self.book.track(req.id, True)
        self.fill(handler, first=True)
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

    def fill(self, h: RequestHandler, first: bool) -> None:
        """Ask the supply for the empty slots; note why they stay empty."""
        if not h.missing():
            return
        h.waiting = self.supply.fill(h, first)
        if h.waiting:
            self.book.notes.held_waiting(h)
        if h.waiting == AT_QUOTA:
            h.pool.paused, h.pool.pause_reason = True, AT_QUOTA

