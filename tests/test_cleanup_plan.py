"""Cleanup decisions for existing nodes (pure, fixed clock)."""

from __future__ import annotations

import math

import pytest

from nodepool.config import Label
from nodepool.launcher.cleanup import (
    Action,
    NodeAction,
    hold_expired,
    hold_limit,
    next_expiry,
    plan,
)
from nodepool.model import Node, NodeState

NOW = 1_700_000_000.0
HOUR = 3600.0

LABELS = {
    "small": Label(name="small"),                          # max-ready-age 0: kept forever
    "aging": Label(name="aging", max_ready_age=600),
    "quick": Label(name="quick", max_ready_age=60),
}


def node(nid: str = "0000000001", state: NodeState = NodeState.READY, age: float = 10.0,
         label: str = "small", **kw) -> Node:
    return Node(id=nid, state=state, state_time=NOW - age, type=[label], provider="cloud-a",
                pool="main", **kw)


def run_plan(nodes, locked=(), busy=(), live_requests=(), max_hold_age: float = math.inf,
             now: float = NOW, can_resume: bool = True, labels=None) -> list[NodeAction]:
    return plan(nodes, lambda nid: nid in set(locked), set(busy),
                lambda rid: rid in set(live_requests), LABELS if labels is None else labels,
                max_hold_age, now, can_resume=can_resume)


def actions(result: list[NodeAction]) -> dict[str, Action]:
    return {a.node_id: a.action for a in result}


# -- states the launcher deletes once nobody holds them (hand-off step 6) -----------------------


def test_unlocked_used_node_is_deleted():
    assert actions(run_plan([node(state=NodeState.USED)])) == {"0000000001": Action.DELETE}


def test_unlocked_in_use_node_is_deleted():
    result = run_plan([node(state=NodeState.IN_USE)])
    assert actions(result) == {"0000000001": Action.DELETE}
    assert "died" in result[0].reason


def test_unlocked_failed_node_is_deleted():
    assert actions(run_plan([node(state=NodeState.FAILED)])) == {"0000000001": Action.DELETE}


def test_unlocked_aborted_node_is_deleted():
    assert actions(run_plan([node(state=NodeState.ABORTED)])) == {"0000000001": Action.DELETE}


def test_unlocked_deleting_node_is_deleted_again():
    assert actions(run_plan([node(state=NodeState.DELETING)])) == {"0000000001": Action.DELETE}


@pytest.mark.parametrize("state", list(NodeState))
def test_locked_node_is_left_alone_in_every_state(state):
    n = node(state=state, age=10 * HOUR, label="quick", driver_data={"server": "x"},
             allocated_to="200-0000000001" if state == NodeState.READY else None)
    assert run_plan([n], locked={"0000000001"}, max_hold_age=1) == []


@pytest.mark.parametrize("state", list(NodeState))
def test_node_we_are_working_on_is_left_alone_in_every_state(state):
    n = node(state=state, age=10 * HOUR, label="quick", driver_data={"server": "x"})
    assert run_plan([n], busy={"0000000001"}, max_hold_age=1) == []


@pytest.mark.parametrize("state", [NodeState.USED, NodeState.IN_USE, NodeState.FAILED,
                                   NodeState.ABORTED, NodeState.DELETING])
def test_finished_node_is_deleted_whatever_its_age_or_label(state):
    assert actions(run_plan([node(state=state, age=0, label="unknown")])) == \
        {"0000000001": Action.DELETE}


# -- launches that lost their launcher ----------------------------------------------------------


@pytest.mark.parametrize("state", [NodeState.INIT, NodeState.BUILDING, NodeState.TESTING])
def test_unlocked_launch_with_driver_data_is_resumed(state):
    result = run_plan([node(state=state, driver_data={"server_id": "abc"})])
    assert actions(result) == {"0000000001": Action.RESUME}
    assert state.value in result[0].reason


@pytest.mark.parametrize("state", [NodeState.INIT, NodeState.BUILDING, NodeState.TESTING])
def test_unlocked_launch_without_driver_data_is_deleted(state):
    assert actions(run_plan([node(state=state)])) == {"0000000001": Action.DELETE}
    assert actions(run_plan([node(state=state, driver_data={})])) == \
        {"0000000001": Action.DELETE}


@pytest.mark.parametrize("state", [NodeState.INIT, NodeState.BUILDING, NodeState.TESTING])
def test_unlocked_launch_is_deleted_when_the_driver_cannot_resume(state):
    result = run_plan([node(state=state, driver_data={"standing": "host1"})], can_resume=False)
    assert actions(result) == {"0000000001": Action.DELETE}
    assert "nothing to resume" in result[0].reason


