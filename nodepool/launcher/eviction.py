"""Making room: delete the oldest unused ready node when a request of another label waits.

Nodepool's behaviour (`deleteOldestUnusedNode`): a pool at its limits, with
a request waiting that its ready nodes cannot serve, deletes its oldest
unused ready node so the request can be launched, instead of leaving the
spares of one label to block every other label until `max-ready-age`.

Here the decision is a pure function (`nodes_to_delete`) of what the limits
count, what is being deleted already and the unused nodes; the `MakeRoom`
part of the request part gathers those figures for the request first in
line at a deferring pool and hands its choice to the deletion part, which
locks each node and writes `deleting` over the version the cache showed
(a node claimed meanwhile is left alone). Unlike Nodepool, a node is
deleted only when the deletions make the request fit: deleting a spare for
a request that would wait anyway would only have min-ready launch it again.
Nodes the deletions under way will free count as free already, so no
second node goes for the same room.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from nodepool import errors
from nodepool.drivers.adapter import Resources
from nodepool.launcher import quota
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.context import MIN_READY_REQUESTOR
from nodepool.launcher.deletions import Deletions
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.model import Node, NodeRequest, NodeState


@dataclasses.dataclass(frozen=True)
class Unused:
    """A ready, unallocated, unlocked node of the pool, of a label the request does not ask."""

    node_id: str
    label: str
    cost: Resources
    ready_since: float       # the node's state_time: when it became ready


@dataclasses.dataclass(frozen=True)
class Limit:
    """A limit that holds the request back: what counts against it once the deletions under
    way are done, and the limit itself. The pool's own, and the cloud's quota."""

    used: Resources
    limit: Resources


def nodes_to_delete(need: Resources, limits: Iterable[Limit],
                    unused: Iterable[Unused]) -> list[Unused]:
    """The fewest oldest unused nodes whose deletion lets `need` fit in every limit.

    [] when it fits already once the deletions under way are done (wait for
    those), or when it would not fit even with every unused node deleted.
    """
    limits = list(limits)

    def fits(freed: Resources) -> bool:
        return all(quota.fits(need, lim.used - freed, lim.limit) for lim in limits)

    if fits(Resources()):
        return []
    chosen, freed = [], Resources()
    for node in sorted(unused, key=lambda n: n.ready_since):
        chosen.append(node)
        freed = freed + node.cost
        if fits(freed):
            return chosen
    return []


def still_evicted(evicted: set[str], busy: set[str], counted: Callable[[str], bool],
                  cached: Callable[[str], Node | None]) -> set[str]:
    """The nodes we chose to delete that the usage still counts and that go on going.

    `busy`: deletions under way; `counted(id)`: does the provider's index count the
    node; `cached(id)`: the node as the cache shows it. A node
    whose deletion ended stays while the index counts it: the cache shows a removal
    at once, the index takes it in only at the next pass, and meanwhile the room
    it frees must not be made a second time. A node a requestor claimed first (its
    deletion dropped, not `deleting` any more) leaves.
    """
    def going(node: Node | None) -> bool:
        return node is None or node.state == NodeState.DELETING

    return {i for i in evicted if i in busy or (counted(i) and going(cached(i)))}


class MakeRoom:
    """The request part's evictions: gathered during a walk, sent to the deletion part after."""

    def __init__(self, scope: ProviderScope, supply, capacity: Capacity, cloud: CloudView,
                 deletions: Deletions):
        self.scope = scope
        self.supply = supply
        self.capacity = capacity
        self.cloud = cloud
        self.deletions = deletions
        self.chosen: list[tuple[NodeRequest, PoolState, str, list[Unused]]] = []
        # Ids of nodes we chose, while being deleted: between the end of their delete
        # task and the removal reaching the index (the next pass) they still count as
        # used, and must not make a second node go for the same room (still_evicted).
        self.evicted: set[str] = set()

    def consider(self, req: NodeRequest, pool: PoolState, kind: str, need: list[str],
                 promised) -> None:
        """`req` is first in line at `pool`, held back by a limit of `kind`; `need`: its
        labels no ready node of the pool serves. Choose what to delete, if anything."""
        if kind not in ("pool", "provider") or not self.supply.launches_nodes or \
                req.requestor == MIN_READY_REQUESTOR:   # min-ready does not evict (Nodepool)
            return
        need = self.supply.to_launch(pool, need)
        unused = self._unused(pool, set(req.node_types), promised)
        if not need or not unused:
            return
        try:
            cost = Resources()
            for label in need:
                cost = cost + self.capacity.label_cost(pool.cfg, label)
        except errors.CostUnknown:
            return
        chosen = nodes_to_delete(cost, self._limits(pool), unused)
        if chosen:
            self.chosen.append((req, pool, kind, chosen))

    def _unused(self, pool: PoolState, asked: set[str], promised) -> list[Unused]:
        """The pool's spares of labels the request does not ask for; not those requests
        taken in this pass will claim (the oldest of each label), nor any being deleted."""
        index, name, cache = self.scope.index, pool.cfg.name, self.scope.ctx.cache
        busy = self.deletions.busy() | self.evicted
        out: dict[str, Unused] = {}
        for label in pool.cfg.labels:
            if label in asked:
                continue
            for node in index.spares(name, label)[promised[(name, label)]:]:
                if node.id in busy or node.id in out or cache.is_node_locked(node.id) or \
                        any(t in asked for t in node.type):
                    continue
                out[node.id] = Unused(node.id, label, self.capacity.node_cost(node),
                                      node.state_time)
        return list(out.values())

    def _limits(self, pool: PoolState) -> list[Limit]:
        """The pool's limits and the cloud's quota, with what our deletions will free."""
        cache, index = self.scope.ctx.cache, self.scope.index
        pending = self.capacity.pending_nodes()
        busy = self.deletions.busy()
        self.evicted = still_evicted(self.evicted, busy, index.known, cache.get_node)
        name = pool.cfg.name
        freed_pool = freed_all = Resources()   # what the index counts for what goes
        for counted in filter(None, map(index.counted, busy | self.evicted)):
            freed_all = freed_all + counted[1]
            if counted[0] == name:
                freed_pool = freed_pool + counted[1]

        def used(nodes: list[Node]) -> Resources:
            return quota.usage(nodes, self.capacity.node_cost)

        out = [Limit(index.usage(name) + used([n for n in pending if n.pool == name])
                     - freed_pool, quota.pool_limits(pool.cfg))]
        if self.cloud.limits is not None and not pool.cfg.ignore_provider_quota:
            out.append(Limit(index.usage() + used(pending) - freed_all, self.cloud.limits))
        return out

    def apply(self, notes) -> None:
        """Send the chosen deletions (the deletion part locks each node, then writes
        `deleting` over the version the cache showed); say why, on the request too."""
        chosen, self.chosen = self.chosen, []
        now = self.scope.ctx.clock()
        for req, pool, kind, nodes in chosen:
            for node in nodes:
                age = max(0.0, now - node.ready_since)
                reason = (f"unused ready {node.label} node (ready {age:.0f}s) deleted to make "
                          f"room for request {req.id} ({', '.join(req.node_types)}): pool "
                          f"{pool.cfg.name} at its {kind} limit")
                self.scope.log.info("node=%s provider=%s Making room: %s", node.node_id,
                                    self.scope.name, reason)
                self.deletions.lock_for_deletion(node.node_id, reason)
                self.evicted.add(node.node_id)
                self.scope.ctx.metrics.unused_node_deleted(self.scope.name, pool.cfg.name)
            notes.making_room(req, pool, kind, [(n.node_id, n.label) for n in nodes])
