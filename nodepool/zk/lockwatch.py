"""Who holds each node's lock: a child watch per lock directory, the set replaced whole.

Each listing of `/nodepool/nodes/<id>/lock` replaces what we knew (results of
one session arrive in order, so the last listing wins); a missing directory is
watched with `exists` until someone creates it. Nothing is inferred from
per-contender events, which could arrive out of order.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType

from nodepool.zk import paths
from nodepool.zk.locks import is_contender

log = logging.getLogger("nodepool.zk.lockwatch")

# changed(node_id, names of the lock's contenders)
OnLocks = Callable[[str, frozenset[str]], None]


class LockWatch:
    """Keeps `on_change` told about the contenders of every node it watches."""

    def __init__(self, kazoo: KazooClient, on_change: OnLocks):
        self.kazoo = kazoo
        self.on_change = on_change
        self.active: set[str] = set()
        self.unlisted: set[str] = set()   # watched, first listing not back yet
        self.settled = threading.Event()
        self.settled.set()
        self.lock = threading.Lock()

    def watch(self, node_id: str) -> None:
        with self.lock:
            if node_id in self.active:
                return
            self.active.add(node_id)
            self.unlisted.add(node_id)
            self.settled.clear()
        self._list(node_id)

    def forget(self, node_id: str) -> None:
        with self.lock:
            self.active.discard(node_id)
            self._listed_once(node_id)

    def _listed_once(self, node_id: str) -> None:
        self.unlisted.discard(node_id)
        if not self.unlisted:
            self.settled.set()

    def resync(self) -> None:
        with self.lock:
            ids = list(self.active)
        for node_id in ids:
            self._list(node_id)

    def _list(self, node_id: str) -> None:
        self.kazoo.get_children_async(paths.node_lock(node_id), watch=self._changed).rawlink(
            lambda result, n=node_id: self._listed(n, result))

    def _node_id(self, path: str) -> str:
        # .../nodes/<id>/lock
        return path.rstrip("/").rsplit("/", 2)[-2]

    def _changed(self, event) -> None:
        node_id = self._node_id(event.path)
        if node_id in self.active:
            self._list(node_id)

    def _appeared(self, event) -> None:
        node_id = self._node_id(event.path)
        if event.type == EventType.CREATED and node_id in self.active:
            self._list(node_id)

    def _listed(self, node_id: str, result) -> None:
        if node_id not in self.active:
            return
        try:
            children = result.get()
        except NoNodeError:
            # No lock dir yet (or the node is going): learn when one appears.
            self.kazoo.exists_async(paths.node_lock(node_id), watch=self._appeared).rawlink(
                lambda res, n=node_id: self._exists(n, res))
            self.on_change(node_id, frozenset())
            with self.lock:
                self._listed_once(node_id)
            return
        except Exception as e:   # connection trouble: the reconnect resync covers it
            log.debug("Listing the lock of node %s failed: %s", node_id, e)
            return
        self.on_change(node_id, frozenset(c for c in children if is_contender(c)))
        with self.lock:
            self._listed_once(node_id)

    def _exists(self, node_id: str, result) -> None:
        try:
            stat = result.get()
        except Exception:
            return
        if stat is not None and node_id in self.active:
            self._list(node_id)   # created between our listing and the exists watch
