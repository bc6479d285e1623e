"""Every queued request in one turn of kazoo's connection loop.

kazoo (2.11) sends one request per turn of its connection thread's loop: a
poll that finds the wake-up byte the caller wrote, a poll for writability,
one `send` (one TLS record) and one `recv` of the wake-up byte per request.
A launcher pass sends dozens at once (a hand-over wave, the deletion locks
of a cleanup pass), so here one turn sends every request queued, serialised
back to back in one write, as kazoo would have sent them one by one: same
order, same xids, each recorded as pending in that order. The server reads
a stream either way.

This replaces `ConnectionHandler._send_request` of one client (a private
method, like the watch routing in treewatch.py): a kazoo upgrade must
re-check it. Requests kazoo treats specially (auth, its test sentinels) go
through kazoo's own method, one at a time.
"""

from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.protocol import connection as kazoo_connection
from kazoo.protocol.serialization import Auth, int_struct

MAX_BATCH = 256          # requests per write
_XID_WRAP = 2147483647   # kazoo's xid range


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
