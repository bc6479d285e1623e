"""Request decisions as pure functions: triage, declines and reuse of ready nodes (plain data)."""

from __future__ import annotations

import math

import pytest

from nodepool.launcher.planner import (
    PoolView,
    RegisteredPool,
    Triage,
    Verdict,
    between_owners,
    choose_nodes,
    every_pool_declined,
    is_reusable,
    launch_elsewhere,
    triage,
)
from nodepool.model import Node, NodeRequest, NodeState

NOW = 1_700_000_000.0

POOL = PoolView(id="host-PoolWorker.cloud-a-main-1", provider="cloud-a", name="main",
                labels=frozenset({"small", "large"}), max_servers=10)


def request(*labels: str, **kw) -> NodeRequest:
    kw.setdefault("id", "200-0000000001")
    return NodeRequest(node_types=list(labels), **kw)


def registered(pid: str, provider: str, labels=("small", "large"), priority: int = 100,
               paused: bool = False) -> RegisteredPool:
    return RegisteredPool(id=pid, provider=provider, labels=frozenset(labels),
                          priority=priority, paused=paused)


SELF = registered(POOL.id, "cloud-a")


def ready(nid: str, label: str = "small", age: float = 100.0, az: str | None = None,
          pool: str = "main", provider: str = "cloud-a", **kw) -> Node:
    kw.setdefault("state", NodeState.READY)
    return Node(id=nid, type=[label], provider=provider, pool=pool, az=az,
                state_time=NOW - age, **kw)


def unlocked(_node_id: str) -> bool:
    return False


# -- triage: what one pool does with a requested request -----------------------------------


def test_request_declined_by_this_pool_already_is_skipped():
    req = request("small", declined_by=[POOL.id])
    assert triage(req, POOL, [SELF]).verdict == Verdict.SKIP


def test_declined_check_comes_before_every_other_check():
    # Even a request it could never serve is not declined twice by the same pool.
    req = request("unknown", declined_by=[POOL.id])
    assert triage(req, POOL, [SELF], never_fits="the request needs 12 cores (limit 10)").verdict == Verdict.SKIP


def test_request_for_a_label_the_pool_lacks_is_declined_naming_the_label():
    result = triage(request("small", "gpu"), POOL, [SELF])
    assert result.verdict == Verdict.DECLINE
    assert "gpu" in result.reason
    assert "small" not in result.reason
    assert "cloud-a/main" in result.reason


def test_decline_for_missing_labels_names_every_missing_label_once():
    result = triage(request("gpu", "arm64", "gpu"), POOL, [SELF])
    assert result.verdict == Verdict.DECLINE
    assert "arm64, gpu" in result.reason
    assert result.reason.count("gpu") == 1


def test_request_with_no_nodes_is_declined():
    result = triage(request(), POOL, [SELF])
    assert result.verdict == Verdict.DECLINE
    assert "no nodes" in result.reason


def test_request_larger_than_max_servers_is_declined():
    pool = PoolView(id="p", provider="cloud-a", name="main", labels=frozenset({"small"}),
                    max_servers=2)
    result = triage(request("small", "small", "small"), pool, [])
    assert result.verdict == Verdict.DECLINE
    assert "3 nodes" in result.reason and "max-servers 2" in result.reason


def test_request_of_exactly_max_servers_is_taken():
    pool = PoolView(id="p", provider="cloud-a", name="main", labels=frozenset({"small"}),
                    max_servers=2)
    assert triage(request("small", "small"), pool, []).verdict == Verdict.TAKE


def test_unlimited_max_servers_never_declines_for_size():
    pool = PoolView(id="p", provider="cloud-a", name="main", labels=frozenset({"small"}),
                    max_servers=math.inf)
    assert triage(request(*["small"] * 500), pool, []).verdict == Verdict.TAKE


def test_request_that_never_fits_the_pool_quota_is_declined():
    why = "the request needs 12 cores (limit 10): more than the whole quota of provider a"
    result = triage(request("small"), POOL, [SELF], never_fits=why)
    assert result == Triage(Verdict.DECLINE, why)


def test_servable_request_with_no_competition_is_taken():
    assert triage(request("small", "large"), POOL, [SELF]) == Triage(Verdict.TAKE)


