"""`NodepoolKazooClient`: a KazooClient with the batching connection, persistent-watch routes and raw sends."""

from __future__ import annotations

import threading
from typing import Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import Callback, KazooState

from nodepool.zk.kazooext.connection import BatchingConnection
from nodepool.zk.kazooext.handler import Inline, PollHandler


class NodepoolKazooClient(KazooClient):
    """kazoo's client, its connection a `BatchingConnection`, its handler a `PollHandler`
    unless one is given.

    KazooClient.__init__ builds its `ConnectionHandler` inline (no factory
    argument); we build ours right after, with the same arguments. The one
    kazoo made is never started (it holds only event objects).
    """

    def __init__(self, *args, handler=None, **kwargs):
        super().__init__(*args, handler=handler or PollHandler(), **kwargs)
        # Persistent watch callbacks by chrooted path; read by the connection thread.
        self.persistent_routes: dict[str, Callable] = {}
        made = self._connection
        self._connection = BatchingConnection(
            self, made.retry_sleeper, logger=made.logger, sasl_options=made.sasl_options)
        # Jobs waiting for the connection to come back on the same session (when_connected).
        self._deferred_lock = threading.Lock()
        self._deferred: list[tuple[int | None, Callable[[], None]]] = []
        self.add_listener(self._run_deferred)

    def when_connected(self, job: Callable[[], None]) -> None:
        """Run `job()` now if connected, else on kazoo's reader thread once connected
        again on the same session; dropped when the session is lost. `job` must not
        block (it runs as an `Inline` callback). For clean-up sends that must not be
        lost with the connection: kazoo fails every request queued or in flight when
        the connection drops, and refuses new ones until it is back."""
        with self._deferred_lock:
            if not self.connected:
                self._deferred.append((self._current_session(), job))
                return
        job()

    def _current_session(self) -> int | None:
        client_id = self.client_id
        return client_id[0] if client_id else None

    def _run_deferred(self, state: str) -> None:
        # kazoo's connection (reader) thread: run the jobs as inline callbacks, in order.
        with self._deferred_lock:
            if state == KazooState.LOST:
                self._deferred.clear()   # our ephemerals went with the session
                return
            if state != KazooState.CONNECTED:
                return
            jobs, self._deferred = self._deferred, []
        session = self._current_session()
        for owner, job in jobs:
            if owner is None or owner == session:
                self.handler.dispatch_callback(Callback("watch", Inline(job), ()))

    def add_persistent_route(self, path: str, callback: Callable) -> None:
        """Call `callback(WatchedEvent)` for every watch event at or below `path` (a
        client path, chroot added here), on kazoo's reader thread, after kazoo's own
        watchers; `callback` must not block (it runs as an `Inline` callback). The
        server-side watch (addWatch) is the caller's to send."""
        self.persistent_routes[(self.chroot or "") + path] = Inline(callback)

    def remove_persistent_route(self, path: str) -> None:
        self.persistent_routes.pop((self.chroot or "") + path, None)

    @property
    def session_timeout(self) -> float:
        """The session timeout in seconds: as negotiated with the server once it has
        been, else as asked for."""
        return self._connection.negotiated_timeout or self._session_timeout / 1000.0

    def send_request(self, request, async_result):
        """Queue a raw protocol request (its paths already chrooted); the answer sets
        `async_result`. False when the session is closed (the result has the error)."""
        return self._call(request, async_result)
