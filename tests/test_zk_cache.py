"""The watch-driven cache: changes by anyone reach subscribers without polling."""

import queue
import time

import pytest
from kazoo.recipe.lock import Lock
from requestor import wait_for
from zkhelpers import make_client

from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, nodes, paths, requests


@pytest.fixture
def cache(zk):
    c = zkcache.ZooKeeperCache(zk)
    events: queue.Queue = queue.Queue()
    c.subscribe(events.put)
    c.start()
    c.events = events
    yield c
    c.stop()


def wait_event(events: queue.Queue, pred, timeout: float = 5.0):
    """The first event matching `pred` within `timeout` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("expected cache event did not arrive")
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            continue
        if pred(event):
            return event


def test_cache_loads_existing_nodes_and_requests(zk):
    n = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
    r = requests.submit_request(zk.kazoo, NodeRequest(node_types=["a"], requestor="t"))
    c = zkcache.ZooKeeperCache(zk)
    c.start()
    try:
        assert c.get_node(n.id).state == NodeState.READY
        assert c.get_request(r.id).node_types == ["a"]
    finally:
        c.stop()


def test_new_request_from_another_client_reaches_subscribers(cache, zk_client):
    req = NodeRequest(node_types=["a"], requestor="zuul")
    requests.submit_request(zk_client, req, 100)
    event = wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.id == req.id)
    assert event.value.requestor == "zuul"
    assert [r.id for r in cache.requests()] == [req.id]


def test_cancelled_request_is_seen_as_removed(cache, zk_client):
    req = requests.submit_request(zk_client, NodeRequest(node_types=["a"], requestor="z"))
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.value is not None)
    requests.delete_request(zk_client, req.id)
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.value is None)
    assert cache.get_request(req.id) is None


def test_node_updates_and_lock_state_are_tracked(cache, zk, zk_client):
    node = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.id == node.id)
    lock = Lock(zk_client, paths.node_lock(node.id))  # Zuul locks it
    lock.acquire()
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE_LOCK and e.id == node.id
               and e.locked)
    assert cache.is_node_locked(node.id)
    fresh = nodes.get_node(zk_client, node.id)
    fresh.set_state(NodeState.IN_USE)
    nodes.update_node(zk_client, fresh)
    ev = wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.value is not None
                    and e.value.state == NodeState.IN_USE)
    assert ev.value.version == fresh.version
    lock.release()
    ev = wait_event(cache.events, lambda e: e.kind == zkcache.NODE_LOCK and not e.locked)
    assert not cache.is_node_locked(node.id)


def test_the_cache_knows_which_nodes_were_ever_locked(cache, zk, zk_client, zk_tls):
    """Whether a node's lock dir exists (it chooses the kind of lock the launcher
    sends): from the first listing and from the dir's own events."""
    before = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
    zk_client.create(paths.node_lock(before.id))
    other = make_client(zk_tls)    # a cache of its own client: routes are per client
    listed = zkcache.ZooKeeperCache(other)
    listed.start()
    try:
        assert listed.has_node_lock_dir(before.id)
    finally:
        listed.stop()
        other.disconnect()
    node = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.id == node.id)
    assert not cache.has_node_lock_dir(node.id)
    lock = Lock(zk_client, paths.node_lock(node.id))   # Zuul's recipe makes the dir
    lock.acquire()
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE_LOCK and e.id == node.id)
    assert cache.has_node_lock_dir(node.id)
    lock.release()
    zk_client.delete(paths.node_lock(node.id))
    wait_for(lambda: not cache.has_node_lock_dir(node.id), what="the lock dir's deletion")


def test_deleted_node_leaves_the_cache(cache, zk):
    node = nodes.create_node(zk.kazoo, Node(type=["a"]))
    lock = locks.lock_node(zk.kazoo, node.id)
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE_LOCK and e.locked)
    nodes.delete_node(zk.kazoo, node.id)
    locks.release(lock)
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.value is None)
    assert cache.get_node(node.id) is None and not cache.is_node_locked(node.id)
    assert cache.nodes() == []


def test_nodes_are_found_by_the_request_they_are_allocated_to(cache, zk, zk_client):
    a = nodes.create_node(zk.kazoo, Node(type=["a"], allocated_to="200-0000000001"))
    b = nodes.create_node(zk.kazoo, Node(type=["a"], allocated_to="200-0000000001"))
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.id == b.id)
    assert sorted(n.id for n in cache.allocated_nodes("200-0000000001")) == [a.id, b.id]
    moved = nodes.get_node(zk_client, a.id)   # another client reallocates one
    moved.allocated_to = "200-0000000002"
    nodes.update_node(zk_client, moved)
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.id == a.id
               and e.value.allocated_to == "200-0000000002")
    assert [n.id for n in cache.allocated_nodes("200-0000000001")] == [b.id]
    assert [n.id for n in cache.allocated_nodes("200-0000000002")] == [a.id]
    nodes.delete_node(zk.kazoo, b.id)
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.id == b.id and e.value is None)
    assert cache.allocated_nodes("200-0000000001") == []


