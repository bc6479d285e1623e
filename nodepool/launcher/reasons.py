"""The request part's timeline notes: why a pool waits, with the numbers, in words.

A part of the request part (handling.py) of one provider worker, on its loop
thread. Each method is one event of a request's timeline (nodepool/timeline.py)
appended to the launcher's in-memory recorder (`ctx.timeline`): no I/O. The
texts carry the figures that decided (`10 of 10 servers`), computed only when
a pool defers, from what the capacity part already reads.
"""

from __future__ import annotations

import math
import time

from nodepool import errors
from nodepool import timeline as tl
from nodepool.drivers.adapter import Resources
from nodepool.launcher import quota
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.scope import PoolState, ProviderScope

LINE_REFRESH = 10.0   # seconds: a request waiting in line is noted again at most this often

_UNITS = (("instances", "servers"), ("cores", "cores"), ("ram", "MiB of RAM"),
          ("volumes", "volumes"), ("volume_gb", "GB of volumes"))


def _over(need: Resources, used: Resources, limit: Resources | None) -> str:
    """The limits `need` would break, as `10 of 10 servers, 40 of 40 cores`."""
    if limit is None:
        return ""
    parts = []
    for field, unit in _UNITS:
        cap, now = getattr(limit, field), getattr(used, field)
        if not math.isinf(cap) and now + getattr(need, field) > cap:
            parts.append(f"{now:g} of {cap:g} {unit}")
    return ", ".join(parts)


def _need(capacity: Capacity, pool: PoolState, labels: list[str]) -> Resources:
    need = Resources()
    for label in labels:
        try:
            need = need + capacity.label_cost(pool.cfg, label)
        except errors.CostUnknown:
            need = need + Resources(instances=1)
    return need


def blocker_text(capacity: Capacity, pool: PoolState, kind: str, labels: list[str],
                 tenant: str | None) -> str:
    """Why `pool` cannot launch `labels` now, for a limit of `kind` (launch_blocker's)."""
    scope = capacity.scope
    where = f"pool {pool.cfg.name} of provider {scope.name}"
    if kind == "pool":
        pending = [n for n in capacity.pending_nodes() if n.pool == pool.cfg.name]
        used = scope.index.usage(pool.cfg.name) + quota.usage(pending, capacity.node_cost)
        over = _over(_need(capacity, pool, labels), used, quota.pool_limits(pool.cfg))
        return f"{where} is at quota" + (f", {over}" if over else "")
    if kind == "provider":
        used = scope.index.usage() + quota.usage(capacity.pending_nodes(), capacity.node_cost)
        over = _over(_need(capacity, pool, labels), used, capacity.cloud.limits)
        return f"provider {scope.name} is at its cloud quota" + (f", {over}" if over else "")
    if kind == "tenant":
        limits = scope.ctx.config.tenant_resource_limits.get(tenant) if tenant else None
        nodes = [n for n in scope.ctx.cache.nodes() if n.tenant_name == tenant]
        over = _over(_need(capacity, pool, labels), quota.usage(nodes, capacity.node_cost),
                     quota.tenant_limits(limits))
        return f"tenant {tenant} is at its resource limit" + (f", {over}" if over else "")
    if kind == "concurrency":
        limit = scope.provider.max_concurrency
        if limit == 0:
            return f"provider {scope.name} has max-concurrency 0: it handles no requests"
        return (f"provider {scope.name} is handling {limit} requests already, "
                f"its max-concurrency")
    if kind == "cost":
        return (f"the cost of {', '.join(sorted(set(labels)))} in provider {scope.name} is "
                f"not known yet (its flavors or instance types are being read)")
    if kind == "hosts busy":
        return f"every host of {where} is busy"
    if kind == "paused":
        return f"{where} is paused" + (f": {pool.pause_reason}" if pool.pause_reason else "")
    return f"{where} waits ({kind})"


