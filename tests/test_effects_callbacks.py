"""Every completion callback of a worker's ZooKeeper writes runs once, however fast the answer.

kazoo 2.11's `rawlink` on a result that is already set queues every callback
linked so far once more. A write whose answer came back before the sender
linked its own callback ran the cache's own-write accounting twice (a
KeyError in TreeWatch.end_own on the callback thread). Here every write waits
for its answer inside the send, the worst case of that race, and each
callback must still run exactly once.
"""

from __future__ import annotations

import collections
import threading

import pytest
from requestor import wait_for

from nodepool.launcher.effects import ZkEffects
from nodepool.model import Node, NodeState
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, nodes
from nodepool.zk.treewatch import TreeWatch


def test_kazoo_rawlink_after_completion_runs_earlier_callbacks_again(zk) -> None:
    """The kazoo behaviour behind the rule "attach callbacks before sending"."""
    calls: list[str] = []
    done = threading.Event()
    result = zk.kazoo.exists_async("/")
    result.rawlink(lambda _: calls.append("first"))
    result.get(timeout=5)
    result.rawlink(lambda _: (calls.append("second"), done.set()))
    done.wait(5)
    wait_for(lambda: "second" in calls, timeout=5, what="the late callback")
    assert calls == ["first", "first", "second"]


@pytest.fixture
def instant(zk, monkeypatch):
    """Call it to make the test thread's sends return only once answered (the answer
    always wins the race). Only the test thread's: a send from a callback (on the
    reader thread, or inline on ours, as the cache's start runs its first listing)
    must not wait, or no answer would ever be read."""
    send = zk.kazoo.send_request
    test_thread = threading.current_thread()

    def answered_before_return(request, async_result):
        sent = send(request, async_result)
        if threading.current_thread() is test_thread:
            async_result.wait(10)
        return sent
    return lambda: monkeypatch.setattr(zk.kazoo, "send_request", answered_before_return)


@pytest.fixture
def counted(monkeypatch) -> collections.Counter:
    """How often the cache's own-write accounting ran, by node id."""
    seen: collections.Counter = collections.Counter()
    end_own = TreeWatch.end_own

    def counting(self, name, data, stat):
        seen[name] += 1
        return end_own(self, name, data, stat)
    monkeypatch.setattr(TreeWatch, "end_own", counting)
    return seen


def test_each_write_kind_runs_its_callbacks_once(zk, instant, counted) -> None:
    cache = zkcache.ZooKeeperCache(zk)
    cache.start()
    instant()
    wakes = collections.Counter()
    effects = ZkEffects(cache, lambda: zk.kazoo, "tester", lambda: wakes.update(["wake"]))
    try:
        created = effects.create_node_async(Node(type=["a"], state=NodeState.BUILDING))
        node_id = created.get(5)[0].rsplit("/", 1)[1]
        node = wait_for(lambda: cache.get_node(node_id), timeout=5, what="the created node")

        node.state = NodeState.READY
        effects.write_node_async(node).get(5)
        wait_for(lambda: counted[node_id] == 1, timeout=5, what="the write's accounting")

        lock = locks.lock_node(zk.kazoo, node_id, identifier="tester")
        node.state = NodeState.USED
        assert effects.write_and_unlock_async(node, lock) is None
        wait_for(lambda: counted[node_id] == 2 and not cache.is_node_locked(node_id),
                 timeout=5, what="the transaction's accounting and the unlock")

        failures = []
        lock = locks.lock_node(zk.kazoo, node_id, identifier="tester")
        effects.remove_node_async(node, lock, lambda: failures.append(node_id))
        wait_for(lambda: cache.get_node(node_id) is None, timeout=5, what="the removal")
        wait_for(lambda: counted[node_id] == 3, timeout=5, what="the removal's accounting")
        assert nodes.list_node_ids(zk.kazoo) == [] and failures == []
        # One wake per answered create and write: nothing queued a second time.
        wait_for(lambda: wakes["wake"] == 2, timeout=5, what="the wakes")
        assert counted == {node_id: 3}
    finally:
        cache.stop()
