"""The ZooKeeper connection: TLS, chroot, bounded connect, session-state listeners."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Callable

from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState

from nodepool.errors import ZooKeeperUnavailable
from nodepool.zk.kazooext.client import NodepoolKazooClient

log = logging.getLogger("nodepool.zk")

# What listeners receive: the kazoo states, plus NEW_SESSION after a session
# was lost and a new one is connected (ephemerals must be re-created).
CONNECTED = "CONNECTED"
SUSPENDED = "SUSPENDED"
LOST = "LOST"
NEW_SESSION = "NEW_SESSION"

StateListener = Callable[[str], None]

@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """Client certificate, key and CA bundle paths for a TLS connection."""

    cert: str
    key: str
    ca: str


class ZooKeeperClient:
    """One kazoo session shared by a process, with listeners run off kazoo's thread.

    kazoo calls state listeners on its connection thread, where no ZooKeeper
    call may be made; we hand each state change to a dispatcher thread so a
    listener may do real work (re-register components, resync caches).
    """

    def __init__(
        self,
        hosts: str,
        chroot: str | None = None,
        tls: TLSFiles | None = None,
        timeout: float = 10.0,
    ):
        if chroot and not chroot.startswith("/"):
            raise ValueError(f"ZooKeeper chroot must start with '/', got {chroot!r}")
        self.hosts = hosts
        self.chroot = chroot.rstrip("/") if chroot else None
        self.tls = tls
        self.timeout = timeout
        self.kazoo: NodepoolKazooClient | None = None
        self._listeners: list[StateListener] = []
        self._events: queue.Queue = queue.Queue()
        self._dispatcher: threading.Thread | None = None
        self._lost = False
        self._connected = threading.Event()

    @classmethod
    def from_config(cls, config) -> ZooKeeperClient:
        """Build from a loaded `nodepool.config.Config`."""
        hosts, chroot = config.zookeeper_hosts(), config.zookeeper_chroot()
        tls = None
        if config.zookeeper_tls:
            t = config.zookeeper_tls
            tls = TLSFiles(cert=t.cert, key=t.key, ca=t.ca)
        return cls(hosts, chroot=chroot, tls=tls, timeout=config.zookeeper_timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def describe(self) -> str:
        return f"{self.hosts}{self.chroot or ''}" + (" (TLS)" if self.tls else "")

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _make_kazoo(self, chroot: str | None) -> NodepoolKazooClient:
        kwargs: dict = {}
        if self.tls:
            kwargs = dict(use_ssl=True, certfile=self.tls.cert, keyfile=self.tls.key, ca=self.tls.ca)
        return NodepoolKazooClient(hosts=self.hosts + (chroot or ""), timeout=self.timeout,
                                   **kwargs)

    def connect(self, timeout: float | None = None) -> None:
        """Connect, creating the chroot if missing; raise ZooKeeperUnavailable within `timeout`."""
        timeout = self.timeout if timeout is None else timeout
        if self.chroot:
            self._ensure_chroot(timeout)
        self.kazoo = self._start(self._make_kazoo(self.chroot), timeout)
        self._connected.set()
        self.kazoo.add_listener(self._on_kazoo_state)
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="zk-state-dispatcher", daemon=True
        )
        self._dispatcher.start()
        log.info("Connected to ZooKeeper %s", self.describe())

    def _start(self, kz: NodepoolKazooClient, timeout: float) -> NodepoolKazooClient:
        try:
            kz.start(timeout=timeout)
        except (KazooTimeoutError, OSError) as e:
            kz.stop()
            kz.close()
            raise ZooKeeperUnavailable(
                f"could not connect to ZooKeeper at {self.describe()} within {timeout:g}s ({e})"
            ) from None
        return kz

    def _ensure_chroot(self, timeout: float) -> None:
        # A chrooted session cannot create its own root; use a short plain one.
        kz = self._start(self._make_kazoo(None), timeout)
        try:
            if kz.exists(self.chroot) is None:
                try:
                    kz.ensure_path(self.chroot)
                except NodeExistsError:
                    pass
        finally:
            kz.stop()
            kz.close()

    def disconnect(self) -> None:
        if self.kazoo is None:
            return
        self._events.put(None)
        self.kazoo.remove_listener(self._on_kazoo_state)
        self.kazoo.stop()
        self.kazoo.close()
        self._connected.clear()
        if self._dispatcher:
            self._dispatcher.join(timeout=5)
        self.kazoo = None

    def delete_bounded(self, path: str, timeout: float = 5.0) -> None:
        """Delete `path` (gone is fine), waiting at most `timeout`: for shutdown paths,
        where a ZooKeeper that is down must not hang the process (ephemerals go with
        the session anyway)."""
        if self.kazoo is None or not self.connected:
            return
        try:
            self.kazoo.delete_async(path).get(timeout=timeout)
        except NoNodeError:
            pass
        except Exception as e:
            log.warning("Could not delete %s while stopping: %s", path, e)

    def _on_kazoo_state(self, state: str) -> None:
        # Runs on kazoo's connection thread: record and hand off, nothing more.
        if state == KazooState.CONNECTED:
            self._connected.set()
            self._events.put(NEW_SESSION if self._lost else CONNECTED)
            self._lost = False
        else:
            self._connected.clear()
            if state == KazooState.LOST:
                self._lost = True
            self._events.put(LOST if state == KazooState.LOST else SUSPENDED)

    def _dispatch(self) -> None:
        while True:
            state = self._events.get()
            if state is None:
                return
            log.warning("ZooKeeper connection state: %s", state) if state != CONNECTED else \
                log.info("ZooKeeper connection state: %s", state)
            for listener in list(self._listeners):
                try:
                    listener(state)
                except Exception:
                    log.exception("ZooKeeper state listener %r failed", listener)


RETRY_MAX = 30.0   # seconds: the longest wait between start-up connection attempts


def connect_retrying(config, retry: bool, interrupted: threading.Event,
                     waiting: Callable[[str | None], None] = lambda _: None
                     ) -> ZooKeeperClient | None:
    """A connected client for a daemon's start. While ZooKeeper is away and `retry`, try
    again after 1, 2, 4 ... 30 s, saying so in the log and through `waiting(reason)`
    (`waiting(None)` once it answers); None if `interrupted` is set meanwhile. Without
    `retry` the first ZooKeeperUnavailable is raised."""
    delay, waited = 1.0, False
    while True:
        zk = ZooKeeperClient.from_config(config)
        try:
            zk.connect()
            if waited:
                log.info("ZooKeeper answered: starting")
                waiting(None)
            return zk
        except ZooKeeperUnavailable as e:
            if not retry:
                raise
            waited = True
            waiting(f"waiting for ZooKeeper: {e}")
            log.warning("%s; retrying in %gs", e, delay)
        if interrupted.wait(delay):
            return None
        delay = min(delay * 2, RETRY_MAX)