class RequestNotes:
    """Timeline events of one provider worker's request part."""

    def __init__(self, scope: ProviderScope, capacity: Capacity):
        self.scope = scope
        self.capacity = capacity
        self.record = scope.ctx.timeline.record
        # (request, pool) -> (what was said, when): a walk tells every request waiting
        # in line again; the same words within LINE_REFRESH are not recorded again.
        self._told: dict[tuple[str, str], tuple[str, str, float]] = {}

    def forget(self, request_id: str) -> None:
        for pool in self.scope.pools:
            self._told.pop((request_id, pool), None)

    def seen(self, request_id: str, pool: PoolState) -> None:
        self.record(request_id, self.scope.name, tl.SEEN, pool=pool.cfg.name, once=True,
                    launcher=self.scope.ctx.hostname)

    def declined(self, request_id: str, pool: PoolState, reason: str, failed: bool) -> None:
        self.record(request_id, self.scope.name, tl.DECLINED, reason, pool=pool.cfg.name)
        if failed:
            self.record(request_id, self.scope.name, tl.FAILED,
                        f"declined by every pool (last: {reason})", pool=pool.cfg.name)

    def deferred(self, req, pool: PoolState, kind: str) -> None:
        """The request is first in line at `pool`, which waits for a limit of `kind`
        (or, for "tenant", it waits alone: the pool takes later requests). The figures
        are said here only: readers count the requests in line behind it."""
        text = blocker_text(self.capacity, pool, kind, list(req.node_types), req.tenant_name)
        self.record(req.id, self.scope.name, tl.DEFERRED, text, pool=pool.cfg.name,
                    cause=kind)

    def behind(self, req, pool: PoolState, blocked: tuple[str, str]) -> None:
        """The pool takes nothing now: a request ahead waits in it for a limit, or it is
        paused. Said without figures, so that the queue moving rewrites nobody's
        timeline but its first in line's; repeats within LINE_REFRESH cost a lookup."""
        kind, head = blocked
        name = pool.cfg.name
        if head:
            cause, text = tl.BEHIND, f"pool {name} of provider {self.scope.name} waits " \
                                     f"({kind}) for a request ahead of it"
        else:
            cause = kind
            text = blocker_text(self.capacity, pool, kind, list(req.node_types),
                                req.tenant_name)
        now = time.monotonic()
        told = self._told.get((req.id, name))
        if told is not None and told[:2] == (cause, text) and now - told[2] < LINE_REFRESH:
            return
        self._told[(req.id, name)] = (cause, text, now)
        self.record(req.id, self.scope.name, tl.DEFERRED, text, pool=name, cause=cause,
                    waits_for=kind)

    def making_room(self, req, pool: PoolState, kind: str,
                    nodes: list[tuple[str, str]]) -> None:
        """The request is first in line at `pool`, at its `kind` limit, and fits once
        these unused ready nodes (id, label) of other labels are deleted (eviction.py)."""
        where = f"pool {pool.cfg.name} of provider {self.scope.name}"
        said = ", ".join(f"{node_id} ({label})" for node_id, label in nodes)
        self.record(req.id, self.scope.name, tl.DEFERRED,
                    f"{where} is at its {kind} limit: deleting unused ready node(s) {said} "
                    f"to make room", pool=pool.cfg.name, cause="making room", waits_for=kind)

    def held_waiting(self, h) -> None:
        """A request we hold has empty slots the supply cannot fill now."""
        kind = "hosts busy" if not self.scope.adapter.launches else \
            self.capacity.launch_blocker(h.pool, [h.request.node_types[i] for i in h.missing()],
                                         h.request.tenant_name) or "pool"
        text = blocker_text(self.capacity, h.pool, kind,
                            [h.request.node_types[i] for i in h.missing()], h.request.tenant_name)
        self.record(h.request.id, self.scope.name, tl.DEFERRED, text, pool=h.pool.cfg.name,
                    cause=kind)

    def node_ready(self, request_id: str, pool: PoolState, node_id: str) -> None:
        self.record(request_id, self.scope.name, tl.NODE_READY, pool=pool.cfg.name,
                    node=node_id)

    def quota_refused(self, request_id: str | None, pool: PoolState, reason: str) -> None:
        self.record(request_id, self.scope.name, tl.DEFERRED,
                    f"the cloud refused a launch in provider {self.scope.name} for quota "
                    f"({reason}); the pool pauses", pool=pool.cfg.name, cause="quota refused")

    def fulfilled(self, request_id: str, pool: PoolState, nodes: list[str],
                  ready: bool = False) -> None:
        text = ("with ready " if ready else "with ") + ", ".join(nodes)
        self.record(request_id, self.scope.name, tl.FULFILLED, text, pool=pool.cfg.name)


_ERROR_WORDS = {"LaunchFailure": "launch failed", "CapacityError": "no capacity",
                "ConfigurationError": "configuration error", "TransientError": "transient error",
                "QuotaError": "quota", "LeaseUnsure": "lease unsure"}


def error_text(error: BaseException) -> str:
    """A driver's classified error as `launch failed: <message>`."""
    kind = type(error).__name__
    return f"{_ERROR_WORDS.get(kind, kind)}: {error}"
