"""min-ready: keep a number of unallocated nodes per label, by requesting them.

Only the holder of the min-ready lease runs this, so two launchers never
both top a label up. It acts as a requestor: requests at priority 900 with
requestor `NodePool:min-ready` and `reuse: false`; it deletes them once
fulfilled (the launcher then releases their nodes as ready spares) or failed.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Mapping

from nodepool.launcher.context import MIN_READY_REQUESTOR
from nodepool.launcher.planner import RegisteredPool
from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import paths

log = logging.getLogger("nodepool.launcher.minready")

PRIORITY = 900
FAILED_BACKOFF = 60.0   # seconds before retrying a label whose min-ready request failed
_SPARE_STATES = {NodeState.READY, NodeState.INIT, NodeState.BUILDING, NodeState.TESTING}


def deficits(labels: Mapping[str, object], nodes: Iterable[Node],
             requests: Iterable[NodeRequest], registered: Iterable[RegisteredPool]
             ) -> dict[str, int]:
    """How many more min-ready requests each label needs now (pure)."""
    reqs = list(requests)
    live = {r.id for r in reqs}
    ours = {r.id: r for r in reqs if r.requestor == MIN_READY_REQUESTOR}
    outstanding: dict[str, int] = {}
    for r in ours.values():
        if r.state in (RequestState.REQUESTED, RequestState.PENDING):
            for label in r.node_types:
                outstanding[label] = outstanding.get(label, 0) + 1
    have: dict[str, int] = {}
    for node in nodes:
        if node.state not in _SPARE_STATES:
            continue
        spare = node.allocated_to is None or (
            node.allocated_to in ours and ours[node.allocated_to].state == RequestState.FULFILLED)
        if node.allocated_to is not None and node.allocated_to not in ours \
                and node.state == NodeState.READY and node.allocated_to not in live:
            spare = True    # its request is gone: it is about to be released
        if spare:
            for label in node.type:
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
    """Applies `deficits` as the requestor; finished requests are deleted."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.failed_until: dict[str, float] = {}
        # Written by us but maybe not in the cache yet: counted, so a quick
        # second pass does not request the same nodes twice.
        self.submitted: dict[str, str] = {}
        self.deleted: set[str] = set()

    def run(self) -> None:
        from nodepool.zk import requests as zkrequests
        kazoo = self.ctx.kazoo
        now = time.monotonic()
        cached = self.ctx.cache.requests()
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
        short = deficits(self.ctx.config.labels, self.ctx.cache.nodes(), cached,
                         self.ctx.registered_pools())
        for label, count in short.items():
            count -= sum(1 for pending in self.submitted.values() if pending == label)
            if count <= 0 or self.failed_until.get(label, 0) > now:
                continue
            for _ in range(count):
                req = NodeRequest(node_types=[label], requestor=MIN_READY_REQUESTOR, reuse=False)
                zkrequests.submit_request(kazoo, req, PRIORITY)
                self.submitted[req.id] = label
            log.info("min-ready: requested %d %s node(s)", count, label)
