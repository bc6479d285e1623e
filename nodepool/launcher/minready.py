"""min-ready: keep a number of unallocated nodes per label.

Only the holder of the min-ready lease runs this, so two launchers never
both top a label up. A label that a provider worker of this process can
launch is topped up by asking that worker for spare launches directly
(spares.py): no node request is written. A label only other launchers'
pools serve is requested as before: requests at priority 900 with requestor
`NodePool:min-ready` and `reuse: false`, deleted once fulfilled (the
launcher then releases their nodes as ready spares) or failed.

Threads: `MinReady.run` runs on the launcher loop thread (daemon.py), which
also starts and stops the provider workers it asks; the census is fed on
kazoo's reader thread and guarded by its own lock.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Protocol, TypeVar

from nodepool.config.model import Label
from nodepool.launcher.context import MIN_READY_REQUESTOR, LauncherContext
from nodepool.launcher.planner import RegisteredPool
from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import cache as zkcache
from nodepool.zk import paths

if TYPE_CHECKING:
    from nodepool.launcher.provider import ProviderWorker

log = logging.getLogger("nodepool.launcher.minready")

PRIORITY = 900   # of min-ready's requests (Nodepool's value; the timings are in ctx.tuning)
_SPARE_STATES = {NodeState.READY, NodeState.INIT, NodeState.BUILDING, NodeState.TESTING}


class SpareCensus:
    """What min-ready counts, kept up to date from cache events.

    A pass then costs the labels and the few allocated spares, not a walk
    over every node and request (with 10,000 nodes such a walk held the GIL
    for about 15 ms per pass; a tally takes microseconds).
    Nodes in a spare state are counted per label when unallocated, and kept
    by request when allocated (they count only if their request is one of
    our fulfilled ones, or gone). Updated on kazoo's reader thread,
    read on the launcher thread.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._nodes: dict[str, tuple[tuple[str, ...], str | None, bool]] = {}
        self._unallocated: collections.Counter[str] = collections.Counter()
        self._allocated: dict[str, set[str]] = {}
        self.ours: dict[str, NodeRequest] = {}     # min-ready requests, by id
        self._seen: set[str] = set()               # ids of those, since `take_seen`

    def node(self, node_id: str, node: Node | None) -> None:
        """The node changed (None: it is gone)."""
        with self._mutex:
            old = self._nodes.pop(node_id, None)
            if old is not None:
                labels, allocated_to, _ = old
                if allocated_to is None:
                    self._unallocated.subtract(labels)
                else:
                    held = self._allocated[allocated_to]
                    held.discard(node_id)
                    if not held:
                        del self._allocated[allocated_to]
            if node is None or node.state not in _SPARE_STATES:
                return
            labels = tuple(node.type)
            self._nodes[node_id] = (labels, node.allocated_to, node.state == NodeState.READY)
            if node.allocated_to is None:
                self._unallocated.update(labels)
            else:
                self._allocated.setdefault(node.allocated_to, set()).add(node_id)

    def our_requests(self) -> list[NodeRequest]:
        with self._mutex:
            return list(self.ours.values())

    def take_seen(self) -> set[str]:
        """Ids of min-ready requests the census has counted since the last call."""
        with self._mutex:
            seen, self._seen = self._seen, set()
            return seen

    def request(self, request_id: str, request: NodeRequest | None) -> None:
        """The request changed (None: it is gone); only min-ready's own are kept."""
        with self._mutex:
            if request is not None and request.requestor == MIN_READY_REQUESTOR:
                self.ours[request_id] = request
                self._seen.add(request_id)
            else:
                self.ours.pop(request_id, None)

    def tally(self, request_exists: Callable[[str], bool], under_way: Mapping[str, str]
              ) -> tuple[dict[str, int], dict[str, int]]:
        """(spares by label, labels our open requests still ask for)."""
        with self._mutex:
            have = dict(+self._unallocated)
            counted: set[str] = set()
            for request_id, node_ids in self._allocated.items():
                req = self.ours.get(request_id)
                for node_id in node_ids:
                    labels, _, ready = self._nodes[node_id]
                    if req is not None:
                        spare = req.state == RequestState.FULFILLED
                    else:   # a ready node of a request that is gone is about to be released
                        spare = ready and not request_exists(request_id)
                    if spare:
                        counted.add(node_id)
                        for label in labels:
                            have[label] = have.get(label, 0) + 1
            for node_id, label in under_way.items():
                entry = self._nodes.get(node_id)
                if node_id not in counted and (entry is None or entry[1] is not None):
                    have[label] = have.get(label, 0) + 1
            outstanding: dict[str, int] = {}
            for req in self.ours.values():
                if req.state in (RequestState.REQUESTED, RequestState.PENDING):
                    for label in req.node_types:
                        outstanding[label] = outstanding.get(label, 0) + 1
        return have, outstanding