def test_lock_state_converges_after_many_quick_lock_cycles(cache, zk, zk_client):
    """Contenders that come and go within a round trip must not leave a node 'locked'."""
    from requestor import wait_for
    ids = [nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY)).id
           for _ in range(20)]
    wait_for(lambda: all(cache.get_node(i) for i in ids), what="nodes cached")
    for _ in range(15):
        held = [Lock(zk_client, paths.node_lock(i)) for i in ids]
        for lock in held:
            lock.acquire()
        for lock in held:
            lock.release()
    wait_for(lambda: not any(cache.is_node_locked(i) for i in ids), timeout=10,
             what="every node seen unlocked")


def test_own_transaction_is_cached_from_its_answer(cache, zk):
    node = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
    wait_event(cache.events, lambda e: e.kind == zkcache.NODE and e.id == node.id)
    req = requests.submit_request(zk.kazoo, NodeRequest(node_types=["a"]), 100)
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.id == req.id)
    watches = cache._watches[:2]
    reads = []
    for watch in watches:
        watch._expect_data = lambda name, read=watch._expect_data: (reads.append(name), read(name))
    node.allocated_to = req.id
    req.nodes = [node.id]
    req.state = RequestState.FULFILLED
    tx = zk.kazoo.transaction()
    tx.set_data(paths.node(node.id), node.to_json(), node.version)
    tx.set_data(paths.request(req.id), req.to_json(), req.version)
    result = cache.commit_own(tx, [(zkcache.NODE, node.id, node.to_json(), 0),
                                   (zkcache.REQUEST, req.id, req.to_json(), 1)])
    assert not any(isinstance(r, Exception) for r in result.get(5))
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.value is not None
               and e.value.state == RequestState.FULFILLED)
    assert cache.get_node(node.id).allocated_to == req.id
    assert cache.get_node(node.id).version == node.version + 1
    assert reads == []
    # A transaction that fails changes nothing and reads nothing.
    tx = zk.kazoo.transaction()
    tx.set_data(paths.node(node.id), b"{}", 0)    # stale version
    failed = cache.commit_own(tx, [(zkcache.NODE, node.id, b"{}", 0)])
    assert isinstance(failed.get(5)[0], Exception)
    assert cache.get_node(node.id).allocated_to == req.id and reads == []


def test_requests_stay_in_service_order_as_they_change(cache, zk, zk_client):
    made = [requests.submit_request(zk.kazoo, NodeRequest(node_types=["a"]), prio)
            for prio in (300, 100, 200, 100)]
    ids = {r.id for r in made}
    wait_for(lambda: {r.id for r in cache.requests()} == ids, what="four requests cached")
    assert [r.id for r in cache.requests()] == [made[1].id, made[3].id, made[2].id, made[0].id]
    # Zuul lowers the relative priority of the first 100- request: it moves behind the other.
    first = requests.get_request(zk_client, made[1].id)
    first.relative_priority = 5
    requests.update_request(zk_client, first)
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.id == first.id
               and e.value is not None and e.value.relative_priority == 5)
    assert [r.id for r in cache.requests()] == [made[3].id, made[1].id, made[2].id, made[0].id]
    zk_client.delete(paths.request(made[2].id))
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.id == made[2].id
               and e.value is None)
    assert [r.id for r in cache.requests()] == [made[3].id, made[1].id, made[0].id]
    assert len(cache._order) == 3


def test_settled_request_is_a_copy_and_unsettled_while_a_change_is_in_flight(cache, zk, zk_client):
    """What the launcher takes instead of a re-read under the request lock."""
    req = requests.submit_request(zk_client, NodeRequest(node_types=["a"], requestor="z"))
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.value is not None)
    lock = locks.lock_request(zk.kazoo, req.id, identifier="test")
    settled, copy = cache.settled_request(req.id)
    assert settled and copy.node_types == ["a"] and copy.version == 0
    copy.node_types.append("b")
    copy.set_state(RequestState.PENDING)
    assert cache.get_request(req.id).node_types == ["a"]       # the cache's own is untouched
    assert cache.get_request(req.id).state == RequestState.REQUESTED
    requests_watch = cache._watches[1]
    requests_watch.begin_own(req.id)                            # a write of ours in flight
    assert cache.settled_request(req.id) == (False, None)
    requests_watch.end_own(req.id, b"", None)                   # it failed: nothing written
    assert cache.settled_request(req.id)[0]
    locks.release(lock)
    requests.delete_request(zk_client, req.id)
    wait_event(cache.events, lambda e: e.kind == zkcache.REQUEST and e.value is None)
    assert cache.settled_request(req.id) == (True, None)
