"""The HTTP server: waitress, in threads of its own, with limits against hostile clients.

waitress runs one I/O thread (its asyncore loop, here thread "web") that
reads requests and writes responses without blocking, and a few worker
threads ("waitress-N") that run the WSGI app over a complete request. No
launcher thread ever waits on a client: a client that sends nothing, or
reads slowly, costs an idle socket in the I/O loop until `channel_timeout`.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass

import waitress
from waitress import wasyncore

log = logging.getLogger("nodepool.web")


@dataclass(frozen=True)
class Limits:
    """The server's settings (doc/operation.md, "Web endpoints" says why each)."""

    # Workers running handlers. Handlers are short and CPU-bound over the cache
    # (the GIL makes more threads no faster); 4 keeps /ready answering while a
    # few large listings are being built.
    threads: int = 4
    # Open connections at most; beyond it waitress stops accepting (the kernel's
    # backlog holds the rest) until some close. With poll() there is no 1,024-fd
    # select() ceiling; 500 sockets is far below the process's file limit.
    connection_limit: int = 500
    # Seconds a connection may stay idle (nothing sent or read) before it is closed.
    channel_timeout: int = 30
    # How often idle connections are looked for.
    cleanup_interval: int = 10
    # Requests are GETs: 16 KiB of headers is plenty, a body is never needed.
    max_request_header_size: int = 16 * 1024
    max_request_body_size: int = 64 * 1024
    backlog: int = 1024


class WebBindError(Exception):
    """The listen address cannot be bound (in use, not ours, not an address)."""


class WebServer:
    """Serves `app` on address:port from its own threads; `port` is the bound port."""

    def __init__(self, app, address: str, port: int, limits: Limits = Limits()):
        self._map: dict = {}
        try:
            self._server = waitress.create_server(
                app, map=self._map, host=address, port=port, ident="nodepool",
                threads=limits.threads, connection_limit=limits.connection_limit,
                channel_timeout=limits.channel_timeout,
                cleanup_interval=limits.cleanup_interval,
                max_request_header_size=limits.max_request_header_size,
                max_request_body_size=limits.max_request_body_size,
                backlog=limits.backlog, asyncore_use_poll=True, expose_tracebacks=False,
                # A client that resets its connection is the client's business: no
                # traceback in our log for each one (a hostile client could flood it).
                log_socket_errors=False, clear_untrusted_proxy_headers=True)
        except OSError as e:
            reason = "address already in use" if e.errno == errno.EADDRINUSE else \
                (e.strerror or str(e))
            raise WebBindError(f"cannot listen on {address}:{port}: {reason}") from None
        except ValueError as e:   # waitress refuses a malformed host
            raise WebBindError(f"cannot listen on {address}:{port}: {e}") from None
        self.address = address
        self.port: int = int(self._server.effective_port)   # waitress gives a str
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._stopped = False

    def start(self) -> "WebServer":
        self._thread.start()
        log.info("Web endpoints listening on http://%s:%d/", self.address, self.port)
        return self

    def _run(self) -> None:
        self._server.run()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening socket and every connection, end the threads."""
        if self._stopped:
            return
        self._stopped = True
        # The workers first: one finishing a request wakes the I/O loop through its
        # trigger, which must still be open (closed under it, waitress raises EBADF).
        self._server.task_dispatcher.shutdown(timeout=timeout)
        if self._thread.is_alive():
            # Closed on the I/O thread itself, between two polls: its loop then ends.
            self._server.trigger.pull_trigger(self._close_all)
            self._thread.join(timeout)
        else:
            self._close_all()
        log.info("Web endpoints stopped")

    def _close_all(self) -> None:
        wasyncore.close_all(self._map, ignore_all=True)
