"""The status page's figures: one summary dict of a launcher, from its memory alone.

`summary(launcher)` reads the launcher's cache (nodes, requests, pool
components), its config and its provider workers (pools' paused state, what
their last walk deferred on), plus a `StatusFeed` for recent hand-overs and
failures. No ZooKeeper round trip: it works the same while ZooKeeper is
down (the figures are then the cache's last view; `connected` is False and
`zookeeper_problem` says why, as /ready would).
It costs one pass over the cached nodes and one over the cached requests;
lists are capped so the JSON stays small with 10,000 nodes (see
doc/operation.md, "The status page" for the figures).
"""

from __future__ import annotations

import collections
import heapq
import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from nodepool.model import NodeRequest, NodeState, RequestState
from nodepool.web.endpoints import zookeeper_problem
from nodepool.web.status_feed import StatusFeed

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher

WAITING_SHOWN = 50      # the oldest waiting requests listed; the rest are counted

BUILDING = frozenset({NodeState.INIT, NodeState.BUILDING, NodeState.TESTING})
WAITING = frozenset({RequestState.REQUESTED, RequestState.PENDING})

# What a pool's last walk deferred on (nodepool/launcher/deferral.py kinds), in words.
DEFERRED = {
    "pool": "at the pool's limit",
    "provider": "at the provider's quota",
    "concurrency": "at max-concurrency",
    "cost": "reading flavors to know the label's cost",
    "hosts busy": "every host of the pool is busy",
    "paused": "paused",
}


def summary(launcher: Launcher, reasons: Mapping[str, str] | None = None,
            feed: StatusFeed | None = None, now: float | None = None) -> dict[str, Any]:
    """The status of `launcher` as a JSON-ready dict (see the module docstring).

    `reasons`: why a request waits, by request id (from its timeline); what
    it lacks is guessed from the pools' state here (`reason_source` says
    which).
    """
    ctx = launcher.ctx
    now = ctx.clock() if now is None else now
    cache = ctx.cache
    nodes, pools_used, labels = _node_counts(cache)
    requests = cache.requests()
    live = _LiveView(launcher)
    problem = zookeeper_problem(launcher)
    out: dict[str, Any] = {
        "launcher": launcher.hostname,
        "time": now,
        "connected": problem is None,
        "zookeeper_problem": problem,
        "disconnected_since": feed.disconnected_since if feed is not None else None,
        "nodes": nodes,
        "providers": _providers(ctx.config, live, pools_used),
        "labels": _labels(ctx.config, labels, requests),
        "requests": _requests(requests, live, reasons or {}, feed, now),
        "failures": feed.failures() if feed is not None else [],
        "handovers": _handovers(feed.handovers() if feed is not None else []),
    }
    return out


# -- nodes --------------------------------------------------------------------------------

def _node_counts(cache) -> tuple[dict, collections.Counter, dict[str, collections.Counter]]:
    """One pass over the cached nodes: totals by state, nodes per (provider, pool), and
    per label ready / spare / building / in-use / other.

    The pass only groups nodes by what matters here (a few hundred groups at most);
    the figures are added up per group: half the cost of counting node by node.
    """
    locked = cache.is_node_locked
    ready = NodeState.READY
    groups: collections.Counter = collections.Counter()
    for node in cache.nodes():
        state = node.state
        spare = state is ready and node.allocated_to is None and not locked(node.id)
        groups[(state, node.provider, node.pool, tuple(node.type), spare)] += 1
    by_state: collections.Counter = collections.Counter()
    pools: collections.Counter = collections.Counter()
    labels: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (state, provider, pool, types, spare), n in groups.items():
        by_state[state.value] += n
        if state != NodeState.DELETED:
            pools[(provider, pool)] += n
        kind = _KIND.get(state, "other")
        for label in types:
            labels[label][kind] += n
            if spare:
                labels[label]["spare"] += n
    return ({"total": sum(by_state.values()), "by_state": dict(sorted(by_state.items()))},
            pools, labels)


_KIND = {NodeState.READY: "ready", NodeState.IN_USE: "in_use",
         **{state: "building" for state in BUILDING}}


def _labels(config, counts: dict[str, collections.Counter],
            requests: list[NodeRequest]) -> list[dict]:
    waiting: collections.Counter = collections.Counter()
    for request in requests:
        if request.state in WAITING:
            waiting.update(set(request.node_types))
    names = list(config.labels) + sorted(set(counts) - set(config.labels))
    out = []
    for name in names:
        label = config.labels.get(name)
        c = counts.get(name, collections.Counter())
        min_ready = label.min_ready if label is not None else 0
        out.append({"name": name, "min_ready": min_ready, "ready": c["ready"],
                    "spare": c["spare"], "building": c["building"], "in_use": c["in_use"],
                    "other": c["other"], "waiting": waiting[name],
                    "short": c["spare"] < min_ready, "configured": label is not None})
    return out


# -- providers and pools ------------------------------------------------------------------

