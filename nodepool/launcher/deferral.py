"""When to look at every waiting request again, and when only at the new ones.

A mixin of the request side of a provider worker (loop thread). Looking at
every `requested` request in protocol order (a "walk") is needed only when
something that decided the last walk may have changed; otherwise a pass
looks at the requests that arrived or changed since. With 2,000 requests
waiting for a pool at quota, that is the difference between a loop pass
that costs the requests that changed and one that costs all 2,000.

A walk is owed when:
- the worker starts, the configuration or any registered pool changed
  (triage of other pools' priorities and pauses), or a request we look
  at again because a take failed (lock held elsewhere, lost race);
- a pool deferred a request and what decided that deferral moved: its
  usage, the provider's usage or limits, launches under way, its spares,
  a request of ours waiting in it (the `headroom`);
- the request first in line at a deferring pool changed or went away
  (the next one may fit);
- a request waits for its tenant's limit (tenant usage moves with any node).

While a pool defers, requests that arrive for it wait behind the one first
in line: freed quota goes to the oldest request, never to a newcomer.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Deferring:
    """A pool that deferred requests in the last walk."""

    kind: str              # "pool", "provider", "concurrency", "hosts busy", "paused"
    head: str              # the request first in line
    headroom: tuple


class Deferral:
    """Walk bookkeeping of a provider worker's request side."""

    def init_deferral(self) -> None:
        self.walk_wanted = True
        self.walk_config = None
        self.deferring: dict[str, Deferring] = {}     # pool name -> why it waits
        self.heads: frozenset[str] = frozenset()      # read by `notify` (cache thread)
        self.tenant_waits = False
        self.retry_requests: set[str] = set()
        self.waiting_pools: set[str] = set()          # pools a request of ours waits in

    def walk_needed(self) -> bool:
        if self.walk_wanted or self.tenant_waits or self.walk_config is not self.ctx.config:
            return True
        return any(d.headroom != self.headroom(name, d.kind) for name, d in self.deferring.items())

    def request_event(self, request_id: str) -> None:
        """(Cache thread) a request changed state or went away."""
        if request_id in self.heads:
            self.walk_wanted = True

    def deferred(self, blocked: dict[str, tuple[str, str]], tenant_waits: bool,
                 walk: bool) -> None:
        """A pass ended: `blocked` is pool name -> (blocker kind, first request waiting).

        After a walk, that is every deferral; after a pass over new requests,
        pools that began to defer in it are added.
        """
        if walk:
            self.walk_wanted = False
            self.walk_config = self.ctx.config
            self.tenant_waits = tenant_waits
            self.deferring = {}
        else:
            self.tenant_waits = self.tenant_waits or tenant_waits
        for name, (kind, head) in blocked.items():
            if name not in self.deferring:
                self.deferring[name] = Deferring(kind, head, self.headroom(name, kind))
        self.heads = frozenset(d.head for d in self.deferring.values())

    def blocked_pools(self, walk: bool) -> dict[str, tuple[str, str]]:
        """Pools that take nothing at the start of a pass: a request of ours waits in
        them; outside walks, also those that defer (their first in line goes first)."""
        blocked = {name: ("paused", "") for name, p in self.pools.items()
                   if p.paused and (name in self.waiting_pools or name not in self.deferring)}
        if not walk:
            blocked.update({name: (d.kind, d.head) for name, d in self.deferring.items()})
        return blocked

    def headroom(self, pool_name: str, kind: str) -> tuple:
        """What a deferral of `kind` in the pool depends on; when it moves, walk again."""
        pool = self.pools[pool_name]
        unassigned = sum(1 for t in self.launches.values()
                         if t.request_id is None and t.pool is pool)
        common = (pool_name in self.waiting_pools, self.index.spare_total(pool_name), unassigned)
        if kind == "concurrency":
            return common + (len(self.launches) + len(self.starting),)
        pending = self.pending_nodes()
        if kind == "provider":
            return common + (self.index.usage(), self.limits, len(pending))
        return common + (self.index.usage(pool_name),
                         sum(1 for n in pending if n.pool == pool_name))

    def forget_request(self, request_id: str) -> None:
        """A request is gone: drop what the walks remembered of it."""
        self.finished.discard(request_id)
        self.retry_requests.discard(request_id)
        for pool in self.pools.values():
            self.declined.discard((request_id, pool.view.id))
            self.takeable.pop((request_id, pool.cfg.name), None)

    def retry_later(self, request_id: str) -> None:
        """A take that failed for a passing reason: look at the request again next pass."""
        self.retry_requests.add(request_id)
