"""Incremental views of one provider's nodes: ready spares by pool and label, and usage.

Kept up to date from cache events (each changed node is looked at once), so
a loop pass costs what changed, not the size of the fleet: with 10,000 nodes
a hand-over looks at the few spares of its label, and a quota check reads
a running total.
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable

from nodepool.drivers.adapter import Resources
from nodepool.launcher.planner import is_spare
from nodepool.model import Node, NodeState


class ProviderIndex:
    """Ready, unallocated, unlocked nodes per (pool, label); resources used per pool."""

    def __init__(self, provider: str, cost: Callable[[Node], Resources]):
        self.provider = provider
        self.cost = cost
        # pool -> label -> node id -> node, in the order they became spares.
        self._ready: dict[str, dict[str, dict[str, Node]]] = collections.defaultdict(
            lambda: collections.defaultdict(dict))
        self._entries: dict[str, tuple[str, Resources, list[str]]] = {}
        self._pool_usage: dict[str, Resources] = collections.defaultdict(Resources)
        self.total = Resources()
        # request id -> ids of our nodes allocated to it (to revisit when it vanishes).
        self.allocated: dict[str, set[str]] = collections.defaultdict(set)
        self._allocated_of: dict[str, str] = {}

    def update(self, node_id: str, node: Node | None, locked: bool) -> None:
        """Forget what we knew of the node; learn what it is now (None = gone)."""
        old = self._entries.pop(node_id, None)
        if old is not None:
            pool, cost, labels = old
            self._pool_usage[pool] = self._pool_usage[pool] - cost
            self.total = self.total - cost
            for label in labels:
                self._ready[pool][label].pop(node_id, None)
        request = self._allocated_of.pop(node_id, None)
        if request is not None:
            self.allocated[request].discard(node_id)
            if not self.allocated[request]:
                del self.allocated[request]
        if node is None or node.provider != self.provider or node.state == NodeState.DELETED:
            return
        pool = node.pool or ""
        cost = self.cost(node)
        labels = list(node.type) if is_spare(node, locked) else []
        self._entries[node_id] = (pool, cost, labels)
        self._pool_usage[pool] = self._pool_usage[pool] + cost
        self.total = self.total + cost
        for label in labels:
            self._ready[pool][label][node_id] = node
        if node.allocated_to is not None:
            self.allocated[node.allocated_to].add(node_id)
            self._allocated_of[node_id] = node.allocated_to

    def spares(self, pool: str, label: str, limit: int | None = None) -> list[Node]:
        """Spares of the label, oldest first; at most `limit`."""
        return list(itertools.islice(self._ready[pool][label].values(), limit))

    def spare_count(self, pool: str, label: str) -> int:
        return len(self._ready[pool][label])

    def spare_total(self, pool: str) -> int:
        return sum(len(by_id) for by_id in self._ready[pool].values())

    def usage(self, pool: str | None = None) -> Resources:
        return self.total if pool is None else self._pool_usage[pool]

    def known(self, node_id: str) -> bool:
        return node_id in self._entries

    def counted(self, node_id: str) -> tuple[str, Resources] | None:
        """(pool, cost) the usage counts for the node; None when it counts nothing."""
        entry = self._entries.get(node_id)
        return None if entry is None else (entry[0], entry[1])