class _LiveView:
    """What this launcher's workers know now: their pools' pause and deferral, the
    requests they hold; and every registered pool component. Copies, read once."""

    def __init__(self, launcher: Launcher):
        self.workers = {w.name: w for w in launcher.worker_snapshot}
        self.components: dict[tuple[str, str], dict] = {}
        for data in launcher.ctx.cache.pool_components():
            self.components[(str(data.get("provider_name")), str(data.get("name")))] = data
        self.deferring: dict[tuple[str, str], str] = {}
        self.handlers: dict[str, tuple[str, str, str | None]] = {}
        for name, worker in self.workers.items():
            for pool_name, deferring in dict(worker.requests.deferral.deferring).items():
                self.deferring[(name, pool_name)] = deferring.kind
            for request_id, h in dict(worker.requests.handlers).items():
                self.handlers[request_id] = (name, h.pool.cfg.name, h.waiting)

    def pool_state(self, provider: str, pool: str) -> tuple[bool, str, str | None]:
        """(paused, why, which launcher serves it)."""
        component = self.components.get((provider, pool))
        host = component.get("hostname") if component else None
        worker = self.workers.get(provider)
        state = worker.pools.get(pool) if worker is not None else None
        if state is not None:
            kind = self.deferring.get((provider, pool))
            why = DEFERRED.get(kind, kind) if kind else (state.pause_reason or "paused")
            return bool(state.paused), why if state.paused else "", host
        return bool(component and component.get("paused")), "", host


def _providers(config, live: _LiveView, used: collections.Counter) -> list[dict]:
    out = []
    for provider in config.providers.values():
        worker = live.workers.get(provider.name)
        pools = []
        for pool in provider.pools.values():
            paused, why, host = live.pool_state(provider.name, pool.name)
            state = worker.pools.get(pool.name) if worker is not None else None
            limit = state.view.max_servers if state is not None else pool.max_servers
            pools.append({"name": pool.name, "used": used[(provider.name, pool.name)],
                          "max": _finite(limit), "paused": paused, "reason": why,
                          "labels": list(pool.labels), "launcher": host})
        out.append({"name": provider.name, "driver": provider.driver,
                    "ours": worker is not None,
                    "used": sum(p["used"] for p in pools), "pools": pools})
    return out


def _finite(value: float) -> float | None:
    """JSON has no infinity: "no limit" is null."""
    return None if value is None or math.isinf(value) else value


# -- requests -----------------------------------------------------------------------------

def _requests(requests: list[NodeRequest], live: _LiveView, reasons: Mapping[str, str],
              feed: StatusFeed | None, now: float) -> dict:
    by_state = collections.Counter(r.state.value for r in requests)
    waiting = [r for r in requests if r.state in WAITING]

    def since(r: NodeRequest) -> float:
        seen = feed.first_seen(r.id) if feed is not None else None
        return r.created_time or seen or r.state_time or now

    oldest = heapq.nsmallest(WAITING_SHOWN, waiting, key=since)
    shown = []
    for r in oldest:
        reason, source = reasons.get(r.id), "timeline"
        if not reason:
            reason, source = _guess_reason(r, live), "launcher"
        shown.append({"id": r.id, "labels": list(r.node_types), "state": r.state.value,
                      "age": max(0.0, now - since(r)), "requestor": r.requestor,
                      "declined_by": len(r.declined_by), "reason": reason,
                      "reason_source": source})
    return {"total": len(requests), "by_state": dict(sorted(by_state.items())),
            "waiting_total": len(waiting), "waiting": shown,
            "waiting_more": len(waiting) - len(shown)}


def _guess_reason(request: NodeRequest, live: _LiveView) -> str:
    """Why a request waits, from what the pools show now (no timeline at hand)."""
    held = live.handlers.get(request.id)
    if held is not None:
        provider, pool, waiting = held
        return f"{provider}/{pool}: {waiting}" if waiting else f"{provider}/{pool}: launching"
    if request.state == RequestState.PENDING:
        return "pending: held by another launcher"
    wanted = set(request.node_types)
    offering = [(key, c) for key, c in live.components.items()
                if wanted <= set(c.get("supported_labels") or ())]
    if not offering:
        return f"no registered pool offers {', '.join(sorted(wanted)) or 'any label'}"
    open_pools = [(key, c) for key, c in offering if c.get("id") not in request.declined_by]
    if not open_pools:
        return "declined by every pool offering its labels"
    blocked = _blocked(open_pools, live)
    if len(blocked) == len(open_pools):
        return "; ".join(blocked)
    return "queued: no pool has taken it yet"


def _blocked(pools: Iterable[tuple[tuple[str, str], dict]], live: _LiveView) -> list[str]:
    out = []
    for (provider, pool), component in pools:
        kind = live.deferring.get((provider, pool))
        if kind is not None:
            out.append(f"{provider}/{pool} {DEFERRED.get(kind, kind)}")
        elif component.get("paused"):
            out.append(f"{provider}/{pool} paused")
    return out


# -- hand-overs ---------------------------------------------------------------------------

def _handovers(points: list[tuple[float, float, str]]) -> dict:
    """The chart's points and a few figures over them."""
    seconds = sorted(p[1] for p in points)

    def pct(q: float) -> float | None:
        if not seconds:
            return None
        return seconds[min(len(seconds) - 1, int(q * len(seconds)))]
    return {"points": [[round(t, 3), round(s, 4), labels] for t, s, labels in points],
            "count": len(seconds), "p50": pct(0.5), "p95": pct(0.95),
            "max": seconds[-1] if seconds else None}
