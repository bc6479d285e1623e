"""Every queued request, and every answer received, in one turn of kazoo's connection loop.

kazoo (2.11) sends one request per turn of its connection thread's loop: a
poll that finds the wake-up byte the caller wrote, a poll for writability,
one `send` (one TLS record) and one `recv` of the wake-up byte per request.
It reads the same way: per answer or event, a poll and two `recv` calls
(length, then body). A launcher pass sends dozens of requests at once (a
hand-over wave, the deletion locks of a cleanup pass), and their answers
come back together.

* Sends: one turn sends every request queued, serialised back to back in one
  write, as kazoo would have sent them one by one: same order, same xids,
  each recorded as pending in that order. The server reads a stream either
  way.
* Wake-ups: a caller writes the wake-up byte only when none is waiting to be
  read; the turn that reads the bytes sends everything queued until then. A
  pass that queues 50 requests costs the provider thread one `send` system
  call, not 50.
* Reads: the socket is read in large chunks into a buffer, and one turn
  handles every complete answer or event in it, in order, with kazoo's own
  code for each.

This replaces `KazooClient._call` and `ConnectionHandler._send_request`,
`_read` and `_read_socket` of one client (private methods, like the watch
routing in treewatch.py): a kazoo upgrade must re-check them. Requests kazoo treats specially (auth, its
test sentinels) go through kazoo's own method, one at a time.
"""

from __future__ import annotations

import ssl

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionClosedError, ConnectionDropped
from kazoo.protocol import connection as kazoo_connection
from kazoo.protocol.serialization import Auth, int_struct
from kazoo.protocol.states import KeeperState

# States in which kazoo's `_call` fails a request instead of queueing it.
_REFUSING = (KeeperState.AUTH_FAILED, KeeperState.CLOSED, KeeperState.EXPIRED_SESSION)

MAX_BATCH = 256          # requests per write
WAKE_READ = 4096         # wake-up bytes taken per turn (any number may be waiting)
READ_CHUNK = 65536       # bytes asked of the socket per read
_XID_WRAP = 2147483647   # kazoo's xid range


def batch_io(kazoo: KazooClient) -> None:
    """Make `kazoo`'s connection send every queued request, and handle every answer
    received, per loop turn."""
    batch_sends(kazoo)
    batch_reads(kazoo)


def batch_reads(kazoo: KazooClient) -> None:
    """Make `kazoo`'s connection read in chunks and handle every answer it has per turn."""
    conn = kazoo._connection
    one_frame = conn._read_socket
    buffered = bytearray()
    owner = [None]           # the socket the buffered bytes came from

    def take(sock, wait: bool, timeout) -> bool:
        """Append what the socket has to the buffer; without `wait`, only if it has
        something now. False when it had nothing (or TLS wants more first)."""
        # TLS: bytes already decrypted do not make the socket readable.
        if not (hasattr(sock, "pending") and sock.pending() > 0):
            if not conn.handler.select([sock], [], [], timeout if wait else 0)[0]:
                if wait:
                    raise conn.handler.timeout_exception("socket time-out during read")
                return False
        try:
            chunk = sock.recv(READ_CHUNK)
        except ssl.SSLError as e:
            if e.errno in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                return False
            raise
        if not chunk:
            raise ConnectionDropped("socket connection broken")
        buffered.extend(chunk)
        return True

    def read(length, timeout):
        sock = conn._socket
        if owner[0] is not sock:     # a new connection: nothing buffered is valid
            buffered.clear()
            owner[0] = sock
        with conn._socket_error_handling():
            while len(buffered) < length:
                take(sock, True, timeout)
        out = bytes(buffered[:length])
        del buffered[:length]
        return out

    def complete_frame() -> bool:
        if len(buffered) < 4:
            return False
        return len(buffered) >= 4 + int_struct.unpack_from(buffered, 0)[0]

    def read_socket(read_timeout):
        result = one_frame(read_timeout)
        while result != kazoo_connection.CLOSE_RESPONSE and owner[0] is conn._socket:
            if not complete_frame():
                with conn._socket_error_handling():
                    if not take(conn._socket, False, 0):
                        break      # nothing more now: back to kazoo's loop
                continue
            result = one_frame(read_timeout)
        return result

    conn._read = read
    conn._read_socket = read_socket


def batch_sends(kazoo: KazooClient) -> None:
    """Make `kazoo`'s connection send every queued request per loop turn, woken once
    per turn instead of once per request."""
    conn = kazoo._connection
    one_at_a_time = conn._send_request
    special = (kazoo_connection._SESSION_EXPIRED, kazoo_connection._CONNECTION_DROP)
    queue_call = kazoo._call
    # The write socket a wake-up byte was sent to and not yet read: callers that
    # queue meanwhile need not send another (kazoo sends one per request, each a
    # system call on the caller's thread and a turn of the connection loop).
    waking: list = [None]

    def call(request, async_object):
        write_sock = conn._write_sock
        if write_sock is None or kazoo._state in _REFUSING:
            return queue_call(request, async_object)   # kazoo fails it
        kazoo._queue.append((request, async_object))
        # Queued before this check: a loop turn that cleared `waking` drains it after.
        if waking[0] is write_sock:
            return None
        waking[0] = write_sock
        try:
            write_sock.send(b"\0")
        except OSError:    # closed meanwhile, as kazoo's own `_call` handles it
            waking[0] = None
            async_object.set_exception(ConnectionClosedError("Connection has been closed"))
        return None

    def send_request(read_timeout, connect_timeout):
        # Take every wake-up byte written so far; from here on a caller writes a new one.
        conn._read_sock.recv(WAKE_READ)
        waking[0] = None
        queue = conn.client._queue
        try:
            while queue:
                request, _ = queue[0]
                if request in special or request.type == Auth.type:
                    conn._write_sock.send(b"\0")   # kazoo's method reads one wake-up byte
                    one_at_a_time(read_timeout, connect_timeout)
                    continue
                send_batch(queue, connect_timeout)
        except BaseException:
            # The requests not sent stay queued: a byte makes the next connection's
            # loop send them, as kazoo's unread per-request bytes would.
            if queue and conn._write_sock is not None:
                conn._write_sock.send(b"\0")
            raise

    def send_batch(queue, connect_timeout) -> None:
        buf = bytearray()
        batch = []
        xid = conn._xid
        # Peek, do not pop: if the write fails, the requests stay queued for the
        # next connection, as kazoo leaves them. Other threads only append.
        while len(batch) < MAX_BATCH and len(batch) < len(queue):
            request, async_object = queue[len(batch)]
            if request in special or request.type == Auth.type:
                break
            xid = (xid % _XID_WRAP) + 1
            body = int_struct.pack(xid)
            if request.type:
                body += int_struct.pack(request.type)
            body += request.serialize()
            buf += int_struct.pack(len(body))
            buf += body
            batch.append((request, async_object, xid))
        conn._write(bytes(buf), connect_timeout)
        conn._xid = xid
        pending = conn.client._pending
        for item in batch:
            queue.popleft()
            pending.append(item)

    kazoo._call = call
    conn._send_request = send_request