# -- hold ---------------------------------------------------------------------------------------


def test_hold_without_expiration_or_max_hold_age_is_kept_forever():
    n = node(state=NodeState.HOLD, age=1000 * 24 * HOUR)
    assert run_plan([n], max_hold_age=math.inf) == []
    assert run_plan([n], max_hold_age=0) == []
    assert run_plan([node(state=NodeState.HOLD, age=1000 * 24 * HOUR, hold_expiration=0)],
                    max_hold_age=0) == []


def test_hold_expires_after_its_hold_expiration():
    n = node(state=NodeState.HOLD, age=2 * HOUR, hold_expiration=HOUR)
    result = run_plan([n])
    assert actions(result) == {"0000000001": Action.DELETE}
    assert "hold" in result[0].reason


def test_hold_is_kept_before_its_hold_expiration():
    assert run_plan([node(state=NodeState.HOLD, age=HOUR - 1, hold_expiration=HOUR)]) == []


def test_hold_expires_after_max_hold_age_when_it_has_no_expiration():
    assert actions(run_plan([node(state=NodeState.HOLD, age=2 * HOUR)], max_hold_age=HOUR)) == \
        {"0000000001": Action.DELETE}
    assert run_plan([node(state=NodeState.HOLD, age=HOUR - 1)], max_hold_age=HOUR) == []


def test_hold_expires_at_max_hold_age_when_that_is_lower_than_its_expiration():
    n = node(state=NodeState.HOLD, age=2 * HOUR, hold_expiration=10 * HOUR)
    assert actions(run_plan([n], max_hold_age=HOUR)) == {"0000000001": Action.DELETE}


def test_hold_expires_at_its_expiration_when_that_is_lower_than_max_hold_age():
    n = node(state=NodeState.HOLD, age=2 * HOUR, hold_expiration=HOUR)
    assert actions(run_plan([n], max_hold_age=10 * HOUR)) == {"0000000001": Action.DELETE}
    kept = node(state=NodeState.HOLD, age=2 * HOUR, hold_expiration=10 * HOUR)
    assert run_plan([kept], max_hold_age=24 * HOUR) == []


def test_hold_with_zero_or_negative_expiration_falls_back_to_max_hold_age():
    for expiration in (0, -5):
        young = node(state=NodeState.HOLD, age=10, hold_expiration=expiration)
        old = node(state=NodeState.HOLD, age=2 * HOUR, hold_expiration=expiration)
        assert run_plan([young], max_hold_age=HOUR) == []
        assert actions(run_plan([old], max_hold_age=HOUR)) == {"0000000001": Action.DELETE}


def test_hold_age_is_measured_from_state_time():
    n = node(state=NodeState.HOLD, hold_expiration=HOUR)
    n.state_time = NOW - 100
    n.created_time = NOW - 100 * HOUR
    assert run_plan([n]) == []


def test_hold_limit_is_the_lower_of_expiration_and_max_hold_age():
    assert hold_limit(node(hold_expiration=50), 100) == 50
    assert hold_limit(node(hold_expiration=500), 100) == 100
    assert hold_limit(node(hold_expiration=None), 100) == 100
    assert hold_limit(node(hold_expiration=50), math.inf) == 50
    assert hold_limit(node(hold_expiration=50), 0) == 50
    assert hold_limit(node(hold_expiration=None), 0) == math.inf
    assert hold_limit(node(hold_expiration=None), -1) == math.inf


def test_hold_expired_is_strictly_after_the_limit():
    n = node(state=NodeState.HOLD, age=0)
    n.state_time = NOW - 100
    assert not hold_expired(n, NOW, 100)
    assert hold_expired(n, NOW + 0.001, 100)


# -- ready nodes --------------------------------------------------------------------------------


def test_ready_node_allocated_to_a_vanished_request_is_released():
    result = run_plan([node(allocated_to="200-0000000007")], live_requests=())
    assert actions(result) == {"0000000001": Action.RELEASE}
    assert "200-0000000007" in result[0].reason


def test_ready_node_allocated_to_a_live_request_is_left_alone():
    assert run_plan([node(allocated_to="200-0000000007")],
                    live_requests={"200-0000000007"}) == []


def test_ready_node_allocated_to_a_live_request_is_kept_past_max_ready_age():
    n = node(allocated_to="200-0000000007", label="quick", age=10 * HOUR)
    assert run_plan([n], live_requests={"200-0000000007"}) == []


