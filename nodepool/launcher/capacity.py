"""Whether a provider worker may launch more: pool, provider and tenant limits.

A part of ProviderWorker that holds no state of its own: it reads the
index of our nodes, the launches under way (including those the cache has
not reported yet, so two launches in one pass never both take the last
slot) and the cloud's limits, and answers with the limit a launch would
break.
"""

from __future__ import annotations

from typing import Callable

from nodepool import errors
from nodepool.drivers.adapter import Resources
from nodepool.launcher import quota
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.model import Node


class Capacity:
    """Launch limits of one provider, from the index, the launches and the limits."""

    def __init__(self, scope: ProviderScope, cloud: CloudView,
                 in_flight: Callable[[], list[Node]]):
        self.scope = scope
        self.cloud = cloud
        self._in_flight = in_flight     # nodes of launches under way (and spares starting)

    def label_cost(self, pool_cfg, label_name: str) -> Resources:
        label = pool_cfg.labels.get(label_name)
        if label is None:
            return Resources(instances=1)
        return self.scope.adapter.label_cost(pool_cfg, label)

    def node_cost(self, node: Node) -> Resources:
        pool = self.scope.pools.get(node.pool or "")
        if pool is not None and node.type:
            return quota.node_cost(node, lambda n: self._known_cost(pool.cfg, n.type[0]))
        return quota.node_cost(node, lambda n: Resources(instances=1))

    def _known_cost(self, pool_cfg, label_name: str) -> Resources:
        """A node's cost for counting usage: one instance while the flavors are unread
        (nodes record their resources when launched, so this is rare)."""
        try:
            return self.label_cost(pool_cfg, label_name)
        except errors.CostUnknown:
            return Resources(instances=1)

    def pending_nodes(self) -> list[Node]:
        """Launches this loop made that the cache has not reported yet."""
        index = self.scope.index
        return [n for n in self._in_flight() if n.id is None or not index.known(n.id)]

    def can_launch(self, pool: PoolState, labels: list[str], tenant: str | None) -> bool:
        return self.launch_blocker(pool, labels, tenant) is None

    def launch_blocker(self, pool: PoolState, labels: list[str], tenant: str | None
                       ) -> str | None:
        """Which limit launching `labels` in `pool` would break right now, if any:
        "concurrency" (max-concurrency 0: the provider launches nothing), "pool",
        "provider", "tenant", or "cost" while the labels' cost is unknown (the limits
        read that tells it is asked for). A max-concurrency above 0 limits the
        requests handled at once, not launches (the request part checks it)."""
        need = Resources()
        try:
            for label in labels:
                need = need + self.label_cost(pool.cfg, label)
        except errors.CostUnknown:
            self.cloud.refresh_limits()   # reads the flavors too, on the executor, backed off
            return "cost"
        if self.scope.provider.max_concurrency == 0:
            return "concurrency"    # the provider handles no requests: it launches nothing
        index, pending = self.scope.index, self.pending_nodes()
        in_pool = index.usage(pool.cfg.name) + quota.usage(
            [n for n in pending if n.pool == pool.cfg.name], self.node_cost)
        if not quota.fits(need, in_pool, quota.pool_limits(pool.cfg)):
            return "pool"
        limits = self.cloud.limits
        if limits is not None and not pool.cfg.ignore_provider_quota:
            total = index.usage() + quota.usage(pending, self.node_cost)
            if not quota.fits(need, total, limits):
                return "provider"
        if self._past_tenant_limits(need, tenant):
            return "tenant"
        return None

    def request_past_tenant_limits(self, pool: PoolState, labels: list[str],
                                   tenant: str | None) -> bool:
        """Would the whole request take its tenant past a tenant-resource-limits key,
        however its nodes are had (spares too)? Nodepool checks this before it accepts a
        request; a claimed spare then counts as the tenant's (it carries tenant_name)."""
        if not tenant or tenant not in self.scope.ctx.config.tenant_resource_limits:
            return False
        need = Resources()
        for label in labels:
            need = need + self._known_cost(pool.cfg, label)
        return self._past_tenant_limits(need, tenant)

    def _past_tenant_limits(self, need: Resources, tenant: str | None) -> bool:
        ctx = self.scope.ctx
        tenant_limits = ctx.config.tenant_resource_limits.get(tenant) if tenant else None
        if tenant_limits is None:
            return False
        tenant_nodes = [n for n in ctx.cache.nodes() if n.tenant_name == tenant]
        return not quota.fits(need, quota.usage(tenant_nodes, self.node_cost),
                              quota.tenant_limits(tenant_limits))

    def never_fits(self, pool: PoolState, labels: list[str]) -> str | None:
        """Why the pool could never hold these labels, even empty: past its own absolute
        limits, or past the cloud's whole quota (Nodepool's hasProviderQuota), so the
        request is declined rather than left waiting for ever. None while costs or the
        cloud's limits are unknown: a request is declined only for certain. A static pool
        is as big as its host slots, whatever its max-servers (Nodepool reads max-servers
        there only as `0`: disabled); the supply's pool size already says so."""
        if not self.scope.adapter.launches:
            return None
        need = Resources()
        for label in labels:
            if label not in pool.cfg.labels:
                return None  # the label check declines it with a better reason
            try:
                need = need + self.label_cost(pool.cfg, label)
            except errors.CostUnknown:
                return None
        over = need.over(quota.pool_limits(pool.cfg))
        if over:
            return f"the request needs {over}: more than pool {pool.cfg.name} allows"
        limits = self.cloud.limits
        if limits is not None and not pool.cfg.ignore_provider_quota:
            over = need.over(limits)
            if over:
                return (f"the request needs {over}: more than the whole quota of provider "
                        f"{self.scope.name}")
        return None
