"""The flat watch behind the request cache: every child and change seen once, sessions survived."""

import queue
import threading

from kazoo.client import KazooClient

from nodepool.zk.flatwatch import FlatWatch
from requestor import wait_for
from zkhelpers import expire_session


def watch(kazoo: KazooClient, path: str = "/q"):
    seen: queue.Queue = queue.Queue()
    state: dict[str, bytes] = {}
    lock = threading.Lock()

    def changed(name, data, stat):
        with lock:
            if data is None:
                state.pop(name, None)
            else:
                state[name] = data
        seen.put((name, data))

    fw = FlatWatch(kazoo, path, changed, accept=lambda n: not n.startswith("skip"))
    fw.start()
    assert fw.initialized.wait(10)
    return fw, state, seen


def test_existing_new_changed_and_deleted_children_are_reported(zk_client):
    zk_client.ensure_path("/q")
    zk_client.create("/q/a", b"1")
    zk_client.create("/q/skip-me", b"x")
    fw, state, _ = watch(zk_client)
    try:
        assert state == {"a": b"1"}
        zk_client.create("/q/b", b"2")
        zk_client.set("/q/a", b"1b")
        wait_for(lambda: state == {"a": b"1b", "b": b"2"}, what="create and change seen")
        zk_client.delete("/q/a")
        wait_for(lambda: state == {"b": b"2"}, what="delete seen")
        for i in range(5):   # repeated changes never stack duplicate watches
            zk_client.set("/q/b", str(i).encode())
        wait_for(lambda: state == {"b": b"4"}, what="last change seen")
    finally:
        fw.stop()


def test_many_rapid_children_are_all_seen(zk_client):
    zk_client.ensure_path("/q")
    fw, state, _ = watch(zk_client)
    try:
        for i in range(200):
            zk_client.create("/q/r-", str(i).encode(), sequence=True)
        wait_for(lambda: len(state) == 200, what="all 200 children")
        for name in list(state):
            zk_client.delete(f"/q/{name}")
        wait_for(lambda: not state, what="all deletions")
    finally:
        fw.stop()


def test_changes_made_while_the_session_was_lost_are_seen_after(zk_tls, zk_client):
    own = KazooClient(hosts=zk_tls["hosts"] + zk_tls["chroot"], use_ssl=True,
                      certfile=zk_tls["cert"], keyfile=zk_tls["key"], ca=zk_tls["ca"])
    own.start(timeout=10)
    try:
        zk_client.ensure_path("/q")
        zk_client.create("/q/old", b"1")
        fw, state, _ = watch(own)
        expire_session(zk_tls, own)
        zk_client.delete("/q/old")
        zk_client.create("/q/new", b"2")
        wait_for(lambda: state == {"new": b"2"}, timeout=20, what="resynced after a new session")
        zk_client.create("/q/newer", b"3")   # and watching again
        wait_for(lambda: state == {"new": b"2", "newer": b"3"}, what="watches restored")
        fw.stop()
    finally:
        own.stop()
        own.close()