def test_ready_node_of_a_vanished_request_is_released_not_deleted_even_when_old():
    n = node(allocated_to="200-0000000007", label="quick", age=10 * HOUR)
    assert actions(run_plan([n])) == {"0000000001": Action.RELEASE}


def test_unallocated_ready_node_older_than_max_ready_age_is_deleted():
    result = run_plan([node(label="aging", age=601)])
    assert actions(result) == {"0000000001": Action.DELETE}
    assert "max-ready-age" in result[0].reason


def test_unallocated_ready_node_younger_than_max_ready_age_is_kept():
    assert run_plan([node(label="aging", age=599)]) == []
    assert run_plan([node(label="aging", age=600)]) == []


def test_ready_node_is_kept_forever_when_max_ready_age_is_zero():
    assert run_plan([node(label="small", age=1000 * 24 * HOUR)]) == []


def test_ready_node_of_an_unconfigured_label_is_kept():
    assert run_plan([node(label="gone", age=1000 * 24 * HOUR)]) == []


def test_ready_node_with_several_labels_uses_the_longest_max_ready_age():
    n = node(age=300)
    n.type = ["quick", "aging"]
    assert run_plan([n]) == []
    n.state_time = NOW - 601
    assert actions(run_plan([n])) == {"0000000001": Action.DELETE}


def test_ready_age_is_measured_from_state_time():
    n = node(label="aging", age=10)
    n.created_time = NOW - 100 * HOUR
    assert run_plan([n]) == []


def test_unlocked_deleted_record_left_behind_is_removed_not_released_or_resumed():
    n = node(state=NodeState.DELETED, allocated_to="200-0000000007", driver_data={"x": 1})
    assert [a.action for a in run_plan([n])] == [Action.REMOVE]


def test_plan_covers_many_nodes_at_once_in_their_order():
    nodes = [
        node("0000000001", state=NodeState.USED),
        node("0000000002", state=NodeState.READY),
        node("0000000003", state=NodeState.BUILDING, driver_data={"id": 1}),
        node("0000000004", state=NodeState.READY, allocated_to="200-0000000001"),
        node("0000000005", state=NodeState.HOLD, age=2 * HOUR, hold_expiration=HOUR),
        node("0000000006", state=NodeState.IN_USE),
        node("0000000007", state=NodeState.READY, label="quick", age=61),
    ]
    result = run_plan(nodes, locked={"0000000006"})
    assert [(a.node_id, a.action) for a in result] == [
        ("0000000001", Action.DELETE),
        ("0000000003", Action.RESUME),
        ("0000000004", Action.RELEASE),
        ("0000000005", Action.DELETE),
        ("0000000007", Action.DELETE),
    ]


def test_plan_does_not_modify_the_nodes():
    n = node(allocated_to="200-0000000007")
    before = n.to_dict()
    run_plan([n])
    assert n.to_dict() == before


# -- next_expiry --------------------------------------------------------------------------------


def test_next_expiry_with_nothing_to_expire_is_infinite():
    nodes = [node(label="small"), node(state=NodeState.HOLD), node(state=NodeState.USED)]
    assert next_expiry(nodes, LABELS, math.inf) == math.inf
    assert next_expiry([], LABELS, math.inf) == math.inf


def test_next_expiry_is_the_earliest_hold_or_ready_age_deadline():
    nodes = [
        node("0000000001", label="aging", age=100),                 # NOW + 500
        node("0000000002", state=NodeState.HOLD, age=0, hold_expiration=300),  # NOW + 300
        node("0000000003", state=NodeState.HOLD, age=0),            # max-hold-age: NOW + 1000
    ]
    assert next_expiry(nodes, LABELS, 1000) == NOW + 300
    assert next_expiry(nodes[:1], LABELS, 1000) == NOW + 500
    assert next_expiry(nodes[2:], LABELS, 1000) == NOW + 1000


def test_next_expiry_ignores_allocated_ready_nodes():
    n = node(label="quick", age=0, allocated_to="200-0000000001")
    assert next_expiry([n], LABELS, math.inf) == math.inf


def test_next_expiry_agrees_with_plan():
    nodes = [node("0000000001", label="quick", age=10),
             node("0000000002", state=NodeState.HOLD, age=0, hold_expiration=500)]
    deadline = next_expiry(nodes, LABELS, math.inf)
    assert deadline == NOW + 50
    assert run_plan(nodes, now=deadline) == []
    assert actions(run_plan(nodes, now=deadline + 0.01)) == {"0000000001": Action.DELETE}
