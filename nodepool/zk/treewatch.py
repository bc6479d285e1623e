"""A persistent recursive watch of one directory: its children's data and one subdirectory each.

ZooKeeper 3.6+ keeps a persistent recursive watch (`addWatch`) until it is
removed: every create, delete and data change anywhere below the path is
reported once, with no re-registration and no listing to find out what
changed. For the node tree that means a lock contender coming or going is
known from the event alone, where one-shot child watches cost a listing per
lock and unlock (about 17 of the 65 ZooKeeper requests of a node's life).

kazoo 2.11 has no API for it, so this module sends the `AddWatch` request
(opcode 106) itself, and `NodepoolKazooClient` (nodepool/zk/kazooext/) routes
its events from kazoo's reader. The correctness argument needs one more
thing: events and replies must be handled in the order the server sent them,
so that a listing's reply is a snapshot at its place in the stream and later
events apply on top of it. `PollHandler` (nodepool/zk/kazooext/handler.py)
runs our watch callbacks and completions (`Inline`) on kazoo's reader thread
as they are read, one at a time, for that, and every request here has its
callback attached before it is sent (kazoo's `rawlink`
on a result that is already set would queue the callback late, out of order).

Everything below runs as such a callback (one at a time), except `start`/`stop`.
"""

from __future__ import annotations

import logging
import threading
from collections import namedtuple
from typing import Callable

from kazoo.exceptions import NoNodeError, UnimplementedError
from kazoo.protocol.serialization import (
    Create2,
    GetChildren,
    GetData,
    SetData,
    int_struct,
    write_string,
)
from kazoo.protocol.states import (
    Callback,
    EventType,
    KazooState,
    WatchedEvent,
)
from kazoo.security import OPEN_ACL_UNSAFE

from nodepool.errors import ZooKeeperUnavailable
from nodepool.zk.kazooext.client import NodepoolKazooClient
from nodepool.zk.kazooext.handler import Inline

log = logging.getLogger("nodepool.zk.treewatch")

PERSISTENT_RECURSIVE = 1
SEQUENTIAL = 2          # a create's flags: persistent, sequential

# on_data(name, data or None when deleted, stat or None)
OnData = Callable[[str, bytes | None, object], None]
# on_members(name, names in the child's subdirectory)
OnMembers = Callable[[str, frozenset[str]], None]


class UnsupportedServer(ZooKeeperUnavailable):
    """The ZooKeeper server is too old for persistent watches (the launcher exits 3)."""


class AddWatch(namedtuple("AddWatch", "path mode")):
    """ZooKeeper's addWatch request (3.6+); the reply has no body."""

    type = 106

    def serialize(self) -> bytearray:
        b = bytearray(write_string(self.path))
        b.extend(int_struct.pack(self.mode))
        return b

    @classmethod
    def deserialize(cls, buffer, offset) -> bool:
        return True


def send(kazoo: NodepoolKazooClient, request, *callbacks: Callable | None):
    """Send `request` (paths already chrooted), `callbacks` (None ones skipped) attached in
    order before it goes out; returns kazoo's async result.

    Attach every callback here, never later: kazoo 2.11's `rawlink` on a result that
    is already set queues every callback linked so far once more (our own-write
    counting would run twice), and a late one runs out of order.
    """
    result = kazoo.handler.async_result()
    for callback in callbacks:
        if callback is not None:
            result.rawlink(Inline(callback))
    kazoo.send_request(request, result)
    return result


def ordered(kazoo: NodepoolKazooClient) -> bool:
    """Does this client run watch callbacks and completions on one thread, in order?"""
    handler = kazoo.handler
    return getattr(handler, "completion_queue", None) is getattr(handler, "callback_queue", 0)