def test_pool_takes_a_request_even_when_the_registry_does_not_list_it_yet():
    assert triage(request("small"), POOL, []).verdict == Verdict.TAKE


# -- triage: provider preference ------------------------------------------------------------


def test_request_preferring_another_provider_with_a_serving_pool_is_skipped():
    other = registered("other-pool", "cloud-b")
    result = triage(request("small", provider="cloud-b"), POOL, [SELF, other])
    assert result.verdict == Verdict.SKIP
    assert "cloud-b" in result.reason


def test_request_preferring_this_provider_is_taken():
    other = registered("other-pool", "cloud-b")
    assert triage(request("small", provider="cloud-a"), POOL,
                  [SELF, other]).verdict == Verdict.TAKE


def test_request_preferring_a_provider_with_no_registered_pool_is_taken():
    other = registered("other-pool", "cloud-c")
    assert triage(request("small", provider="cloud-b"), POOL,
                  [SELF, other]).verdict == Verdict.TAKE


def test_request_preferring_a_provider_whose_pool_lacks_the_labels_is_taken():
    other = registered("other-pool", "cloud-b", labels=("small",))
    assert triage(request("small", "large", provider="cloud-b"), POOL,
                  [SELF, other]).verdict == Verdict.TAKE


def test_request_preferring_a_provider_whose_pool_declined_is_taken():
    other = registered("other-pool", "cloud-b")
    req = request("small", provider="cloud-b", declined_by=["other-pool"])
    assert triage(req, POOL, [SELF, other]).verdict == Verdict.TAKE


def test_request_preferring_a_provider_with_one_declined_and_one_open_pool_is_skipped():
    declined = registered("b-1", "cloud-b")
    open_pool = registered("b-2", "cloud-b")
    req = request("small", provider="cloud-b", declined_by=["b-1"])
    assert triage(req, POOL, [SELF, declined, open_pool]).verdict == Verdict.SKIP


def test_preferred_provider_pool_yields_even_when_paused():
    # A paused preferred pool is still "able to serve": it only waits for quota.
    other = registered("other-pool", "cloud-b", paused=True)
    assert triage(request("small", provider="cloud-b"), POOL,
                  [SELF, other]).verdict == Verdict.SKIP


def test_label_check_comes_before_provider_preference():
    other = registered("other-pool", "cloud-b", labels=("gpu",))
    result = triage(request("gpu", provider="cloud-b"), POOL, [SELF, other])
    assert result.verdict == Verdict.DECLINE


# -- triage: pool priority --------------------------------------------------------------------


def test_request_servable_by_a_lower_priority_value_pool_is_skipped():
    better = registered("better", "cloud-b", priority=50)
    result = triage(request("small"), POOL, [SELF, better])
    assert result.verdict == Verdict.SKIP
    assert "priority" in result.reason


def test_request_is_taken_when_the_lower_priority_value_pool_is_paused():
    better = registered("better", "cloud-b", priority=50, paused=True)
    assert triage(request("small"), POOL, [SELF, better]).verdict == Verdict.TAKE


def test_request_is_taken_when_the_lower_priority_value_pool_declined_it():
    better = registered("better", "cloud-b", priority=50)
    req = request("small", declined_by=["better"])
    assert triage(req, POOL, [SELF, better]).verdict == Verdict.TAKE


def test_request_is_taken_when_the_lower_priority_value_pool_lacks_a_label():
    better = registered("better", "cloud-b", labels=("small",), priority=50)
    assert triage(request("small", "large"), POOL, [SELF, better]).verdict == Verdict.TAKE


def test_pools_of_equal_priority_both_take():
    peer = registered("peer", "cloud-b", priority=100)
    assert triage(request("small"), POOL, [SELF, peer]).verdict == Verdict.TAKE


def test_a_higher_priority_value_pool_does_not_hold_this_one_back():
    worse = registered("worse", "cloud-b", priority=200)
    assert triage(request("small"), POOL, [SELF, worse]).verdict == Verdict.TAKE


def test_own_registration_with_a_stale_priority_is_ignored():
    # The registry copy of this very pool never competes with it.
    stale_self = registered(POOL.id, "cloud-a", priority=1)
    assert triage(request("small"), POOL, [stale_self]).verdict == Verdict.TAKE


