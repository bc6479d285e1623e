"""Watch-driven caches of nodes (with their lock state) and requests, with subscribers.

Nodes and pool components use kazoo's `TreeCache`, requests a lean flat watch
(flatwatch.py): ZooKeeper watches, no polling loop. Subscribers
are called on the cache's event thread for every change; they must be quick
(record, signal a loop) and must not block on ZooKeeper calls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Callable

from kazoo.recipe.cache import TreeCache, TreeEvent

from nodepool.errors import ProtocolError
from nodepool.model import Node, NodeRequest, is_request_id
from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.flatwatch import FlatWatch
from nodepool.zk.locks import is_contender

log = logging.getLogger("nodepool.zk.cache")

NODE = "node"
NODE_LOCK = "node-lock"
REQUEST = "request"
POOL_COMPONENT = "pool-component"
CONNECTION = "connection"


@dataclasses.dataclass(frozen=True)
class CacheEvent:
    """What changed: `kind` is node / node-lock / request / connection.

    `value` is the new Node or NodeRequest (None when it was deleted); for
    node-lock events, `locked` says whether the node has lock contenders now;
    for connection events, `id` names the state (suspended / reconnected / lost).
    """

    kind: str
    id: str
    value: Node | NodeRequest | None = None
    locked: bool = False


Subscriber = Callable[[CacheEvent], None]

_CONNECTION_EVENTS = {
    TreeEvent.CONNECTION_SUSPENDED: "suspended",
    TreeEvent.CONNECTION_RECONNECTED: "reconnected",
    TreeEvent.CONNECTION_LOST: "lost",
}


class ZooKeeperCache:
    """In-memory view of nodes (with lock contenders), requests and pool components."""

    def __init__(self, zk: ZooKeeperClient):
        self.zk = zk
        self._nodes: dict[str, Node] = {}
        self._locks: dict[str, set[str]] = {}
        self._requests: dict[str, NodeRequest] = {}
        self._pools: dict[str, dict] = {}
        self._subscribers: list[Subscriber] = []
        self._mutex = threading.Lock()
        self._trees: list[TreeCache] = []
        self._pool_root = paths.components("pool")
        self._request_watch: FlatWatch | None = None
        self._initialized = {paths.NODES: threading.Event(), paths.REQUESTS: threading.Event(),
                             self._pool_root: threading.Event()}

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def start(self, timeout: float = 30.0) -> None:
        """Start watching and wait until both trees are loaded once."""
        for root, handler in ((paths.NODES, self._on_node_event),
                              (self._pool_root, self._on_pool_event)):
            tree = TreeCache(self.zk.kazoo, root)
            tree.listen(self._listener(root, handler))
            tree.listen_fault(lambda e: log.error("Cache fault: %s", e, exc_info=e))
            tree.start()
            self._trees.append(tree)
        # The request queue is where latency is the product: a leaner watch.
        self._request_watch = FlatWatch(self.zk.kazoo, paths.REQUESTS, self._request_changed,
                                        accept=is_request_id)
        self._request_watch.start()
        self._initialized[paths.REQUESTS] = self._request_watch.initialized
        for root, done in self._initialized.items():
            if not done.wait(timeout):
                raise TimeoutError(f"cache of {root} not loaded within {timeout}s")

    def stop(self) -> None:
        for tree in self._trees:
            tree.close()
        self._trees = []
        if self._request_watch is not None:
            self._request_watch.stop()

    # -- reading --------------------------------------------------------

    def nodes(self) -> list[Node]:
        with self._mutex:
            return list(self._nodes.values())

    def get_node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def is_node_locked(self, node_id: str) -> bool:
        """True when the node has lock contenders (someone is using it)."""
        return bool(self._locks.get(node_id))

    def requests(self) -> list[NodeRequest]:
        """Requests in protocol service order."""
        with self._mutex:
            reqs = list(self._requests.values())
        reqs.sort(key=lambda r: r.sort_key)
        return reqs

    def get_request(self, request_id: str) -> NodeRequest | None:
        return self._requests.get(request_id)

    def pool_components(self) -> list[dict]:
        """The JSON of every registered pool component (every launcher's)."""
        with self._mutex:
            return list(self._pools.values())

    # -- events ---------------------------------------------------------

    def _listener(self, root: str, handler: Callable[[int, str, bytes, object], CacheEvent | None]):
        def listen(event: TreeEvent) -> None:
            etype = event.event_type
            if etype == TreeEvent.INITIALIZED:
                self._initialized[root].set()
                return
            if etype in _CONNECTION_EVENTS:
                self._publish(CacheEvent(CONNECTION, _CONNECTION_EVENTS[etype]))
                return
            data = event.event_data
            rel = data.path[len(root):].strip("/")
            if not rel:
                return
            out = handler(etype, rel, data.data, data.stat)
            if out is not None:
                self._publish(out)
        return listen

    def _publish(self, event: CacheEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("Cache subscriber %r failed on %s", subscriber, event)

    def _on_node_event(self, etype: int, rel: str, raw: bytes, stat) -> CacheEvent | None:
        parts = rel.split("/")
        node_id = parts[0]
        if len(parts) == 3 and parts[1] == paths.LOCK_NODE_NAME and is_contender(parts[2]):
            with self._mutex:
                holders = self._locks.setdefault(node_id, set())
                if etype == TreeEvent.NODE_REMOVED:
                    holders.discard(parts[2])
                else:
                    holders.add(parts[2])
                locked = bool(holders)
            return CacheEvent(NODE_LOCK, node_id, self._nodes.get(node_id), locked)
        if len(parts) != 1:
            return None
        if etype == TreeEvent.NODE_REMOVED:
            with self._mutex:
                self._nodes.pop(node_id, None)
                self._locks.pop(node_id, None)
            return CacheEvent(NODE, node_id, None)
        if not raw:
            return None  # a lock dir's parent made by someone's ensure_path
        try:
            node = Node.from_json(node_id, raw, stat.version)
        except ProtocolError as e:
            log.warning("Ignoring unreadable node %s: %s", node_id, e)
            return None
        with self._mutex:
            self._nodes[node_id] = node
        return CacheEvent(NODE, node_id, node, self.is_node_locked(node_id))

    def _request_changed(self, name: str, raw: bytes | None, stat) -> None:
        if raw is None:
            with self._mutex:
                self._requests.pop(name, None)
            self._publish(CacheEvent(REQUEST, name, None))
            return
        try:
            request = NodeRequest.from_json(name, raw, stat.version)
        except ProtocolError as e:
            log.warning("Ignoring unreadable request %s: %s", name, e)
            return
        with self._mutex:
            self._requests[name] = request
        self._publish(CacheEvent(REQUEST, name, request))

    def _on_pool_event(self, etype: int, rel: str, raw: bytes, stat) -> CacheEvent | None:
        if "/" in rel:
            return None
        if etype == TreeEvent.NODE_REMOVED:
            with self._mutex:
                self._pools.pop(rel, None)
            return CacheEvent(POOL_COMPONENT, rel, None)
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            log.warning("Ignoring unreadable pool component %s", rel)
            return None
        with self._mutex:
            self._pools[rel] = data
        return CacheEvent(POOL_COMPONENT, rel, None)
