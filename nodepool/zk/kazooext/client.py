"""`NodepoolKazooClient`: a KazooClient with the batching connection, persistent-watch routes and raw sends."""

from __future__ import annotations

from typing import Callable

from kazoo.client import KazooClient

from nodepool.zk.kazooext.connection import BatchingConnection
from nodepool.zk.kazooext.handler import PollHandler


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

    def add_persistent_route(self, path: str, callback: Callable) -> None:
        """Call `callback(WatchedEvent)` for every watch event at or below `path` (a
        client path, chroot added here), on the callback thread, after kazoo's own
        watchers. The server-side watch (addWatch) is the caller's to send."""
        self.persistent_routes[(self.chroot or "") + path] = callback

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
