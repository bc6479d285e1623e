"""Several queued requests per turn of kazoo's connection loop (nodepool/zk/kazooext/connection.py)."""

import threading

from kazoo.exceptions import NoNodeError
from zkhelpers import make_client


def test_pipelined_requests_from_many_threads_are_answered_in_order(zk_tls):
    client = make_client(zk_tls)
    kazoo = client.kazoo
    turns, read_turns = [], []
    send = kazoo._connection._send_request
    read = kazoo._connection._read_socket

    def counting(*args):
        turns.append(len(kazoo._queue))
        return send(*args)

    def counting_reads(*args):
        read_turns.append(1)
        return read(*args)
    kazoo._connection._send_request = counting
    kazoo._connection._read_socket = counting_reads
    try:
        kazoo.ensure_path("/b")
        errors = []

        def burst(t: int) -> None:
            try:
                made = [kazoo.create_async(f"/b/t{t}-", str(i).encode(), sequence=True)
                        for i in range(200)]
                paths = [r.get(10) for r in made]
                assert sorted(paths) == paths          # sequence numbers in send order
                got = [kazoo.get_async(p) for p in paths]
                assert [g.get(10)[0] for g in got] == [str(i).encode() for i in range(200)]
                assert isinstance(_failure(kazoo, "/b/none"), NoNodeError)
            except Exception as e:     # reported by the main thread
                errors.append(e)
        threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert errors == []
        assert len(kazoo.get_children("/b")) == 800
        # Requests went out, and answers were handled, several per turn.
        sent = 1600 + 4 + 2     # creates, gets, failed gets, ensure_path
        assert len(turns) < sent / 2, (len(turns), sent)
        assert len(read_turns) < sent, (len(read_turns), sent)
    finally:
        client.disconnect()


def _failure(kazoo, path):
    result = kazoo.get_async(path)
    try:
        result.get(10)
    except Exception as e:
        return e
    return None
