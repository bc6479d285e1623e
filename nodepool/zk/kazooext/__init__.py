"""kazoo extensions: the one place in nodepool that touches kazoo's private internals.

Tested with kazoo 2.11 (2.11.0); setup.cfg pins `kazoo>=2.11,<2.12`. Before
widening the pin, run tests/test_kazooext.py (it resolves every name below on
the installed kazoo) and tests/test_zk_batching.py, tests/test_treewatch.py.

* handler.py: `PollHandler`, our callbacks (`Inline`) run on the reader
  thread in order, others on one worker; a wake-up socket written once per
  turn, poll(2) waits.
* connection.py: `BatchingConnection`, batched sends, chunked reads,
  persistent-watch routing (overridden `ConnectionHandler` methods).
* client.py: `NodepoolKazooClient`, which uses both, owns the persistent
  routes and sends raw requests (`send_request`).

`PRIVATE_NAMES`: every private kazoo attribute or method the extensions rely
on (override, call, read or write), qualified by where kazoo defines it;
names on a class may be instance attributes set by its __init__.
"""

PRIVATE_NAMES = [
    # handler.py: PollHandler.start re-implements kazoo's start with one worker.
    "kazoo.handlers.threading.SequentialThreadingHandler._create_thread_worker",
    "kazoo.handlers.threading.SequentialThreadingHandler._state_change",
    "kazoo.handlers.threading.SequentialThreadingHandler._running",
    "kazoo.handlers.threading.SequentialThreadingHandler._workers",
    # connection.py: overridden methods (and the loop that calls them) ...
    "kazoo.protocol.connection.ConnectionHandler._connect_attempt",
    "kazoo.protocol.connection.ConnectionHandler._send_request",
    "kazoo.protocol.connection.ConnectionHandler._read_socket",
    "kazoo.protocol.connection.ConnectionHandler._read_header",
    "kazoo.protocol.connection.ConnectionHandler._read",
    "kazoo.protocol.connection.ConnectionHandler._read_watch_event",
    # ... and what they use.
    "kazoo.protocol.connection.ConnectionHandler._write",
    "kazoo.protocol.connection.ConnectionHandler._socket_error_handling",
    "kazoo.protocol.connection.ConnectionHandler._xid",
    "kazoo.protocol.connection.ConnectionHandler._socket",
    "kazoo.protocol.connection.ConnectionHandler._read_sock",
    "kazoo.protocol.connection._SESSION_EXPIRED",
    "kazoo.protocol.connection._CONNECTION_DROP",
    "kazoo.client.KazooClient._queue",
    "kazoo.client.KazooClient._pending",
    "kazoo.client.KazooClient._stopped",
    "kazoo.client.KazooClient._state",
    # client.py: the connection it replaces, the raw send.
    "kazoo.client.KazooClient._connection",
    "kazoo.client.KazooClient._call",
    "kazoo.client.KazooClient._session_timeout",   # the timeout asked for, until negotiated
]
