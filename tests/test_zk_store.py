"""The ZooKeeper store against a real ZooKeeper over TLS: the rules PROTOCOL.md puts on it."""

import json
import threading
import time

import pytest
from kazoo.exceptions import ConnectionLoss
from kazoo.recipe.lock import Lock
from zkhelpers import expire_session, make_client

from nodepool.errors import LockFailed, NotFound, VersionConflict
from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import components, locks, nodes, paths, requests


def test_node_ids_are_ten_digit_sequences(zk):
    first = nodes.create_node(zk.kazoo, Node(type=["a"]))
    second = nodes.create_node(zk.kazoo, Node(type=["a"]))
    assert len(first.id) == 10 and first.id.isdigit()
    assert int(second.id) == int(first.id) + 1


def test_node_written_by_us_carries_every_key_in_zookeeper(zk):
    node = nodes.create_node(zk.kazoo, Node(type=["a"], provider="p"))
    raw, _ = zk.kazoo.get(paths.node(node.id))
    data = json.loads(raw)
    for key in ("state", "state_time", "type", "allocated_to", "host_keys", "python_path",
                "connection_port", "ssh_port", "driver_data", "hold_expiration", "attributes"):
        assert key in data, key


def test_unknown_node_keys_written_by_zuul_survive_our_update(zk, zk_client):
    node = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
    raw, _ = zk_client.get(paths.node(node.id))
    zuul = json.loads(raw)
    zuul.update(state="in-use", id=node.id, zuul_only={"x": 1}, user_data={"job": "j"})
    zk_client.set(paths.node(node.id), json.dumps(zuul).encode())
    ours = nodes.get_node(zk.kazoo, node.id)
    ours.set_state(NodeState.USED)
    nodes.update_node(zk.kazoo, ours)
    final = json.loads(zk_client.get(paths.node(node.id))[0])
    assert final["zuul_only"] == {"x": 1} and final["id"] == node.id
    assert final["user_data"] == {"job": "j"} and final["state"] == "used"


def test_node_update_is_version_checked(zk, zk_client):
    node = nodes.create_node(zk.kazoo, Node(type=["a"]))
    zk_client.set(paths.node(node.id), Node(type=["b"]).to_json())
    node.provider = "late"
    with pytest.raises(VersionConflict):
        nodes.update_node(zk.kazoo, node)
    assert nodes.get_node(zk.kazoo, node.id).type == ["b"]


def test_two_clients_cannot_both_hold_a_node_lock(zk, zk_client):
    node = nodes.create_node(zk.kazoo, Node(type=["a"]))
    # The other side uses kazoo's plain Lock recipe, exactly as Zuul does.
    theirs = Lock(zk_client, paths.node_lock(node.id))
    assert theirs.acquire(blocking=False)
    with pytest.raises(LockFailed, match=f"node {node.id} is locked"):
        locks.lock_node(zk.kazoo, node.id)
    assert len(locks.node_lock_contenders(zk.kazoo, node.id)) == 1
    theirs.release()
    ours = locks.lock_node(zk.kazoo, node.id)
    assert not Lock(zk_client, paths.node_lock(node.id)).acquire(blocking=False)
    locks.release(ours)
    assert locks.node_lock_contenders(zk.kazoo, node.id) == []


def test_new_node_lock_is_the_kazoo_recipe_lock(zk, zk_client):
    node = nodes.create_node(zk.kazoo, Node(type=["a"]))
    ours = locks.lock_new_node(zk.kazoo, node.id, identifier="nl01:fake")
    (contender,) = locks.node_lock_contenders(zk.kazoo, node.id)
    assert locks.is_contender(contender)
    assert zk_client.get(f"{paths.node_lock(node.id)}/{contender}")[0] == b"nl01:fake"
    assert not Lock(zk_client, paths.node_lock(node.id)).acquire(blocking=False)
    locks.release(ours)
    # Not new after all (someone holds its lock): refused like lock_node.
    theirs = Lock(zk_client, paths.node_lock(node.id))
    assert theirs.acquire(blocking=False)
    with pytest.raises(LockFailed):
        locks.lock_new_node(zk.kazoo, node.id)
    theirs.release()
    nodes.delete_node(zk.kazoo, node.id)
    with pytest.raises(NotFound):
        locks.lock_new_node(zk.kazoo, node.id)
    assert zk.kazoo.exists(paths.node(node.id)) is None


def test_locking_a_deleted_node_does_not_resurrect_it(zk):
    node = nodes.create_node(zk.kazoo, Node(type=["a"]))
    nodes.delete_node(zk.kazoo, node.id)
    with pytest.raises(NotFound):
        locks.lock_node(zk.kazoo, node.id)
    assert zk.kazoo.exists(paths.node(node.id)) is None


def test_delete_node_removes_it_with_its_held_lock(zk):
    node = nodes.create_node(zk.kazoo, Node(type=["a"]))
    lock = locks.lock_node(zk.kazoo, node.id)
    nodes.delete_node(zk.kazoo, node.id)
    assert zk.kazoo.exists(paths.node(node.id)) is None
    locks.release(lock)  # our contender went with the node: releasing is still fine
    nodes.delete_node(zk.kazoo, node.id)  # deleting what is gone is success


def test_requests_are_sequential_under_their_priority_prefix(zk):
    a = requests.submit_request(zk.kazoo, NodeRequest(node_types=["x"], requestor="t"), 200)
    b = requests.submit_request(zk.kazoo, NodeRequest(node_types=["x"], requestor="t"), 100)
    assert a.id.startswith("200-") and b.id.startswith("100-")
    # The sequence counter belongs to the parent: global across priorities.
    assert b.sequence == a.sequence + 1
    assert [r.id for r in requests.get_requests(zk.kazoo)] == [b.id, a.id]


