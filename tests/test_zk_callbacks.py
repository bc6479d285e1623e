"""Where kazoo callbacks run (nodepool/zk/kazooext/handler.py): ours (`Inline`) on the
reader thread as they are read, every other one on the worker thread, which may block."""

import threading

import pytest
from kazoo.protocol.states import Callback
from zkhelpers import make_client

from nodepool.zk.kazooext.handler import Inline

WAIT = 20


@pytest.fixture
def kazoo(zk_tls):
    client = make_client(zk_tls)
    yield client.kazoo
    client.kazoo._connection._write_sock.prime()   # a lost wake-up would also stall the close
    client.disconnect()


def test_a_recipe_watch_may_make_synchronous_calls(kazoo):
    # kazoo's DataWatch reads the node again, synchronously, from its watch callback:
    # on the reader thread that answer could never be read.
    kazoo.create("/flag", b"0")
    seen, changed = [], threading.Event()

    def watch(data, stat):
        seen.append(data)
        if data == b"2":
            changed.set()
    kazoo.DataWatch("/flag", watch)
    kazoo.set("/flag", b"1")
    kazoo.set("/flag", b"2")
    assert changed.wait(WAIT), seen
    assert seen[0] == b"0" and seen[-1] == b"2"
    # and a plain watch= runs on the worker thread, which may call back in
    where, answered = [], threading.Event()

    def plain(event):
        where.append(threading.current_thread())
        where.append(kazoo.get("/flag")[0])
        answered.set()
    kazoo.exists("/flag", watch=plain)
    kazoo.set("/flag", b"3")
    assert answered.wait(WAIT)
    assert where == [kazoo.handler._workers[0], b"3"]


def test_inline_callbacks_run_in_order_on_the_reader_and_may_send_many(kazoo):
    kazoo.ensure_path("/many")
    order, threads, made, done = [], set(), [], threading.Event()

    def answered(i):
        def callback(result):
            order.append(i)
            threads.add(threading.current_thread())
            if len(order) == 1000:
                done.set()
        return Inline(callback)

    def burst():
        # On the reader thread: far more requests than its wake-up socket
        # holds one-byte writes for (about 280); none may block it.
        # (set_async's answer sets its result on the reader; create_async's is
        # set by a callback of kazoo's own, on the worker)
        for i in range(1000):
            result = kazoo.set_async("/many", str(i).encode())
            result.rawlink(answered(i))
            made.append(result)
    kazoo.handler.dispatch_callback(Callback("watch", Inline(burst), ()))
    assert done.wait(WAIT), len(order)
    assert order == list(range(1000))
    reader = threads.pop()
    assert threads == set() and reader is not threading.current_thread()
    assert reader not in kazoo.handler._workers
    assert kazoo.get("/many")[0] == b"999"


def test_an_inline_callback_on_a_set_result_runs_on_the_callers_thread(kazoo):
    result = kazoo.exists_async("/")
    result.get(WAIT)
    ran = []
    result.rawlink(Inline(lambda r: ran.append((threading.current_thread(), r.get()))))
    assert ran == [(threading.current_thread(), result.get())]


def test_no_wake_up_is_lost_when_threads_send_as_the_loop_turns(kazoo):
    # Each call waits for its answer, so the queue empties again and again while
    # other threads queue: a wake-up byte lost between two turns would leave a
    # request unsent (the call would wait for ever; here: a failed get).
    errors = []

    def calls():
        try:
            for _ in range(1500):
                kazoo.exists_async("/").get(5)
        except Exception as e:   # reported by the main thread
            errors.append(e)
    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and not any(t.is_alive() for t in threads)


def test_requests_after_an_auth_are_sent(kazoo):
    # An auth goes through kazoo's own send, which reads one wake-up byte itself.
    kazoo.add_auth("digest", "user:secret")
    for _ in range(3):
        assert kazoo.exists_async("/").get(5) is not None
