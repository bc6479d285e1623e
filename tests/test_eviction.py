"""Making room (eviction.py), the pure decision: which unused ready nodes to delete so a
waiting request of another label fits. Plain data, no clock of its own."""

from __future__ import annotations

import math

from nodepool.drivers.adapter import Resources
from nodepool.launcher.eviction import Limit, Unused, nodes_to_delete, still_evicted
from nodepool.model import Node, NodeState

ONE = Resources(instances=1, cores=2, ram=2048)
BIG = Resources(instances=1, cores=8, ram=8192)
SERVERS_2 = Resources(instances=2, cores=math.inf, ram=math.inf, volumes=math.inf,
                      volume_gb=math.inf)


def unused(node_id: str, since: float, cost: Resources = ONE, label: str = "small") -> Unused:
    return Unused(node_id, label, cost, since)


def test_the_oldest_unused_node_goes_when_one_deletion_makes_the_request_fit() -> None:
    pool = Limit(used=ONE.scaled(2), limit=SERVERS_2)
    spares = [unused("0002", since=200.0), unused("0001", since=100.0)]
    assert [n.node_id for n in nodes_to_delete(ONE, [pool], spares)] == ["0001"]


def test_as_many_as_the_request_needs_and_no_more() -> None:
    pool = Limit(used=ONE.scaled(3), limit=dataclass_limit(instances=3))
    spares = [unused("a", 3.0), unused("b", 1.0), unused("c", 2.0)]
    assert [n.node_id for n in nodes_to_delete(ONE.scaled(2), [pool], spares)] == ["b", "c"]


def test_nothing_is_deleted_when_the_request_would_not_fit_anyway() -> None:
    # Two servers: one in use, one unused spare; a request for two cannot fit even
    # with the spare gone (min-ready would only launch it again).
    pool = Limit(used=ONE.scaled(2), limit=SERVERS_2)
    assert nodes_to_delete(ONE.scaled(2), [pool], [unused("spare", 1.0)]) == []


def test_nothing_is_deleted_when_deletions_under_way_make_room_already() -> None:
    # What the deletions under way free is taken off `used` by the caller: it fits.
    pool = Limit(used=ONE, limit=SERVERS_2)
    assert nodes_to_delete(ONE, [pool], [unused("spare", 1.0)]) == []


def test_every_limit_must_fit_after_the_deletions() -> None:
    # The pool has room for one more server, the cloud's cores do not: a small spare
    # frees too few cores for a big node, so two go.
    pool = Limit(used=ONE.scaled(2), limit=dataclass_limit(instances=10))
    cloud = Limit(used=ONE.scaled(2), limit=dataclass_limit(instances=10, cores=8))
    spares = [unused("s1", 1.0), unused("s2", 2.0)]
    assert [n.node_id for n in nodes_to_delete(BIG, [pool, cloud], spares)] == ["s1", "s2"]
    assert nodes_to_delete(BIG, [pool, cloud], spares[:1]) == []


def test_no_unused_nodes_means_nothing_to_delete() -> None:
    pool = Limit(used=ONE.scaled(2), limit=SERVERS_2)
    assert nodes_to_delete(ONE, [pool], []) == []


def dataclass_limit(instances: float = math.inf, cores: float = math.inf) -> Resources:
    return Resources(instances=instances, cores=cores, ram=math.inf, volumes=math.inf,
                     volume_gb=math.inf)


def test_a_node_evicted_stays_counted_as_freed_until_the_index_no_longer_counts_it() -> None:
    counted = {"gone", "claimed", "deleting", "busy"}
    cached = {"claimed": Node(id="claimed", state=NodeState.IN_USE),
              "deleting": Node(id="deleting", state=NodeState.DELETING)}
    evicted = {"gone", "claimed", "deleting", "busy", "forgotten"}
    kept = still_evicted(evicted, {"busy"}, counted.__contains__, cached.get)
    # "gone": removed from the cache, still in the index (until the next pass takes it
    # in): what it frees is still to come. "forgotten": the index counts it no more.
    assert kept == {"gone", "deleting", "busy"}