class TreeWatch:
    """Keeps `on_data` told about every child of `path`, `on_members` about each child's `subdir`."""

    def __init__(self, kazoo: NodepoolKazooClient, path: str, on_data: OnData,
                 accept: Callable[[str], bool] = lambda name: True,
                 subdir: str | None = None, on_members: OnMembers | None = None):
        if not ordered(kazoo):
            raise ValueError("TreeWatch needs a client whose handler keeps events and "
                             "replies in order (nodepool.zk.kazooext.handler.PollHandler)")
        self.kazoo = kazoo
        self.path = path.rstrip("/")
        self.full = (kazoo.chroot or "") + self.path
        self.on_data = on_data
        self.accept = accept
        self.subdir = subdir
        self.on_members = on_members
        self.known: dict[str, int] = {}          # name -> mzxid of the data we reported
        self.members: dict[str, set[str]] = {}   # name -> names in its subdir
        self.with_subdir: set[str] = set()       # names whose subdir exists
        self.initialized = threading.Event()
        self._outstanding = 0                    # replies the first sync still waits for
        self.stopped = False
        # Our own writes in flight, by name (senders count up under the lock), and
        # per name: [change events seen meanwhile, writes that succeeded, last (data, stat)].
        self._own_lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._own: dict[str, list] = {}
        # Reads of changed data in flight by name; member changes of such a name
        # are told after the data, so no one sees old data with new members
        # (a node still "in-use" whose user has just set it used and unlocked it).
        self._reading: dict[str, int] = {}
        self._members_later: set[str] = set()
        # Sequential creates of ours in flight (their names come with the answers,
        # after the events), and the children created meanwhile, unread, in order.
        self._creating = 0
        self._unclaimed: list[str] = []

    # -- start, stop, resync ----------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Watch and load; raises UnsupportedServer when ZooKeeper has no addWatch (< 3.6)."""
        self.kazoo.ensure_path(self.path)
        try:
            send(self.kazoo, AddWatch(self.full, PERSISTENT_RECURSIVE)).get(timeout=timeout)
        except UnimplementedError:
            raise UnsupportedServer(
                "ZooKeeper does not support persistent recursive watches (addWatch): "
                "the launcher needs ZooKeeper 3.6 or newer") from None
        self.kazoo.add_persistent_route(self.path, self._event)
        self.kazoo.add_listener(self._on_state)
        self._run_ordered(self._sync)

    def stop(self) -> None:
        self.stopped = True
        self.kazoo.remove_listener(self._on_state)
        self.kazoo.remove_persistent_route(self.path)

    def _run_ordered(self, fn: Callable[[], None]) -> None:
        self.kazoo.handler.dispatch_callback(Callback("watch", Inline(fn), ()))

    def _on_state(self, state: str) -> None:
        # On kazoo's connection thread. The server forgets watches with the
        # connection (kazoo does not send SetWatches) and changes made while we
        # were away raised no event: add the watch again and read everything.
        if state == KazooState.CONNECTED and not self.stopped:
            self._run_ordered(self._sync)

    def _sync(self) -> None:
        if self.stopped:
            return
        # The watch first: everything after the listing's place in the stream
        # arrives as events, everything before it is in the listing.
        send(self.kazoo, AddWatch(self.full, PERSISTENT_RECURSIVE), self._added)
        self._expect(1)
        send(self.kazoo, GetChildren(self.full, None), self._listed)

    def _added(self, result) -> None:
        try:
            result.get()
        except Exception as e:   # connection trouble: the reconnect sync covers it
            log.warning("Could not watch %s: %s", self.path, e)

    def _expect(self, n: int) -> None:
        if not self.initialized.is_set():
            self._outstanding += n

    def _replied(self) -> None:
        if not self.initialized.is_set():
            self._outstanding -= 1
            if self._outstanding <= 0:
                self.initialized.set()

    # -- replies ----------------------------------------------------------------

    def _listed(self, result) -> None:
        try:
            children = set(result.get())
        except NoNodeError:
            children = set()
        except Exception as e:
            log.debug("Listing %s failed: %s", self.path, e)
            return
        for name in [n for n in self.known if n not in children]:
            self._forget(name)
        for name in sorted(children):     # sequential names: in creation order
            if self.accept(name):
                self.known.setdefault(name, -1)
                self._read(name)
        self._replied()

    def _read(self, name: str) -> None:
        self._expect_data(name)
        if self.subdir:
            self._expect(1)
            send(self.kazoo, GetChildren(f"{self.full}/{name}/{self.subdir}", None),
                 lambda result, n=name: self._members_listed(n, result))

    def _got(self, name: str, result) -> None:
        self._replied()
        self._hold(name, -1)
        try:
            data, stat = result.get()
        except NoNodeError:
            data = stat = None              # its deletion event is in the stream
        except Exception as e:
            log.debug("Reading %s/%s failed: %s", self.path, name, e)
            data = stat = None
        self._report(name, data, stat)
        self._members_due(name)

    def _members_listed(self, name: str, result) -> None:
        self._replied()
        try:
            names = set(result.get())
            exists = True
        except NoNodeError:
            names, exists = set(), False
        except Exception as e:
            log.debug("Listing %s/%s/%s failed: %s", self.path, name, self.subdir, e)
            return
        if name in self.known:
            if exists:
                self.with_subdir.add(name)
            else:
                self.with_subdir.discard(name)
            self.members[name] = names
            self._members_changed(name)

    # -- our own writes -----------------------------------------------------------

    def write(self, name: str, data: bytes, version: int = -1, then: Callable | None = None):
        """Set a child's data and return kazoo's result; the change is not read back.

        ZooKeeper sends the change event of a write before the write's reply.
        While a write of ours is in flight, change events of that child are
        only counted; at the last reply, if every counted event was one of our
        successful writes, the cache takes the data we wrote (with the reply's
        stat) instead of reading it again. Anything else is read as usual.
        `then(result)` runs after that, on kazoo's reader thread.
        """
        self.begin_own(name)
        return send(self.kazoo, SetData(f"{self.full}/{name}", data, version),
                    lambda r: self.end_own(name, data, r.get() if r.successful() else None),
                    then)

    def create_own(self, prefix: str, data: bytes, then: Callable | None = None):
        """Create a sequential child `prefix`NNNN with `data`; kazoo's result gives
        (path, stat). The cache takes it from the answer, not from a read.

        ZooKeeper sends the create's event before its answer. While creates of
        ours are in flight, created children wait unread (their lock changes
        too); each answer names ours, and any child created before it that is
        not ours is read then, as is every child left once no create is pending.
        """
        with self._own_lock:
            self._creating += 1
        request = Create2(f"{self.full}/{prefix}", data,
                          self.kazoo.default_acl or OPEN_ACL_UNSAFE, SEQUENTIAL)
        return send(self.kazoo, request, lambda r: self._created(data, r), then)

    def _created(self, data: bytes, result) -> None:
        """(Callback thread) the answer to one of our creates."""
        with self._own_lock:
            self._creating -= 1
            left = self._creating
        try:
            path, stat = result.get()
        except Exception:
            path = stat = None
        mine = path.rsplit("/", 1)[1] if path else None
        if mine in self._unclaimed:
            # Created before ours: someone else's. Then ours, from the answer.
            at = self._unclaimed.index(mine)
            others, self._unclaimed = self._unclaimed[:at], self._unclaimed[at + 1:]
            for name in others:
                self._claimed(name, None, None)
            self._claimed(mine, data, stat)
        if not left:
            others, self._unclaimed = self._unclaimed, []
            for name in others:
                self._claimed(name, None, None)

    def _claimed(self, name: str, data: bytes | None, stat) -> None:
        """An unread created child: ours (its data and stat), or read it now."""
        self._hold(name, -1)
        if name not in self.known:
            return
        if data is None:
            self._expect_data(name)
            return
        self._report(name, data, stat)
        self._members_due(name)

    def _hold(self, name: str, n: int) -> None:
        """Count a wait for the child's data in or out (member changes wait with it)."""
        left = self._reading.get(name, 0) + n
        if left > 0:
            self._reading[name] = left
        else:
            self._reading.pop(name, None)

    def _report(self, name: str, data: bytes | None, stat) -> None:
        """Tell `on_data` of the child's data unless what was told is newer."""
        if stat is not None and name in self.known and stat.mzxid >= self.known[name]:
            self.known[name] = stat.mzxid
            self.on_data(name, data, stat)

    def _members_due(self, name: str) -> None:
        """Tell member changes that waited for data, once no data is awaited."""
        if name in self._members_later and name not in self._reading:
            self._members_later.discard(name)
            if name in self.known:
                self._members_changed(name)

    def settled(self, name: str) -> bool:
        """Has the child's data come in for every change event delivered so far
        (no read, and no write of ours, in flight for it)?"""
        return name not in self._reading and name not in self._inflight

    def begin_own(self, name: str) -> None:
        """Before sending a write of `name` by other means (a transaction): count it in."""
        with self._own_lock:
            self._inflight[name] = self._inflight.get(name, 0) + 1

    def end_own(self, name: str, data: bytes, stat) -> None:
        """The write's answer (stat, or None when it failed), on kazoo's reader thread.

        Called late (a callback attached after the reply came) it only costs a
        read: events after the reply are counted as someone else's.
        """
        with self._own_lock:
            left = self._inflight[name] - 1
            if left:
                self._inflight[name] = left
            else:
                del self._inflight[name]
        seen = self._own.setdefault(name, [0, 0, None])
        if stat is not None:
            seen[1] += 1
            seen[2] = (data, stat)
        if left:
            return
        events, written, last = self._own.pop(name)
        if name not in self.known:
            self._members_later.discard(name)
            return
        if events > written:
            self._expect_data(name)      # someone else's change is among them
        elif last is not None:
            self._report(name, *last)
        self._members_due(name)

    # -- events -----------------------------------------------------------------

    def _event(self, event: WatchedEvent) -> None:
        if self.stopped or not event.path.startswith(self.path + "/"):
            return
        parts = event.path[len(self.path) + 1:].split("/")
        name = parts[0]
        if len(parts) == 1:
            if not self.accept(name):
                return
            if event.type == EventType.DELETED:
                if name in self._unclaimed:
                    self._unclaimed.remove(name)
                    self._hold(name, -1)
                if name in self.known:
                    self._forget(name)
            elif event.type == EventType.CREATED and self._creating:
                self.known.setdefault(name, -1)      # maybe ours: its answer will tell
                self._unclaimed.append(name)
                self._hold(name, 1)
            elif event.type == EventType.CREATED or name in self.known:
                if event.type == EventType.CHANGED and name in self._inflight:
                    self._own.setdefault(name, [0, 0, None])[0] += 1
                    return
                self.known.setdefault(name, -1)
                self._expect_data(name)
        elif self.subdir and parts[1] == self.subdir and name in self.known:
            current = self.members.setdefault(name, set())
            if len(parts) == 2:
                if event.type == EventType.CREATED:
                    self.with_subdir.add(name)
                elif event.type == EventType.DELETED:
                    self.with_subdir.discard(name)
                    if current:
                        current.clear()
                        self._members_changed(name)
            elif len(parts) == 3:
                if event.type == EventType.CREATED:
                    current.add(parts[2])
                elif event.type == EventType.DELETED:
                    current.discard(parts[2])
                else:
                    return
                self._members_changed(name)

    def _expect_data(self, name: str) -> None:
        self._hold(name, 1)
        self._expect(1)
        send(self.kazoo, GetData(f"{self.full}/{name}", None),
             lambda result, n=name: self._got(n, result))

    def _members_changed(self, name: str) -> None:
        # Data first: a lock change that came with a write still being read, or with
        # a write of ours not answered yet (a transaction that writes a node and
        # unlocks it), is told after that data.
        if name in self._reading or name in self._inflight:
            self._members_later.add(name)
            return
        if self.on_members is not None:
            self.on_members(name, frozenset(self.members.get(name, ())))

    def has_subdir(self, name: str) -> bool:
        """Does the child's subdir exist, as far as the events so far tell?"""
        return name in self.with_subdir

    def _forget(self, name: str) -> None:
        self.known.pop(name, None)
        self.members.pop(name, None)
        self.with_subdir.discard(name)
        self._members_later.discard(name)
        self.on_data(name, None, None)
