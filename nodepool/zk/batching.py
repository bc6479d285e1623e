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
* Reads: the socket is read in large chunks into a buffer, and one turn
  handles every complete answer or event in it, in order, with kazoo's own
  code for each.

This replaces `ConnectionHandler._send_request`, `_read` and `_read_socket`
of one client (private methods, like the watch routing in treewatch.py): a
kazoo upgrade must re-check them. Requests kazoo treats specially (auth, its
test sentinels) go through kazoo's own method, one at a time.
"""

from __future__ import annotations

import ssl

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionDropped
from kazoo.protocol import connection as kazoo_connection
from kazoo.protocol.serialization import Auth, int_struct

MAX_BATCH = 256          # requests per write
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
    """Make `kazoo`'s connection send every queued request per loop turn."""
    conn = kazoo._connection
    one_at_a_time = conn._send_request
    special = (kazoo_connection._SESSION_EXPIRED, kazoo_connection._CONNECTION_DROP)

    def send_request(read_timeout, connect_timeout):
        queue = conn.client._queue
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
        if not batch:
            one_at_a_time(read_timeout, connect_timeout)
            return
        conn._write(bytes(buf), connect_timeout)
        conn._xid = xid
        pending = conn.client._pending
        for item in batch:
            queue.popleft()
            pending.append(item)
        # One wake-up byte per request; a byte written late wakes an empty turn,
        # which kazoo's own method clears.
        conn._read_sock.recv(len(batch))

    conn._send_request = send_request