def census_deficits(labels: Mapping[str, Label], census: SpareCensus,
                    request_exists: Callable[[str], bool], registered: Iterable[RegisteredPool],
                    under_way: Mapping[str, str] | None = None,
                    asked: Mapping[str, int] | None = None) -> dict[str, int]:
    """How many more nodes each label needs now.

    `under_way` (node id -> label) are spare launches of this process that the
    cache may not show yet: each counts once, whether or not the cache lists
    it too. `asked` (label -> count) are spare launches asked for, not started.
    """
    have, outstanding = census.tally(request_exists, under_way or {})
    for label, n in (asked or {}).items():
        outstanding[label] = outstanding.get(label, 0) + n
    served = set()
    for pool in registered:
        served |= pool.labels
    out = {}
    for name, label in labels.items():
        want = label.min_ready
        if want <= 0 or name not in served:
            continue
        short = want - have.get(name, 0) - outstanding.get(name, 0)
        if short > 0:
            out[name] = short
    return out


class MinReady:
    """Applies `census_deficits`: spare launches by our own workers, else requests.

    `workers` returns this launcher's provider workers (called on the
    launcher thread, like `run`).
    """

    def __init__(self, ctx: LauncherContext,
                 workers: Callable[[], Iterable[ProviderWorker]] = lambda: ()):
        self.ctx = ctx
        self.workers = workers
        self.failed_until: dict[str, float] = {}
        # Written by us but maybe not in the cache yet: counted, so a quick
        # second pass does not request the same nodes twice.
        self.submitted: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.census = SpareCensus()

    def start(self) -> None:
        """Subscribe the census to the cache and fill it (before any `run`)."""
        cache = self.ctx.cache
        cache.subscribe(self.on_cache_event)
        # Events from here on overwrite what the fill reads: each carries the newest value.
        for node in cache.nodes():
            self.census.node(node.id, node)
        for req in cache.requests():
            self.census.request(req.id, req)

    def on_cache_event(self, event) -> None:
        if event.kind in (zkcache.NODE, zkcache.NODE_LOCK) and event.value is not None:
            self.census.node(event.id, event.value)
        elif event.kind == zkcache.NODE:
            self.census.node(event.id, None)
        elif event.kind == zkcache.REQUEST:
            self.census.request(event.id, event.value)

    def run(self) -> None:
        now = time.monotonic()
        tuning = self.ctx.tuning
        self._tidy_requests(now)
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
                cfg = self.ctx.config.labels.get(label)
                if cfg is None or not cfg.min_ready:
                    continue    # a resumed launch of a label min-ready does not keep
                self.failed_until[label] = now + tuning.min_ready_failed_backoff
                log.warning("min-ready: a spare %s launch in provider %s failed; "
                            "retrying in %ss", label, worker.name,
                            tuning.min_ready_failed_backoff)
        registered = self.ctx.registered_pools()
        short = census_deficits(self.ctx.config.labels, self.census, self.ctx.cache.request_exists,
                                registered, under_way, asked)
        local_pools = {p.view.id for w in local for p in w.pools.values()}
        for label, count in short.items():
            count -= sum(1 for pending in self.submitted.values() if pending == label)
            if count <= 0 or self.failed_until.get(label, 0) > now:
                continue
            offering = [w for w in local if label in w.spare_labels]
            if offering:
                others = any(label in p.labels and p.id not in local_pools for p in registered)
                worker = pick_worker(label, offering, {w: s.refused for w, s in local.items()},
                                     now, others, tuning.min_ready_refusal_hold)
                if worker is not None:
                    worker.want_spares(label, count)
                    log.debug("min-ready: asked provider %s for %d spare %s node(s)",
                              worker.name, count, label)
                    continue
                # Every worker of ours offering it could not launch it lately, and
                # another launcher's pool offers it: a request may be served there.
            self._request(label, count)

    def _tidy_requests(self, now: float) -> None:
        """Delete our finished requests; back off labels whose request failed."""
        kazoo = self.ctx.kazoo
        backoff = self.ctx.tuning.min_ready_failed_backoff
        # Not by the cache: it lists a request just before the census counts it.
        seen = self.census.take_seen()
        self.submitted = {rid: label for rid, label in self.submitted.items() if rid not in seen}
        ours = self.census.our_requests()
        self.deleted &= {r.id for r in ours}
        for req in ours:
            if req.id in self.deleted:
                continue
            if req.state == RequestState.FAILED:
                for label in req.node_types:
                    self.failed_until[label] = now + backoff
                log.warning("min-ready request %s for %s failed; retrying in %ss", req.id,
                            ",".join(req.node_types), backoff)
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


class SpareOffer(Protocol):
    """What `pick_worker` reads of a provider worker."""

    @property
    def spare_labels(self) -> Mapping[str, int]:
        """Label -> the best (lowest) priority of the worker's pools offering it."""
        ...


W = TypeVar("W", bound=SpareOffer)


def pick_worker(label: str, offering: Iterable[W], refused: Mapping[W, Mapping[str, float]],
                now: float, others_offer: bool, refusal_hold: float) -> W | None:
    """Which of our workers to ask for spares of `label` (pure); None: request them.

    The one with the best pool priority among those that have not dropped an
    ask for the label in the last `refusal_hold` seconds
    (`Tuning.min_ready_refusal_hold`). When every one has: a
    request if another launcher's pool offers the label, else the worker that
    dropped one longest ago (its quota may have freed since).
    """
    offering = list(offering)
    dropped = {w: refused.get(w, {}).get(label, -math.inf) for w in offering}
    fresh = [w for w in offering if dropped[w] <= now - refusal_hold]
    if fresh:
        return min(fresh, key=lambda w: w.spare_labels[label])
    if others_offer or not offering:
        return None
    return min(offering, key=lambda w: dropped[w])
