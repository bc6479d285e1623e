"""The launcher's one-request node lock (locks.start_lock) against kazoo's own `Lock`
recipe, as Zuul takes node locks: they exclude each other both ways. Real ZooKeeper;
the launcher's client and a separate plain kazoo session (the requestor)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock
from requestor import wait_for

from nodepool.launcher.effects import ZkEffects
from nodepool.model import Node, NodeState
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, nodes, paths

NODE = "0000000042"


@pytest.fixture
def node(zk, zk_client):
    """A node whose lock dir exists and is empty (locked once, then unlocked)."""
    zk_client.create(paths.node(NODE), b"{}", makepath=True)
    zk_client.create(paths.node_lock(NODE))
    return paths.node_lock(NODE)


def take(zk) -> Lock | None:
    return locks.settle(zk.kazoo, locks.start_lock(zk.kazoo, paths.node_lock(NODE), "nl"))


def test_an_empty_lock_dir_is_taken_in_one_request_and_excludes_kazoos_recipe(
        zk, zk_client, node):
    lock = take(zk)
    assert lock is not None and lock.is_acquired
    (contender,) = zk_client.get_children(node)
    assert locks.is_contender(contender) and contender == lock.node
    zuul = Lock(zk_client, node, "zuul")
    assert not zuul.acquire(blocking=False)
    assert zk_client.get_children(node) == [contender]   # kazoo withdrew its contender
    # Zuul waits behind us (its contender is later in the new dir) and gets it on release.
    got = threading.Event()
    waiter = threading.Thread(target=lambda: zuul.acquire(timeout=10) and got.set())
    waiter.start()
    wait_for(lambda: len(zk_client.get_children(node)) == 2, what="Zuul's contender")
    assert not got.is_set()
    locks.release(lock)
    waiter.join(10)
    assert got.is_set()
    zuul.release()


def test_a_lock_held_by_kazoos_recipe_is_not_taken_and_nothing_is_left(zk, zk_client, node):
    zuul = Lock(zk_client, node, "zuul")
    assert zuul.acquire(blocking=False)
    before = zk_client.get_children(node)
    assert take(zk) is None
    assert zk_client.get_children(node) == before      # no contender of ours to clean up
    zuul.release()
    assert take(zk) is not None


def test_a_waiting_contender_keeps_the_lock_from_us(zk, zk_client, node):
    zk_client.create(f"{node}/{'ab' * 16}__lock__", b"zuul", ephemeral=True, sequence=True)
    assert take(zk) is None


def test_a_missing_lock_dir_raises_nonode_and_the_fallback_locks_fresh(zk, zk_client):
    zk_client.create(paths.node(NODE), b"{}", makepath=True)
    with pytest.raises(NoNodeError):
        take(zk)
    attempt = locks.start_lock(zk.kazoo, paths.node_lock(NODE), "nl")
    lock = locks.settle_node_lock(zk.kazoo, attempt, NODE, "nl")
    assert lock is not None and zk_client.get_children(paths.node_lock(NODE)) == [lock.node]


def test_a_deleted_node_is_not_locked_and_not_made_again(zk, zk_client):
    attempt = locks.start_lock(zk.kazoo, paths.node_lock(NODE), "nl")
    assert locks.settle_node_lock(zk.kazoo, attempt, NODE, "nl") is None
    assert zk_client.exists(paths.node(NODE)) is None


def test_a_fresh_lock_of_a_node_locked_before_falls_back_and_locks_it(zk, zk_client, node):
    """The cache said never locked, but the dir exists: the general way takes it."""
    attempt = locks.start_node_lock(zk.kazoo, NODE, "nl", fresh=True)
    lock = locks.settle_node_lock(zk.kazoo, attempt, NODE, "nl")
    assert lock is not None and zk_client.get_children(node) == [lock.node]
    zuul = Lock(zk_client, node, "zuul")
    assert not zuul.acquire(blocking=False)


@pytest.fixture
def effects(zk):
    cache = zkcache.ZooKeeperCache(zk)
    cache.start()
    yield ZkEffects(cache, lambda: zk.kazoo, "nl", lambda: None)
    cache.stop()


def used_node(effects, zk_client, locked_before: bool) -> Node:
    """A `used` node the requestor has unlocked, as the launcher's cache shows it."""
    node = nodes.create_node(zk_client, Node(type=["a"], state=NodeState.USED))
    if locked_before:
        zk_client.create(paths.node_lock(node.id))
    return wait_for(lambda: effects.cache.get_node(node.id), what="the node cached")


@pytest.mark.parametrize("locked_before", [True, False])
def test_a_deletion_locks_and_writes_deleting_in_one_transaction(effects, zk_client,
                                                                 locked_before):
    seen = used_node(effects, zk_client, locked_before)
    wait_for(lambda: effects.cache.has_node_lock_dir(seen.id) == locked_before,
             what="the lock dir as the cache sees it")
    deleting = dataclasses.replace(seen, state=NodeState.DELETING)
    attempt = effects.lock_and_write_async(deleting, seen.version)
    lock, stat = effects.settle_lock_and_write(attempt, seen.id)
    assert lock is not None and stat is not None
    assert zk_client.get_children(paths.node_lock(seen.id)) == [lock.node]
    assert nodes.get_node(zk_client, seen.id).state == NodeState.DELETING
    assert not Lock(zk_client, paths.node_lock(seen.id), "zuul").acquire(blocking=False)


def test_a_node_changed_since_the_cache_saw_it_is_neither_locked_nor_written(
        effects, zk_client):
    seen = used_node(effects, zk_client, locked_before=True)
    held = nodes.get_node(zk_client, seen.id)
    held.state = NodeState.HOLD             # the requestor set it `hold` and unlocked
    nodes.update_node(zk_client, held)
    deleting = dataclasses.replace(seen, state=NodeState.DELETING)
    attempt = effects.lock_and_write_async(deleting, seen.version)
    assert effects.settle_lock_and_write(attempt, seen.id) == (None, None)
    assert zk_client.get_children(paths.node_lock(seen.id)) == []
    assert nodes.get_node(zk_client, seen.id).state == NodeState.HOLD


def test_a_node_someone_holds_is_neither_locked_nor_written(effects, zk_client):
    seen = used_node(effects, zk_client, locked_before=True)
    zuul = Lock(zk_client, paths.node_lock(seen.id), "zuul")
    assert zuul.acquire(blocking=False)
    deleting = dataclasses.replace(seen, state=NodeState.DELETING)
    attempt = effects.lock_and_write_async(deleting, seen.version)
    assert effects.settle_lock_and_write(attempt, seen.id) == (None, None)
    assert len(zk_client.get_children(paths.node_lock(seen.id))) == 1
    assert nodes.get_node(zk_client, seen.id).state == NodeState.USED
