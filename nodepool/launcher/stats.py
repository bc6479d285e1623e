"""The periodic gauges: node counts, addressable requests, max-servers, tenant limits, quota used.

Computed from the cache (no ZooKeeper read) on a thread of its own, every
`tuning.metrics_interval` seconds, never on a provider loop. The cluster's
gauges are reported by one launcher only, the one holding the min-ready
lease (`Launcher.min_ready_owner`); every launcher reports the quota its own
nodes use in the providers it holds (Prometheus only). Names and their
zero-initialisation follow Nodepool's (nodepool/stats.py there).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable, Iterable

from nodepool.launcher.context import LauncherContext
from nodepool.metrics import Gauges
from nodepool.metrics import normalize_statsd_name as norm
from nodepool.model import NodeState

log = logging.getLogger("nodepool.launcher.stats")

# Nodepool's `tenant_limits` keys for our TenantLimits fields.
TENANT_KEYS = (("max_servers", "instances"), ("max_cores", "cores"), ("max_ram", "ram"))
# ... and for the config keys kept as extras (Nodepool's setTenantResourceLimits).
TENANT_EXTRA_KEYS = {"max-volumes": "volumes", "max-volume-gb": "volume-gb"}


def cluster_gauges(ctx: LauncherContext) -> Gauges:
    """Every cluster gauge from the cache and the config (pure but for the reads)."""
    g = Gauges()
    config = ctx.config
    components = ctx.cache.pool_components()
    providers = set(config.providers) | {str(c.get("provider_name")) for c in components}
    labels = set(config.labels)
    for c in components:
        labels.update(c.get("supported_labels") or ())
    for state in NodeState:
        s = state.value
        g.set(f"nodepool.nodes.{s}", "nodepool_nodes", (s,), 0)
        for p in providers:
            g.set(f"nodepool.provider.{norm(p)}.nodes.{s}", "nodepool_provider_nodes", (p, s), 0)
        for label in labels:
            g.set(f"nodepool.label.{norm(label)}.nodes.{s}", "nodepool_label_nodes",
                  (label, s), 0)
    for node in ctx.cache.nodes():
        s = node.state.value
        g.add(f"nodepool.nodes.{s}", "nodepool_nodes", (s,))
        for label in node.type:
            g.add(f"nodepool.label.{norm(label)}.nodes.{s}", "nodepool_label_nodes", (label, s))
        p = node.provider or ""
        g.add(f"nodepool.provider.{norm(p)}.nodes.{s}", "nodepool_provider_nodes", (p, s))
    _requests(g, ctx, components)
    for name, label in config.labels.items():
        g.set(None, "nodepool_label_min_ready", (name,), label.min_ready)
    for name, provider in config.providers.items():
        total = sum(p.max_servers for p in provider.pools.values()
                    if p.max_servers and not math.isinf(p.max_servers))
        g.set(f"nodepool.provider.{norm(name)}.max_servers", "nodepool_provider_max_servers",
              (name,), total)
    for tenant, limits in config.tenant_resource_limits.items():
        pairs = [(key, getattr(limits, field)) for field, key in TENANT_KEYS]
        extra = [(TENANT_EXTRA_KEYS.get(k, k), v) for k, v in limits.extra.items()]
        for key, value in [*pairs, *extra]:
            if value is not None and not math.isinf(value):   # unlimited: nothing to graph
                g.set(f"nodepool.tenant_limits.{norm(tenant)}.{norm(key)}",
                      "nodepool_tenant_limit", (tenant, key), value)
    return g


def _requests(g: Gauges, ctx: LauncherContext, components: list[dict]) -> None:
    """nodepool.provider.<p>.pool.<pool>.addressable_requests, as Nodepool counts it: every
    request in the cache (any state) whose labels the pool offers, whoever serves it."""
    pools = {}
    for c in components:
        if c.get("name") is None:
            continue
        key = (str(c.get("provider_name")), str(c["name"]))
        pools[key] = pools.get(key, frozenset()) | frozenset(c.get("supported_labels") or ())
    counts = dict.fromkeys(pools, 0)
    for req in ctx.cache.requests():
        wanted = set(req.node_types)
        for key, offered in pools.items():
            if wanted <= offered:
                counts[key] += 1
    for (provider, pool), n in counts.items():
        g.set(f"nodepool.provider.{norm(provider)}.pool.{norm(pool)}.addressable_requests",
              "nodepool_pool_addressable_requests", (provider, pool), n)


def quota_used(ctx: LauncherContext, providers: Iterable[str]) -> dict[tuple[str, str], float]:
    """(provider, resource) -> what the nodes of `providers` use (their `resources`)."""
    mine = set(providers)
    used: dict[tuple[str, str], float] = {}
    for p in mine:
        used[(p, "instances")] = 0
    for node in ctx.cache.nodes():
        if node.provider not in mine or node.state == NodeState.DELETED:
            continue
        for key, value in (node.resources or {"instances": 1}).items():
            if isinstance(value, (int, float)):
                used[(node.provider, key)] = used.get((node.provider, key), 0) + value
    return used


class StatsReporter:
    """Reports the gauges every `interval` seconds on its thread ("stats")."""

    def __init__(self, ctx: LauncherContext, is_owner: Callable[[], bool],
                 providers: Callable[[], Iterable[str]], interval: float):
        self.ctx = ctx
        self._is_owner = is_owner
        self._providers = providers
        self.interval = interval
        self.reports = 0          # reports made (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def report(self) -> None:
        metrics = self.ctx.metrics
        metrics.gauges(cluster_gauges(self.ctx) if self._is_owner() else None)
        metrics.quota_used(quota_used(self.ctx, self._providers()))
        self.reports += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception:   # a bug here must not stop later reports
                log.exception("Reporting the gauges failed")