def test_preferred_provider_pool_with_higher_priority_value_still_wins():
    preferred = registered("pref", "cloud-b", priority=300)
    assert triage(request("small", provider="cloud-b"), POOL,
                  [SELF, preferred]).verdict == Verdict.SKIP


# -- every_pool_declined -----------------------------------------------------------------------


def test_request_fails_when_every_registered_pool_declined():
    pools = [registered("a", "cloud-a"), registered("b", "cloud-b")]
    assert every_pool_declined(["a", "b"], pools) is True


def test_request_does_not_fail_while_one_registered_pool_has_not_declined():
    pools = [registered("a", "cloud-a"), registered("b", "cloud-b")]
    assert every_pool_declined(["a"], pools) is False


def test_declines_by_pools_no_longer_registered_do_not_matter():
    pools = [registered("a", "cloud-a")]
    assert every_pool_declined(["a", "gone-pool"], pools) is True


def test_request_does_not_fail_when_no_pool_is_registered():
    assert every_pool_declined(["a"], []) is False
    assert every_pool_declined([], []) is False


# -- between_owners: a provider in a hand-over or takeover -------------------------------------

OFFERED = {"cloud-a": [frozenset({"small"})], "cloud-b": [frozenset({"large"}),
                                                          frozenset({"gpu", "large"})]}


def test_a_provider_offering_the_labels_with_no_registered_pool_is_between_owners():
    pools = [registered("a", "cloud-a")]   # cloud-b's old owner let go, the new one not yet
    assert between_owners(["large"], OFFERED, pools, ["cloud-a", "cloud-b"]) == ["cloud-b"]
    assert between_owners(["gpu", "large"], OFFERED, pools, ["cloud-a", "cloud-b"]) == \
        ["cloud-b"]


def test_no_provider_is_between_owners_once_its_pool_is_registered_or_none_offers_the_labels():
    pools = [registered("a", "cloud-a"), registered("b", "cloud-b")]
    assert between_owners(["large"], OFFERED, pools, ["cloud-a", "cloud-b"]) == []
    assert between_owners(["huge"], OFFERED, pools[:1], ["cloud-a", "cloud-b"]) == []
    assert between_owners(["small", "large"], OFFERED, pools[:1], ["cloud-a", "cloud-b"]) == []


def test_a_provider_no_live_launcher_may_own_is_not_between_owners():
    pools = [registered("a", "cloud-a")]
    assert between_owners(["large"], OFFERED, pools, ["cloud-a"]) == []


def test_every_pool_declined_accepts_a_generator_of_pools():
    assert every_pool_declined(["a"], (p for p in [registered("a", "cloud-a")])) is True


# -- is_reusable -------------------------------------------------------------------------------


def test_ready_unallocated_unlocked_node_of_the_pool_is_reusable():
    assert is_reusable(ready("0000000001"), POOL, locked=False) is True


@pytest.mark.parametrize("state", [s for s in NodeState if s != NodeState.READY])
def test_node_not_ready_is_not_reusable(state):
    assert is_reusable(ready("0000000001", state=state), POOL, locked=False) is False


def test_locked_ready_node_is_not_reusable():
    assert is_reusable(ready("0000000001"), POOL, locked=True) is False


def test_allocated_ready_node_is_not_reusable():
    assert is_reusable(ready("0000000001", allocated_to="200-0000000009"), POOL,
                       locked=False) is False


def test_ready_node_of_another_pool_or_provider_is_not_reusable():
    assert is_reusable(ready("0000000001", pool="other"), POOL, locked=False) is False
    assert is_reusable(ready("0000000001", provider="cloud-b"), POOL, locked=False) is False


# -- choose_nodes ------------------------------------------------------------------------------


def test_oldest_ready_node_is_chosen_first():
    nodes = [ready("0000000001", age=10), ready("0000000002", age=500),
             ready("0000000003", age=50)]
    chosen, az = choose_nodes(request("small"), POOL, nodes, unlocked)
    assert chosen == ["0000000002"]
    assert az is None


