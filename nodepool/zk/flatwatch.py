"""A lean watch of one flat directory (the request queue): children and their data.

kazoo's TreeCache hands every result through its own queue and thread and
watches each child's children too; for the request queue, where latency is
the product, this does the least the protocol allows: a child watch on the
directory and a data watch per child, with callbacks run where kazoo delivers
them. A new request costs two round trips (the listing, then its data).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, KazooState

log = logging.getLogger("nodepool.zk.flatwatch")

GONE_KEPT = 50_000

# changed(name, data or None when deleted, stat or None)
OnChange = Callable[[str, bytes | None, object], None]


class FlatWatch:
    """Keeps `on_change` told about every child of `path` and each change of its data."""

    def __init__(self, kazoo: KazooClient, path: str, on_change: OnChange,
                 accept: Callable[[str], bool] = lambda name: True):
        self.kazoo = kazoo
        self.path = path
        self.on_change = on_change
        self.accept = accept
        self.known: dict[str, int] = {}   # name -> mzxid of the data we reported
        # Recently deleted names, so a late read cannot bring one back (sequential
        # names never return); bounded, since late reads arrive within moments.
        self.gone: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.lock = threading.Lock()
        self.initialized = threading.Event()
        self._pending_initial = 0
        self.stopped = False

    def start(self) -> None:
        self.kazoo.ensure_path(self.path)
        self.kazoo.add_listener(self._on_state)
        self._list()

    def stop(self) -> None:
        self.stopped = True
        self.kazoo.remove_listener(self._on_state)

    # -- children ----------------------------------------------------------

    def _list(self) -> None:
        if self.stopped:
            return
        self.kazoo.get_children_async(self.path, watch=self._children_changed).rawlink(
            self._listed)

    def _children_changed(self, event) -> None:
        self._list()

    def _listed(self, result) -> None:
        try:
            children = set(result.get())
        except NoNodeError:
            children = set()
        except Exception as e:   # connection trouble: the reconnect resync covers it
            log.debug("Listing %s failed: %s", self.path, e)
            return
        with self.lock:
            new = [c for c in children if c not in self.known and c not in self.gone
                   and self.accept(c)]
            vanished = [c for c in self.known if c not in children]
            for name in new:
                self.known[name] = -1
            for name in vanished:
                self._forget(name)
            if not self.initialized.is_set():
                self._pending_initial = len(new)
                if not new:
                    self.initialized.set()
        for name in vanished:
            self.on_change(name, None, None)
        for name in new:
            self._read(name)

    # -- data ----------------------------------------------------------------

    def _read(self, name: str) -> None:
        if self.stopped:
            return
        # One watcher function for every child: kazoo keeps watchers in a set
        # per path, so re-reading never stacks duplicates.
        self.kazoo.get_async(f"{self.path}/{name}", watch=self._data_changed).rawlink(
            lambda res, n=name: self._got(n, res))

    def _data_changed(self, event) -> None:
        name = event.path.rsplit("/", 1)[-1]
        if event.type == EventType.DELETED:
            with self.lock:
                if name not in self.known:
                    return
                self._forget(name)
            self.on_change(name, None, None)
        else:
            self._read(name)

    def _got(self, name: str, result) -> None:
        try:
            data, stat = result.get()
        except NoNodeError:
            data = stat = None
        except Exception as e:
            log.debug("Reading %s/%s failed: %s", self.path, name, e)
            return
        with self.lock:
            if name not in self.known:
                return                      # deleted meanwhile
            if stat is None:
                self._forget(name)
            elif stat.mzxid < self.known[name]:
                return                      # an older read arriving late
            else:
                self.known[name] = stat.mzxid
            if not self.initialized.is_set():
                self._pending_initial -= 1
                if self._pending_initial <= 0:
                    self.initialized.set()
        self.on_change(name, data, stat)

    def _forget(self, name: str) -> None:
        self.known.pop(name, None)
        self.gone[name] = None
        while len(self.gone) > GONE_KEPT:
            self.gone.popitem(last=False)

    # -- sessions ------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        # kazoo restores one-shot watches on reconnect within the same session;
        # a new session has none, so list again (and re-read what is still there).
        if state == KazooState.CONNECTED and not self.stopped:
            self.kazoo.handler.spawn(self._resync)

    def _resync(self) -> None:
        with self.lock:
            names = list(self.known)
        self._list()
        for name in names:
            self._read(name)
