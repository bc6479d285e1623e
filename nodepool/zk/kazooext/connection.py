"""`BatchingConnection`: kazoo's connection with batched sends, chunked reads and persistent-watch routing.

kazoo (2.11) sends one request per turn of its connection thread's loop: a
poll that finds the wake-up byte the caller wrote, a poll for writability,
one `send` (one TLS record) and one `recv` of the wake-up byte per request.
It reads the same way: per answer or event, a poll and two `recv` calls
(length, then body). A launcher pass sends dozens of requests at once (a
hand-over wave, the deletion locks of a cleanup pass), and their answers
come back together.

* Sends: one turn sends every request queued, serialised back to back in
  writes of up to MAX_BATCH, as kazoo would have sent them one by one: same
  order, same xids, each recorded as pending in that order. The server reads
  a stream either way. The wake-up socket holds one byte per turn, not one
  per request (handler.Wakeup). Requests kazoo treats specially (auth, its
  test sentinels) go through kazoo's own method, one at a time.
* Reads: the socket is read in large chunks into a buffer, and one turn
  handles every complete answer or event in it, in order, with kazoo's own
  code for each.
* Watch events: after kazoo's one-shot watchers, the client's persistent
  routes (`NodepoolKazooClient.add_persistent_route`) for the event's path and
  its ancestors are dispatched, as `Inline` callbacks on the reader thread.

These override private `ConnectionHandler` methods (see `PRIVATE_NAMES`): a
kazoo upgrade must re-check them.
"""

from __future__ import annotations

import socket
import ssl

from kazoo.exceptions import ConnectionDropped
from kazoo.protocol import connection as kazoo_connection
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Auth, Watch, int_struct
from kazoo.protocol.states import EVENT_TYPE_MAP, Callback, WatchedEvent

MAX_BATCH = 256          # requests per write
READ_CHUNK = 65536       # bytes asked of the socket per read
_XID_WRAP = 2147483647   # kazoo's xid range
_SPECIAL = (kazoo_connection._SESSION_EXPIRED, kazoo_connection._CONNECTION_DROP)


class BatchingConnection(ConnectionHandler):
    """kazoo's connection sending every queued request, and handling every answer
    received, per loop turn; routing watch events to persistent watchers too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inbuf = bytearray()
        self._inbuf_sock = None     # the socket the buffered bytes came from
        self.negotiated_timeout: float | None = None   # seconds, of the current session

    # -- sends --------------------------------------------------------------------

    def _send_request(self, read_timeout, connect_timeout):
        # kazoo's read timeout is 2/3 of the session timeout the server negotiated.
        self.negotiated_timeout = read_timeout * 1.5
        queue = self.client._queue
        wakeup = self._write_sock
        # The bytes written so far are read, then the socket is re-armed, then the
        # queue is taken: a request queued after the re-arm writes a byte that
        # stays for the next turn (handler.Wakeup). Re-armed first, a byte written
        # between the two would be read here and the socket left disarmed with
        # nothing to wake the loop for the next request.
        self._drain_wakeups()
        wakeup.rearm()
        if not queue:
            return
        request, _ = queue[0]
        if request in _SPECIAL or request.type == Auth.type:
            wakeup.prime()   # kazoo's method reads one byte per request it sends
            super()._send_request(read_timeout, connect_timeout)
        else:
            self._send_batch(queue, connect_timeout)
        if queue:
            # One batch per turn, as before: the loop reads what came meanwhile
            # (a server blocked on a full socket would stop reading our writes).
            wakeup.send(b"\0")

    def _drain_wakeups(self) -> None:
        try:
            self._read_sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass

    def _send_batch(self, queue, connect_timeout) -> None:
        """Up to MAX_BATCH queued requests (none special) in one write."""
        buf = bytearray()
        batch = []
        xid = self._xid
        # Peek, do not pop: if the write fails, the requests stay queued for the
        # next connection, as kazoo leaves them. Other threads only append.
        while len(batch) < MAX_BATCH and len(batch) < len(queue):
            request, async_object = queue[len(batch)]
            if request in _SPECIAL or request.type == Auth.type:
                break
            xid = (xid % _XID_WRAP) + 1
            body = int_struct.pack(xid)
            if request.type:
                body += int_struct.pack(request.type)
            body += request.serialize()
            buf += int_struct.pack(len(body))
            buf += body
            batch.append((request, async_object, xid))
        self._write(bytes(buf), connect_timeout)
        self._xid = xid
        pending = self.client._pending
        for item in batch:
            queue.popleft()
            pending.append(item)

    # -- reads --------------------------------------------------------------------

    def _take(self, sock, wait: bool, timeout) -> bool:
        """Append what the socket has to the buffer; without `wait`, only if it has
        something now. False when it had nothing (or TLS wants more first)."""
        # TLS: bytes already decrypted do not make the socket readable.
        if not (hasattr(sock, "pending") and sock.pending() > 0):
            if not self.handler.select([sock], [], [], timeout if wait else 0)[0]:
                if wait:
                    raise self.handler.timeout_exception("socket time-out during read")
                return False
        try:
            chunk = sock.recv(READ_CHUNK)
        except ssl.SSLError as e:
            if e.errno in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                return False
            raise
        if not chunk:
            raise ConnectionDropped("socket connection broken")
        self._inbuf.extend(chunk)
        return True

    def _read(self, length, timeout):
        sock = self._socket
        buffered = self._inbuf
        if self._inbuf_sock is not sock:     # a new connection: nothing buffered is valid
            buffered.clear()
            self._inbuf_sock = sock
        with self._socket_error_handling():
            while len(buffered) < length:
                self._take(sock, True, timeout)
        out = bytes(buffered[:length])
        del buffered[:length]
        return out

    def _complete_frame(self) -> bool:
        buffered = self._inbuf
        if len(buffered) < 4:
            return False
        return len(buffered) >= 4 + int_struct.unpack_from(buffered, 0)[0]

    def _read_socket(self, read_timeout):
        result = super()._read_socket(read_timeout)
        while result != kazoo_connection.CLOSE_RESPONSE and self._inbuf_sock is self._socket:
            if not self._complete_frame():
                with self._socket_error_handling():
                    if not self._take(self._socket, False, 0):
                        break      # nothing more now: back to kazoo's loop
                continue
            result = super()._read_socket(read_timeout)
        return result

    # -- persistent watches ---------------------------------------------------------

    def _read_watch_event(self, buffer, offset):
        super()._read_watch_event(buffer, offset)
        client = self.client
        routes = client.persistent_routes
        if not routes or client._stopped.is_set():
            return
        watch, _ = Watch.deserialize(buffer, offset)
        kind = EVENT_TYPE_MAP.get(watch.type)
        for prefix, callback in list(routes.items()):
            if watch.path == prefix or watch.path.startswith(prefix + "/"):
                event = WatchedEvent(kind, client._state, client.unchroot(watch.path))
                client.handler.dispatch_callback(Callback("watch", callback, (event,)))