def test_ready_nodes_of_equal_age_are_chosen_by_id():
    nodes = [ready("0000000009", age=10), ready("0000000003", age=10)]
    chosen, _ = choose_nodes(request("small"), POOL, nodes, unlocked)
    assert chosen == ["0000000003"]


def test_chosen_nodes_match_each_requested_label_in_order():
    nodes = [ready("0000000001", label="large", age=900), ready("0000000002", label="small")]
    chosen, _ = choose_nodes(request("small", "large"), POOL, nodes, unlocked)
    assert chosen == ["0000000002", "0000000001"]


def test_label_without_a_ready_node_gets_none_to_launch():
    nodes = [ready("0000000001", label="small")]
    chosen, _ = choose_nodes(request("large", "small"), POOL, nodes, unlocked)
    assert chosen == [None, "0000000001"]


def test_node_with_several_labels_serves_any_of_them():
    node = Node(id="0000000001", type=["small", "large"], provider="cloud-a", pool="main",
                state=NodeState.READY, state_time=NOW)
    chosen, _ = choose_nodes(request("large"), POOL, [node], unlocked)
    assert chosen == ["0000000001"]


def test_no_reuse_request_gets_no_ready_nodes():
    nodes = [ready("0000000001"), ready("0000000002")]
    chosen, az = choose_nodes(request("small", "small", reuse=False), POOL, nodes, unlocked)
    assert chosen == [None, None]
    assert az is None


def test_allow_reuse_overrides_the_request_flag_both_ways():
    nodes = [ready("0000000001")]
    assert choose_nodes(request("small", reuse=False), POOL, nodes, unlocked,
                        allow_reuse=True)[0] == ["0000000001"]
    assert choose_nodes(request("small", reuse=True), POOL, nodes, unlocked,
                        allow_reuse=False)[0] == [None]


def test_reused_nodes_fix_the_zone_from_the_first_one_chosen():
    nodes = [ready("0000000001", age=900, az="az1"), ready("0000000002", age=800, az="az2"),
             ready("0000000003", age=10, az="az1")]
    chosen, az = choose_nodes(request("small", "small"), POOL, nodes, unlocked)
    assert chosen == ["0000000001", "0000000003"]
    assert az == "az1"


def test_label_with_ready_nodes_only_in_another_zone_is_launched_in_the_first_zone():
    nodes = [ready("0000000001", label="small", age=900, az="az1"),
             ready("0000000002", label="large", age=10, az="az2")]
    chosen, az = choose_nodes(request("small", "large"), POOL, nodes, unlocked)
    assert chosen == ["0000000001", None]
    assert az == "az1"


def test_node_with_unknown_zone_fits_any_zone():
    nodes = [ready("0000000001", age=900, az="az1"), ready("0000000002", age=10, az=None)]
    chosen, az = choose_nodes(request("small", "small"), POOL, nodes, unlocked)
    assert chosen == ["0000000001", "0000000002"]
    assert az == "az1"


def test_zone_comes_from_a_later_node_when_the_first_has_none():
    nodes = [ready("0000000001", age=900, az=None), ready("0000000002", age=500, az="az2"),
             ready("0000000003", age=100, az="az3")]
    chosen, az = choose_nodes(request("small", "small", "small"), POOL, nodes, unlocked)
    assert chosen == ["0000000001", "0000000002", None]
    assert az == "az2"


def test_locked_ready_node_is_never_chosen():
    nodes = [ready("0000000001", age=900), ready("0000000002", age=10)]
    chosen, _ = choose_nodes(request("small"), POOL, nodes, lambda nid: nid == "0000000001")
    assert chosen == ["0000000002"]


def test_allocated_ready_node_is_never_chosen():
    nodes = [ready("0000000001", age=900, allocated_to="100-0000000005")]
    chosen, _ = choose_nodes(request("small"), POOL, nodes, unlocked)
    assert chosen == [None]


def test_nodes_of_another_pool_or_provider_are_never_chosen():
    nodes = [ready("0000000001", pool="other"), ready("0000000002", provider="cloud-b")]
    chosen, _ = choose_nodes(request("small"), POOL, nodes, unlocked)
    assert chosen == [None]


