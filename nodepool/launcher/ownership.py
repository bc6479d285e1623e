"""Leases: exactly one launcher drives each provider (and one computes min-ready).

A lease is an ephemeral znode under our own path (other clients ignore it).
Whoever creates it owns the thing until its session ends or it lets go; the
others watch the znode and try again the moment it is deleted.
Which provider leases a launcher wants is placement.py's answer (the
providers spread over the live launchers); `_min-ready` goes to whoever
asks first.

Threads: a `Leases` belongs to one thread, the launcher loop (daemon.py),
which alone calls `want`, `release`, `release_all` and `poll` (so the
callbacks run there too); `Launcher.stop` takes it over once the loop has
ended. kazoo's threads only run `_on_state` and `_watch`, which set flags
and wake the loop. `held` and `wanted` are not locked: no other thread may
change them.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Callable

from kazoo.exceptions import NodeExistsError

from nodepool.zk import paths
from nodepool.zk.client import LOST, NEW_SESSION, ZooKeeperClient

log = logging.getLogger("nodepool.launcher.ownership")

MIN_READY_LEASE = "_min-ready"


class Leases:
    """Tries to hold a set of named leases; calls back when one is won or lost.

    Callbacks run on the thread that calls `poll()`, `want()` or `release()`
    (the daemon's loop), never on kazoo's threads, so they may do real work.
    """

    def __init__(self, zk: ZooKeeperClient, owner: str,
                 on_acquired: Callable[[str], None], on_lost: Callable[[str], None],
                 wake: Callable[[], None]):
        self.zk = zk
        self.owner = owner
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.wake = wake
        self.wanted: set[str] = set()
        self.held: set[str] = set()
        self.sessions: dict[str, int] = {}   # held lease -> the session id that won it
        self.standing_by: set[str] = set()   # wanted leases another launcher holds (logged)
        self._retry = threading.Event()
        self._retry.set()
        self._session_lost = False
        zk.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        if state == LOST:
            self._session_lost = True
            self.wake()
        elif state == NEW_SESSION:
            self._retry.set()
            self.wake()

    def want(self, names: set[str]) -> None:
        """Set which leases we should hold; released ones call on_lost."""
        for name in sorted(self.held - names):
            self.release(name)
        for name in sorted(self.standing_by - names):
            self.standing_by.discard(name)
            log.info("No longer standing by for %s: it is not ours to run any more", name)
        self.wanted = set(names)
        self._retry.set()
        self.wake()

    def release(self, name: str) -> None:
        if name in self.held:
            self.held.discard(name)
            self.sessions.pop(name, None)
            self.on_lost(name)
            self.zk.delete_bounded(paths.provider_lease(name))

    def release_all(self) -> None:
        for name in sorted(self.held):
            self.release(name)

    def poll(self) -> None:
        """Act on lost sessions and try to win free leases; cheap when nothing changed."""
        if self._session_lost:
            self._session_lost = False
            for name in sorted(self.held):
                log.warning("Lease %s lost with the ZooKeeper session", name)
                self.held.discard(name)
                self.sessions.pop(name, None)
                self.on_lost(name)
        if not self._retry.is_set() or not self.zk.connected:
            return
        self._retry.clear()
        data = json.dumps({"owner": self.owner}).encode()
        for name in sorted(self.wanted - self.held):
            path = paths.provider_lease(name)
            try:
                _, stat = self.zk.kazoo.create(path, data, ephemeral=True, makepath=True,
                                               include_data=True)
            except NodeExistsError:
                # Someone else holds it: try again the moment it goes away.
                if self.zk.kazoo.exists(path, watch=self._watch) is None:
                    self._retry.set()
                    self.wake()
                else:
                    self._stand_by(name, path)
                continue
            if name in self.standing_by:
                self.standing_by.discard(name)
                log.info("No longer standing by for %s: its lease is ours now", name)
            self.held.add(name)
            # The session the znode belongs to (not the client's current one, which may
            # have been replaced since): the fence holds the lease to it (fence.py).
            self.sessions[name] = stat.ephemeralOwner
            log.info("Won lease %s (session %#x)", name, stat.ephemeralOwner)
            self.on_acquired(name)

    def _stand_by(self, name: str, path: str) -> None:
        """Log once that another launcher holds the lease (not on every retry)."""
        if name in self.standing_by:
            return
        self.standing_by.add(name)
        try:
            owner = json.loads(self.zk.kazoo.get(path)[0] or b"{}").get("owner", "?")
        except Exception:   # gone or unreadable: who holds it is only for the log line
            owner = "?"
        log.info("Standing by for %s: launcher %s holds its lease; taking over when it "
                 "lets go", name, owner)

    def _watch(self, event) -> None:
        self._retry.set()
        self.wake()
