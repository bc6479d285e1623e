"""min-ready: keep a number of unallocated nodes per label.

Only the holder of the min-ready lease runs this, so two launchers never
both top a label up. A label that a provider worker of this process can
launch is topped up by asking that worker for spare launches directly
(spares.py): no node request is written. A label only other launchers'
pools serve is requested as before: requests at priority 900 with requestor
`NodePool:min-ready` and `reuse: false`, deleted once fulfilled (the
launcher then releases their nodes as ready spares) or failed.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Mapping

from nodepool.launcher.context import MIN_READY_REQUESTOR
from nodepool.launcher.planner import RegisteredPool
from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import paths

log = logging.getLogger("nodepool.launcher.minready")

PRIORITY = 900
FAILED_BACKOFF = 60.0   # seconds before retrying a label whose min-ready request or launch failed
REFUSAL_HOLD = 2.0      # seconds a worker that could not launch a label is not asked again
_SPARE_STATES = {NodeState.READY, NodeState.INIT, NodeState.BUILDING, NodeState.TESTING}


def deficits(labels: Mapping[str, object], nodes: Iterable[Node],
             requests: Iterable[NodeRequest], registered: Iterable[RegisteredPool],
             under_way: Mapping[str, str] | None = None,
             asked: Mapping[str, int] | None = None) -> dict[str, int]:
    """How many more nodes each label needs now (pure).

    `under_way` (node id -> label) are spare launches of this process that the
    cache may not show yet: each counts once, whether or not the cache lists
    it too. `asked` (label -> count) are spare launches asked for, not started.
    """
    reqs = list(requests)
    live = {r.id for r in reqs}
    ours = {r.id: r for r in reqs if r.requestor == MIN_READY_REQUESTOR}
    outstanding: dict[str, int] = dict(asked or {})
    for r in ours.values():
        if r.state in (RequestState.REQUESTED, RequestState.PENDING):
            for label in r.node_types:
                outstanding[label] = outstanding.get(label, 0) + 1
    have: dict[str, int] = {}
    counted: set[str] = set()
    for node in nodes:
        if node.state not in _SPARE_STATES:
            continue
        spare = node.allocated_to is None or (
            node.allocated_to in ours and ours[node.allocated_to].state == RequestState.FULFILLED)
        if node.allocated_to is not None and node.allocated_to not in ours \
                and node.state == NodeState.READY and node.allocated_to not in live:
            spare = True    # its request is gone: it is about to be released
        if spare:
            counted.add(node.id)
            for label in node.type:
                have[label] = have.get(label, 0) + 1
    for node_id, label in (under_way or {}).items():
        if node_id not in counted:
            have[label] = have.get(label, 0) + 1
    served = set()
    for pool in registered:
        served |= pool.labels
    out = {}
    for name, label in labels.items():
        want = getattr(label, "min_ready", 0) or 0
        if want <= 0 or name not in served:
            continue
        short = want - have.get(name, 0) - outstanding.get(name, 0)
        if short > 0:
            out[name] = short
    return out


class MinReady:
    """Applies `deficits`: spare launches by our own workers, else requests.

    `workers` returns this launcher's provider workers (called on the
    launcher thread, like `run`).
    """

    def __init__(self, ctx, workers: Callable[[], Iterable[Any]] = lambda: ()):
        self.ctx = ctx
        self.workers = workers
        self.failed_until: dict[str, float] = {}
        # Written by us but maybe not in the cache yet: counted, so a quick
        # second pass does not request the same nodes twice.
        self.submitted: dict[str, str] = {}
        self.deleted: set[str] = set()

    def run(self) -> None:
        now = time.monotonic()
        cached = self.ctx.cache.requests()
        self._tidy_requests(cached, now)
        # Our workers' spare launches are read before the cache's nodes: a launch
        # that has left a worker's list is in the cache by then.
        local = {w: w.spare_status() for w in self.workers() if w.spare_labels}
        under_way: dict[str, str] = {}
        asked: dict[str, int] = {}
        for worker, status in local.items():
            under_way.update(status.launching)
            for label, n in status.asked.items():
                asked[label] = asked.get(label, 0) + n
            for label in status.failed:
                if not getattr(self.ctx.config.labels.get(label), "min_ready", 0):
                    continue    # a resumed launch of a label min-ready does not keep
                self.failed_until[label] = now + FAILED_BACKOFF
                log.warning("min-ready: a spare %s launch in provider %s failed; "
                            "retrying in %ss", label, worker.name, FAILED_BACKOFF)
        registered = self.ctx.registered_pools()
        short = deficits(self.ctx.config.labels, self.ctx.cache.nodes(), cached, registered,
                         under_way, asked)
        local_pools = {p.view.id for w in local for p in w.pools.values()}
        for label, count in short.items():
            count -= sum(1 for pending in self.submitted.values() if pending == label)
            if count <= 0 or self.failed_until.get(label, 0) > now:
                continue
            offering = [w for w in local if label in w.spare_labels]
            if offering:
                others = any(label in p.labels and p.id not in local_pools for p in registered)
                worker = pick_worker(label, offering, {w: s.refused for w, s in local.items()},
                                     now, others)
                if worker is not None:
                    worker.want_spares(label, count)
                    log.debug("min-ready: asked provider %s for %d spare %s node(s)",
                              worker.name, count, label)
                    continue
                # Every worker of ours offering it could not launch it lately, and
                # another launcher's pool offers it: a request may be served there.
            self._request(label, count)

    def _tidy_requests(self, cached: list[NodeRequest], now: float) -> None:
        """Delete our finished requests; back off labels whose request failed."""
        kazoo = self.ctx.kazoo
        ids = {r.id for r in cached}
        self.submitted = {rid: label for rid, label in self.submitted.items() if rid not in ids}
        self.deleted &= ids
        for req in cached:
            if req.requestor != MIN_READY_REQUESTOR or req.id in self.deleted:
                continue
            if req.state == RequestState.FAILED:
                for label in req.node_types:
                    self.failed_until[label] = now + FAILED_BACKOFF
                log.warning("min-ready request %s for %s failed; retrying in %ss", req.id,
                            ",".join(req.node_types), FAILED_BACKOFF)
                kazoo.delete_async(paths.request(req.id))   # pipelined; gone is fine
                self.deleted.add(req.id)
            elif req.state == RequestState.FULFILLED:
                kazoo.delete_async(paths.request(req.id))
                self.deleted.add(req.id)

    def _request(self, label: str, count: int) -> None:
        from nodepool.zk import requests as zkrequests
        for _ in range(count):
            req = NodeRequest(node_types=[label], requestor=MIN_READY_REQUESTOR, reuse=False)
            zkrequests.submit_request(self.ctx.kazoo, req, PRIORITY)
            self.submitted[req.id] = label
        log.info("min-ready: requested %d %s node(s)", count, label)


def pick_worker(label: str, offering: Iterable[Any], refused: Mapping[Any, Mapping[str, float]],
                now: float, others_offer: bool) -> Any | None:
    """Which of our workers to ask for spares of `label` (pure); None: request them.

    The one with the best pool priority among those that have not dropped an
    ask for the label in the last REFUSAL_HOLD seconds. When every one has: a
    request if another launcher's pool offers the label, else the worker that
    dropped one longest ago (its quota may have freed since).
    """
    offering = list(offering)
    dropped = {w: refused.get(w, {}).get(label, -math.inf) for w in offering}
    fresh = [w for w in offering if dropped[w] <= now - REFUSAL_HOLD]
    if fresh:
        return min(fresh, key=lambda w: w.spare_labels[label])
    if others_offer or not offering:
        return None
    return min(offering, key=lambda w: dropped[w])