def test_nodes_not_ready_are_never_chosen():
    nodes = [ready(f"000000000{i}", state=s) for i, s in enumerate(
        [NodeState.BUILDING, NodeState.IN_USE, NodeState.HOLD, NodeState.USED])]
    chosen, _ = choose_nodes(request("small"), POOL, nodes, unlocked)
    assert chosen == [None]


def test_duplicate_labels_get_distinct_nodes():
    nodes = [ready("0000000001", age=900), ready("0000000002", age=10)]
    chosen, _ = choose_nodes(request("small", "small", "small"), POOL, nodes, unlocked)
    assert chosen == ["0000000001", "0000000002", None]


def test_choose_nodes_returns_one_slot_per_node_type():
    chosen, _ = choose_nodes(request("small", "large", "small"), POOL, [], unlocked)
    assert chosen == [None, None, None]


# -- RegisteredPool.from_component -------------------------------------------------------------


def test_registered_pool_reads_a_full_pool_component():
    data = {"kind": "pool", "hostname": "nl01", "state": "running", "version": "1",
            "model_api": 0, "id": "nl01-PoolWorker.cloud-a-main-abc", "name": "main",
            "provider_name": "cloud-a", "supported_labels": ["small", "large"],
            "priority": 50, "paused": True}
    pool = RegisteredPool.from_component(data)
    assert pool == RegisteredPool(id="nl01-PoolWorker.cloud-a-main-abc", provider="cloud-a",
                                  labels=frozenset({"small", "large"}), priority=50,
                                  paused=True)


def test_registered_pool_defaults_priority_100_and_not_paused():
    pool = RegisteredPool.from_component({"id": "x", "provider_name": "cloud-a",
                                          "supported_labels": ["small"]})
    assert pool.priority == 100
    assert pool.paused is False
    assert pool.labels == frozenset({"small"})


def test_registered_pool_without_labels_serves_nothing():
    assert RegisteredPool.from_component({"id": "x", "provider_name": "p"}).labels == frozenset()
    assert RegisteredPool.from_component({"id": "x", "provider_name": "p",
                                          "supported_labels": None}).labels == frozenset()


def test_registered_pool_from_component_takes_part_in_triage():
    comp = {"id": "better", "provider_name": "cloud-b", "supported_labels": ["small"],
            "priority": "10"}
    better = RegisteredPool.from_component(comp)
    assert better.priority == 10
    assert triage(request("small"), POOL, [SELF, better]).verdict == Verdict.SKIP


def test_triage_does_not_modify_the_request():
    req = request("small", "gpu", provider="cloud-b", declined_by=["x"])
    before = req.to_dict()
    triage(req, POOL, [SELF])
    assert req.to_dict() == before


# -- launch_elsewhere: a request handed back while its launch goes on -----------------------

def launching(node_id: str, provider: str, state: NodeState = NodeState.BUILDING) -> Node:
    return Node(id=node_id, provider=provider, state=state, type=["small"],
                allocated_to="200-0000000001")


def test_a_request_waits_for_its_launch_under_way_in_a_provider_that_is_run():
    asked = []

    def runnable():
        asked.append(1)
        return {"cloud-b": "nl02"}
    node = launching("0000000007", "cloud-b")
    assert launch_elsewhere([node], ours=set(), runnable=runnable) is node
    assert launch_elsewhere([launching("1", "cloud-b", NodeState.INIT)], set(), runnable).id == "1"
    assert launch_elsewhere([launching("2", "cloud-b", NodeState.TESTING)], set(), runnable)
    assert len(asked) == 3


def test_no_wait_for_our_own_launch_a_finished_node_or_a_provider_nobody_runs():
    asked = []

    def runnable():
        asked.append(1)
        return {"cloud-b": "nl02"}
    assert launch_elsewhere([], set(), runnable) is None
    assert launch_elsewhere([launching("7", "cloud-b")], ours={"7"}, runnable=runnable) is None
    for state in (NodeState.READY, NodeState.FAILED, NodeState.DELETING):
        assert launch_elsewhere([launching("7", "cloud-b", state)], set(), runnable) is None
    assert asked == []     # the spread is computed only when such a launch exists
    assert launch_elsewhere([launching("7", "cloud-gone")], set(), runnable) is None
