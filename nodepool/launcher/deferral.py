"""When to look at every waiting request again, and when only at the new ones.

Owned by the request part of a provider worker (loop thread). Looking at
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
from typing import Callable

from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.launches import Launches
from nodepool.launcher.scope import ProviderScope


@dataclasses.dataclass
class Deferring:
    """A pool that deferred requests in the last walk."""

    kind: str              # "pool", "provider", "concurrency", "cost", "hosts busy", "paused"
    head: str              # the request first in line
    headroom: tuple


class Deferral:
    """Walk bookkeeping of the request part: what decided the last walk, and whether it moved."""

    def __init__(self, scope: ProviderScope, launches: Launches, capacity: Capacity,
                 cloud: CloudView, handling: Callable[[], int]):
        self.scope = scope
        self.launches = launches
        self.capacity = capacity
        self.cloud = cloud
        self._handling = handling          # requests the provider handles (max-concurrency)
        self.walk_wanted = True            # set on the cache thread too (a bool: atomic)
        self.walk_config = None
        self.deferring: dict[str, Deferring] = {}     # pool name -> why it waits
        self.heads: frozenset[str] = frozenset()      # read by `request_event` (cache thread)
        self.tenant_waits = False

    def want_walk(self) -> None:
        """Something every waiting request's triage depends on changed."""
        self.walk_wanted = True

    def walk_needed(self, waiting_pools: set[str]) -> bool:
        if self.walk_wanted or self.tenant_waits or self.walk_config is not self.scope.ctx.config:
            return True
        return any(d.headroom != self.headroom(name, d.kind, waiting_pools)
                   for name, d in self.deferring.items())

    def request_event(self, request_id: str) -> None:
        """(Cache thread) a request changed state or went away."""
        if request_id in self.heads:
            self.walk_wanted = True

    def deferred(self, blocked: dict[str, tuple[str, str]], tenant_waits: bool,
                 walk: bool, waiting_pools: set[str]) -> None:
        """A pass ended: `blocked` is pool name -> (blocker kind, first request waiting).

        After a walk, that is every deferral; after a pass over new requests,
        pools that began to defer in it are added.
        """
        if walk:
            self.walk_wanted = False
            self.walk_config = self.scope.ctx.config
            self.tenant_waits = tenant_waits
            self.deferring = {}
        else:
            self.tenant_waits = self.tenant_waits or tenant_waits
        for name, (kind, head) in blocked.items():
            if name not in self.deferring:
                self.deferring[name] = Deferring(kind, head,
                                                 self.headroom(name, kind, waiting_pools))
        self.heads = frozenset(d.head for d in self.deferring.values())

    def blocked_pools(self, walk: bool, waiting_pools: set[str]) -> dict[str, tuple[str, str]]:
        """Pools that take nothing at the start of a pass: a request of ours waits in
        them; outside walks, also those that defer (their first in line goes first)."""
        blocked = {name: ("paused", "") for name, p in self.scope.pools.items()
                   if p.paused and (name in waiting_pools or name not in self.deferring)}
        if not walk:
            blocked.update({name: (d.kind, d.head) for name, d in self.deferring.items()})
        return blocked

    def headroom(self, pool_name: str, kind: str, waiting_pools: set[str]) -> tuple:
        """What a deferral of `kind` in the pool depends on; when it moves, walk again."""
        pool, index = self.scope.pools[pool_name], self.scope.index
        unassigned = len(self.launches.unassigned(pool))
        common = (pool_name in waiting_pools, index.spare_total(pool_name), unassigned)
        if kind == "concurrency":
            return common + (self._handling(),)
        pending = self.capacity.pending_nodes()
        if kind in ("provider", "cost"):   # "cost": the limits read also reads the flavors
            return common + (index.usage(), self.cloud.limits, len(pending))
        return common + (index.usage(pool_name),
                         sum(1 for n in pending if n.pool == pool_name))
