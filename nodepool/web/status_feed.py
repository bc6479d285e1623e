"""What the status page remembers from cache events: recent hand-overs, failures, disconnects.

A `StatusFeed` subscribes to the launcher's cache (nodepool/zk/cache.py) and
keeps small bounded rings, so the page can draw a latency chart and list
recent failures without a hook in the launcher's request handling and
without any ZooKeeper read. Its callback runs on the cache's callback
thread for every change: it only compares a state with the last one seen
and appends to a ring (a few microseconds); the web thread reads copies.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import cache as zkcache

HANDOVERS_KEPT = 200    # points of the latency chart
FAILURES_KEPT = 50      # recent failures listed


class StatusFeed:
    """Bounded memory of hand-overs (time, seconds), failures and the connection, from events.

    A hand-over is a request becoming `fulfilled`: its latency is the
    fulfilled `state_time` minus the request's `created_time` (as its
    requestor wrote it), or, when that is missing, the time this feed
    first saw the request. A failure is a request becoming `failed` or a
    node becoming `failed` (a launch that gave up).
    """

    def __init__(self, clock: Callable[[], float] = time.time,
                 handovers_kept: int = HANDOVERS_KEPT, failures_kept: int = FAILURES_KEPT):
        self.clock = clock
        self._handovers: collections.deque = collections.deque(maxlen=handovers_kept)
        self._failures: collections.deque = collections.deque(maxlen=failures_kept)
        # request id -> (first seen, last state seen); one small tuple per live request.
        self._requests: dict[str, tuple[float, RequestState]] = {}
        self._failed_nodes: set[str] = set()   # nodes seen `failed` and not since changed
        self._lock = threading.Lock()
        self._cache: zkcache.ZooKeeperCache | None = None
        self.disconnected_since: float | None = None
        self.attached_at: float | None = None

    # -- wiring ---------------------------------------------------------------------

    def attach(self, cache: zkcache.ZooKeeperCache) -> None:
        """Subscribe to `cache`; what it already holds is the starting point (requests
        already fulfilled are no hand-over of ours; failed ones are listed as failures)."""
        now = self.clock()
        self._cache = cache
        self.attached_at = now
        cache.subscribe(self.on_event)   # first, so nothing between the look and it is lost
        with self._lock:
            for request in cache.requests():
                if request.id in self._requests:
                    continue   # an event came first: it is newer
                self._requests[request.id] = (now, request.state)
                if request.state == RequestState.FAILED:
                    self._failures.append(_request_failure(request, now))
            for node in cache.nodes():
                if node.state == NodeState.FAILED and node.id not in self._failed_nodes:
                    self._failed_nodes.add(node.id)
                    self._failures.append(_launch_failure(node, now))

    def detach(self) -> None:
        if self._cache is not None:
            self._cache.unsubscribe(self.on_event)
            self._cache = None

    # -- kazoo's reader thread (cache events) --------------------------------------

    def on_event(self, event: zkcache.CacheEvent) -> None:
        if event.kind == zkcache.REQUEST:
            self._request_event(event.id, event.value)
        elif event.kind == zkcache.NODE:
            self._node_event(event.id, event.value)
        elif event.kind == zkcache.CONNECTION:
            if event.id == "reconnected":
                self.disconnected_since = None
            elif self.disconnected_since is None:
                self.disconnected_since = self.clock()

    def _request_event(self, request_id: str, request: NodeRequest | None) -> None:
        now = self.clock()
        with self._lock:
            if request is None:
                self._requests.pop(request_id, None)
                return
            first_seen, last = self._requests.get(request_id, (now, None))
            self._requests[request_id] = (first_seen, request.state)
            if request.state == last:
                return
            if request.state == RequestState.FULFILLED:
                done = request.state_time or now
                began = request.created_time or first_seen
                self._handovers.append((done, max(0.0, done - began),
                                        ",".join(request.node_types)))
            elif request.state == RequestState.FAILED:
                self._failures.append(_request_failure(request, now))

    def _node_event(self, node_id: str, node: Node | None) -> None:
        if node is None or node.state != NodeState.FAILED:
            if node_id in self._failed_nodes:
                with self._lock:
                    self._failed_nodes.discard(node_id)
            return
        if node_id in self._failed_nodes:
            return
        with self._lock:
            self._failed_nodes.add(node_id)
            self._failures.append(_launch_failure(node, self.clock()))

    # -- readers (any thread) -------------------------------------------------------------

    def first_seen(self, request_id: str) -> float | None:
        entry = self._requests.get(request_id)
        return entry[0] if entry else None

    def handovers(self) -> list[tuple[float, float, str]]:
        """(time fulfilled, seconds since the request was created, labels), oldest first."""
        with self._lock:
            return list(self._handovers)

    def failures(self) -> list[dict]:
        """Recent failures, newest first."""
        with self._lock:
            return [dict(f) for f in reversed(self._failures)]


def _request_failure(request: NodeRequest, now: float) -> dict:
    declined = len(request.declined_by)
    return {"time": request.state_time or now, "kind": "request", "id": request.id,
            "labels": list(request.node_types), "requestor": request.requestor,
            "detail": f"declined by {declined} pool{'s' if declined != 1 else ''}"}


def _launch_failure(node: Node, now: float) -> dict:
    return {"time": node.state_time or now, "kind": "launch", "id": node.id,
            "labels": list(node.type), "requestor": node.requestor,
            "detail": f"launch failed in {node.provider}/{node.pool}"}
