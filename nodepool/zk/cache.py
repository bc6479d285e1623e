"""Watch-driven caches of nodes (with their lock state), requests and pool components.

Built on ZooKeeper watches, no polling loop: one persistent recursive watch
per directory (treewatch.py), which also reports each node's lock contenders
as they come and go. Subscribers are called on kazoo's reader thread for
every change; they must be quick (record, signal a loop) and must not block
on ZooKeeper calls.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import re
import threading
from typing import Callable

from kazoo.protocol.serialization import Transaction
from kazoo.protocol.states import KazooState

from nodepool.errors import ProtocolError
from nodepool.model import Node, NodeRequest, is_request_id
from nodepool.zk import paths, treewatch
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.locks import is_contender
from nodepool.zk.treewatch import TreeWatch

log = logging.getLogger("nodepool.zk.cache")

NODE = "node"
NODE_LOCK = "node-lock"
REQUEST = "request"
POOL_COMPONENT = "pool-component"
LAUNCHER_COMPONENT = "launcher-component"
LEASE = "lease"               # a provider lease came, went or changed hands (spread.py)
CONNECTION = "connection"

_NODE_ID = re.compile(r"^\d{10}$")


@dataclasses.dataclass(frozen=True)
class CacheEvent:
    """What changed: `kind` is node / node-lock / request / pool-component / connection.

    `value` is the new Node or NodeRequest (None when it was deleted); for
    node-lock events, `locked` says whether the node has lock contenders now;
    for connection events, `id` names the state (suspended / reconnected / lost).
    """

    kind: str
    id: str
    value: Node | NodeRequest | None = None
    locked: bool = False


Subscriber = Callable[[CacheEvent], None]

_CONNECTION_EVENTS = {KazooState.SUSPENDED: "suspended", KazooState.CONNECTED: "reconnected",
                      KazooState.LOST: "lost"}


class ZooKeeperCache:
    """In-memory view of nodes (with lock contenders), requests and pool components."""

    def __init__(self, zk: ZooKeeperClient):
        self.zk = zk
        self._nodes: dict[str, Node] = {}
        self._locks: dict[str, frozenset[str]] = {}
        self._allocated: dict[str, set[str]] = {}   # request id -> ids of nodes allocated to it
        self._requests: dict[str, NodeRequest] = {}
        # (sort key, id) of every cached request, kept in protocol service order.
        self._order: list[tuple[tuple[int, int, int], str]] = []
        self._pools: dict[str, dict] = {}
        self._launchers: dict[str, dict] = {}   # launcher component name -> its JSON
        self._leases: dict[str, str] = {}       # provider lease name -> its holder's owner id
        self._subscribers: list[Subscriber] = []
        self._mutex = threading.Lock()
        self._watches: list[TreeWatch] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def start(self, timeout: float = 30.0) -> None:
        """Start watching and wait until nodes, requests and pool components are loaded once."""
        kazoo = self.zk.kazoo
        self._watches = [
            TreeWatch(kazoo, paths.NODES, self._node_changed, accept=_NODE_ID.match,
                      subdir="lock", on_members=self._locks_changed),
            TreeWatch(kazoo, paths.REQUESTS, self._request_changed, accept=is_request_id),
            TreeWatch(kazoo, paths.components("pool"), self._pool_changed),
            TreeWatch(kazoo, paths.components("launcher"), self._launcher_changed),
            TreeWatch(kazoo, paths.PROVIDER_LEASES, self._lease_changed),
        ]
        kazoo.add_listener(self._on_state)
        for watch in self._watches:
            watch.start()
        for watch in self._watches:
            if not watch.initialized.wait(timeout):
                raise TimeoutError(f"cache of {watch.path} not loaded within {timeout}s")

    def stop(self) -> None:
        self.zk.kazoo.remove_listener(self._on_state)
        for watch in self._watches:
            watch.stop()
        self._watches = []

    # -- writing ----------------------------------------------------------

    # Each takes `then(result)`, run on kazoo's reader thread once the cache has taken the
    # answer: link callbacks here, never to the returned result (see treewatch.send).

    def write_node(self, node_id: str, data: bytes, version: int = -1,
                   then: Callable | None = None):
        """Set a node's data (kazoo's async result); the cache takes it from the reply,
        with no read back, unless someone else changed the node meanwhile."""
        return self._watches[0].write(node_id, data, version, then)

    def create_node(self, data: bytes, then: Callable | None = None):
        """Create a node (a sequential child of the nodes dir); kazoo's result gives
        (path, stat). Cached from the answer, with no read back."""
        return self._watches[0].create_own("", data, then)   # ids are the 10-digit sequence

    def commit_own(self, tx, writes: list[tuple[str, str, bytes, int]], removes: tuple = (),
                   then: Callable | None = None):
        """Commit `tx` (kazoo's async result) whose set_data ops are `writes`:
        (NODE or REQUEST, id, data, position in the transaction). As with
        `write_node`, what the transaction wrote is cached without a read back.
        `removes`: nodes it deletes (with their locks): their unlock is not told
        before the answer, by which time their deletion is (no "unlocked" moment)."""
        watches = {NODE: self._watches[0], REQUEST: self._watches[1]}
        for kind, name, _, _ in writes:
            watches[kind].begin_own(name)
        for name in removes:
            watches[NODE].begin_own(name)

        def done(res) -> None:
            results = res.get() if res.successful() else None
            for kind, name, data, i in writes:
                stat = results[i] if results is not None else None
                watches[kind].end_own(name, data, None if isinstance(stat, Exception) else stat)
            for name in removes:
                watches[NODE].end_own(name, b"", None)
        tx.committed = True   # what kazoo's commit_async marks; sent here so `done` comes first
        return treewatch.send(self.zk.kazoo, Transaction(tx.operations), done, then)

    # -- reading --------------------------------------------------------

    def nodes(self) -> list[Node]:
        with self._mutex:
            return list(self._nodes.values())

    def get_node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def allocated_nodes(self, request_id: str) -> list[Node]:
        """The nodes whose records say they are allocated to the request (any provider)."""
        with self._mutex:
            return [self._nodes[i] for i in self._allocated.get(request_id, ()) if i in self._nodes]

    def is_node_locked(self, node_id: str) -> bool:
        """True when the node has lock contenders (someone is using it)."""
        return bool(self._locks.get(node_id))

    def has_node_lock_dir(self, node_id: str) -> bool:
        """Has the node been locked before (its lock dir exists, as the events so far
        tell)? Chooses the kind of lock to send; either kind copes with being wrong."""
        return self._watches[0].has_subdir(node_id)

    def requests(self) -> list[NodeRequest]:
        """Requests in protocol service order (kept sorted as they change, not per call)."""
        with self._mutex:
            return [self._requests[name] for _, name in self._order]

    def get_request(self, request_id: str) -> NodeRequest | None:
        return self._requests.get(request_id)

    def settled_request(self, request_id: str) -> tuple[bool, NodeRequest | None]:
        """(settled, a copy of the request or None when gone).

        Settled: the cache holds every change whose event came before now, none
        of it still being read. Right after one of our requests' answers, that
        includes every change the server made before it (it sends a change's
        event before the answers to later requests): as good as a re-read.
        """
        if len(self._watches) < 2 or not self._watches[1].settled(request_id):
            return False, None
        request = self._requests.get(request_id)
        if request is None:
            return request_id not in self._watches[1].known, None
        return True, NodeRequest.from_dict(request_id, request.to_dict(), request.version)

    def request_exists(self, request_id: str) -> bool:
        """Listed in the queue, even if its data is still being read."""
        return request_id in self._requests or (
            len(self._watches) > 1 and request_id in self._watches[1].known)

    def pool_components(self) -> list[dict]:
        """The JSON of every registered pool component (every launcher's)."""
        with self._mutex:
            return list(self._pools.values())

    def launcher_components(self) -> list[dict]:
        """The JSON of every registered launcher component."""
        with self._mutex:
            return list(self._launchers.values())

    def lease_holders(self) -> dict[str, str]:
        """Provider lease name -> the owner id its holder wrote (ownership.py)."""
        with self._mutex:
            return dict(self._leases)

    # -- events ---------------------------------------------------------

    def _on_state(self, state: str) -> None:
        # On kazoo's connection thread: no ZooKeeper calls here.
        self._publish(CacheEvent(CONNECTION, _CONNECTION_EVENTS.get(state, str(state))))

    def _publish(self, event: CacheEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("Cache subscriber %r failed on %s", subscriber, event)

    def _node_changed(self, node_id: str, raw: bytes | None, stat) -> None:
        if raw is None:
            with self._mutex:
                self._unallocate(self._nodes.pop(node_id, None))
                self._locks.pop(node_id, None)
            self._publish(CacheEvent(NODE, node_id, None))
            return
        if not raw:
            return  # a lock dir's parent made by someone's ensure_path
        try:
            node = Node.from_json(node_id, raw, stat.version)
        except ProtocolError as e:
            log.warning("Ignoring unreadable node %s: %s", node_id, e)
            return
        with self._mutex:
            self._unallocate(self._nodes.get(node_id))
            self._nodes[node_id] = node
            if node.allocated_to is not None:
                self._allocated.setdefault(node.allocated_to, set()).add(node_id)
        self._publish(CacheEvent(NODE, node_id, node, self.is_node_locked(node_id)))

    def _unallocate(self, old: Node | None) -> None:
        """(Under the mutex) forget a node's entry in the by-request index."""
        if old is None or old.allocated_to is None:
            return
        ids = self._allocated.get(old.allocated_to)
        if ids is not None:
            ids.discard(old.id)
            if not ids:
                del self._allocated[old.allocated_to]

    def _locks_changed(self, node_id: str, names: frozenset[str]) -> None:
        contenders = frozenset(c for c in names if is_contender(c))
        if contenders == self._locks.get(node_id, frozenset()):
            return
        with self._mutex:
            if node_id not in self._nodes and not contenders:
                self._locks.pop(node_id, None)
            else:
                self._locks[node_id] = contenders
        self._publish(CacheEvent(NODE_LOCK, node_id, self._nodes.get(node_id), bool(contenders)))

    def _request_changed(self, name: str, raw: bytes | None, stat) -> None:
        if raw is None:
            with self._mutex:
                self._unorder(self._requests.pop(name, None))
            self._publish(CacheEvent(REQUEST, name, None))
            return
        try:
            request = NodeRequest.from_json(name, raw, stat.version)
        except ProtocolError as e:
            log.warning("Ignoring unreadable request %s: %s", name, e)
            return
        with self._mutex:
            old = self._requests.get(name)
            if old is None or old.sort_key != request.sort_key:
                self._unorder(old)
                bisect.insort(self._order, (request.sort_key, name))
            self._requests[name] = request
        self._publish(CacheEvent(REQUEST, name, request))

    def _unorder(self, request: NodeRequest | None) -> None:
        """Under the mutex: take the request out of the service order."""
        if request is None:
            return
        entry = (request.sort_key, request.id)
        i = bisect.bisect_left(self._order, entry)
        if i < len(self._order) and self._order[i] == entry:
            del self._order[i]

    def _pool_changed(self, name: str, raw: bytes | None, stat) -> None:
        if raw is None:
            with self._mutex:
                self._pools.pop(name, None)
            self._publish(CacheEvent(POOL_COMPONENT, name, None))
            return
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            log.warning("Ignoring unreadable pool component %s", name)
            return
        with self._mutex:
            self._pools[name] = data
        self._publish(CacheEvent(POOL_COMPONENT, name, None))

    def _launcher_changed(self, name: str, raw: bytes | None, stat) -> None:
        data = _json_or_none(raw) if raw is not None else None
        with self._mutex:
            if data is None:
                self._launchers.pop(name, None)
            else:
                self._launchers[name] = data
        self._publish(CacheEvent(LAUNCHER_COMPONENT, name, None))

    def _lease_changed(self, name: str, raw: bytes | None, stat) -> None:
        data = _json_or_none(raw) if raw is not None else None
        with self._mutex:
            if raw is None:
                self._leases.pop(name, None)
            else:
                self._leases[name] = str((data or {}).get("owner", "?"))
        self._publish(CacheEvent(LEASE, name, None))


def _json_or_none(raw: bytes) -> dict | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