def test_deleted_request_is_reported_as_cancelled(zk, zk_client):
    req = requests.submit_request(zk.kazoo, NodeRequest(node_types=["x"], requestor="t"))
    lock = locks.lock_request(zk.kazoo, req.id)
    current = requests.get_request(zk.kazoo, req.id)
    zk_client.delete(paths.request(req.id))  # the requestor cancels while we hold the lock
    current.set_state(RequestState.PENDING)
    with pytest.raises(NotFound, match="cancelled"):
        requests.update_request(zk.kazoo, current)
    assert requests.get_request(zk.kazoo, req.id) is None
    locks.release(lock)


def test_request_write_keeps_unknown_keys_and_checks_version(zk, zk_client):
    body = {"state": "requested", "state_time": 1.0, "node_types": ["x"], "requestor": "zuul",
            "requestor_data": {"k": "v"}, "provider": None, "event_id": "e", "future": 1}
    path = zk_client.create(paths.request_prefix(100), json.dumps(body).encode(),
                              sequence=True, makepath=True)
    rid = paths.basename(path)
    req = requests.get_request(zk.kazoo, rid)
    # The requestor revises relative_priority meanwhile: our stale write must fail.
    body["relative_priority"] = 2
    zk_client.set(path, json.dumps(body).encode())
    req.set_state(RequestState.PENDING)
    with pytest.raises(VersionConflict):
        requests.update_request(zk.kazoo, req)
    req = requests.get_request(zk.kazoo, rid)
    req.set_state(RequestState.PENDING)
    requests.update_request(zk.kazoo, req)
    final = json.loads(zk_client.get(path)[0])
    assert final["future"] == 1 and final["relative_priority"] == 2
    assert final["state"] == "pending" and final["requestor_data"] == {"k": "v"}


def test_request_lock_lives_in_its_own_tree_and_excludes_others(zk, zk_client):
    req = requests.submit_request(zk.kazoo, NodeRequest(node_types=["x"], requestor="t"))
    lock = locks.lock_request(zk.kazoo, req.id)
    assert zk.kazoo.exists(paths.request_lock(req.id)) is not None
    assert not Lock(zk_client, paths.request_lock(req.id)).acquire(blocking=False)
    locks.release(lock)


def test_stale_request_lock_dirs_are_collected_after_grace(zk):
    req = requests.submit_request(zk.kazoo, NodeRequest(node_types=["x"], requestor="t"))
    locks.release(locks.lock_request(zk.kazoo, req.id))
    requests.delete_request(zk.kazoo, req.id)
    assert requests.delete_stale_request_locks(zk.kazoo, older_than=3600) == []
    later = time.time() + 7200
    assert requests.delete_stale_request_locks(zk.kazoo, older_than=3600, now=later) == [req.id]
    assert zk.kazoo.exists(paths.request_lock(req.id)) is None


def test_components_register_and_update(zk, zk_client):
    registry = components.ComponentRegistry(zk, hostname="nl01")
    registry.register_launcher()
    pool = registry.register_pool("nl01-PoolWorker.p-main-ab12", "p", "main", ["b", "a"])
    pool.update(paused=True)
    pools = components.list_components(zk, components.POOL)
    assert len(pools) == 1
    assert pools[0]["supported_labels"] == ["a", "b"] and pools[0]["paused"] is True
    assert pools[0]["provider_name"] == "p" and pools[0]["priority"] == 100
    (launcher,) = components.list_components(zk, components.LAUNCHER)
    assert launcher["kind"] == "launcher" and launcher["state"] == "running"
    assert launcher["model_api"] == 0 and launcher["_name"].startswith("nl01")
    # Ephemeral: they vanish with the session.
    registry.close()
    assert zk_client.get_children(paths.components(components.POOL)) == []


def test_a_component_update_lost_with_the_connection_is_sent_again(zk, zk_client):
    registry = components.ComponentRegistry(zk, hostname="nl01")
    pool = registry.register_pool("nl01-PoolWorker.p-main-cd34", "p", "main", ["a"])
    pool.update(paused=True)
    # The write's answer was lost with the connection, and the write with it.
    lost = zk.kazoo.handler.async_result()
    lost.set_exception(ConnectionLoss())
    pool._written(pool.path, lost)
    zk_client.set(pool.path, json.dumps({**pool.data, "paused": False}).encode())
    pool.update(paused=True)    # unchanged, but not known to be written: sent again
    (found,) = components.list_components(zk, components.POOL)
    assert found["paused"] is True
    registry.close()


def test_components_are_re_registered_after_a_lost_session(zk_tls, zk_client):
    zk = make_client(zk_tls)
    try:
        registry = components.ComponentRegistry(zk, hostname="nl02")
        registry.register_launcher()
        registry.register_pool("pid", "p", "main", ["a"])
        back = threading.Event()
        zk.add_listener(lambda s: s == "NEW_SESSION" and back.set())
        expire_session(zk_tls, zk.kazoo)
        assert back.wait(30), "no new session"
        deadline = time.time() + 10
        while time.time() < deadline:
            kinds = {c["kind"] for k in ("launcher", "pool")
                     for c in components.list_components(zk, k)}
            if kinds == {"launcher", "pool"}:
                break
            time.sleep(0.02)
        assert kinds == {"launcher", "pool"}
    finally:
        zk.disconnect()
