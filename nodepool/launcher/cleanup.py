"""Pure decisions about existing nodes: which to delete, release, or resume.

Given the nodes of one provider, which of them are locked, which requests
exist, the config and the time, say what the provider worker should do with
each node nobody is working on. Nothing here touches ZooKeeper.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Callable, Iterable, Mapping

from nodepool.config.model import Label
from nodepool.model import LAUNCHING, Node, NodeState


class Action(str, enum.Enum):
    DELETE = "delete"      # lock, deleting, delete the server, remove the record
    REMOVE = "remove"      # a `deleted` record its launcher did not get to remove
    RELEASE = "release"    # ready node allocated to a request that is gone: clear allocated_to
    RESUME = "resume"      # a launch that lost its launcher: finish it from driver_data


@dataclasses.dataclass(frozen=True)
class NodeAction:
    node_id: str
    action: Action
    reason: str


# Unlocked nodes in these states are finished with (PROTOCOL.md hand-off step 6).
_DELETE_WHEN_UNLOCKED = {
    NodeState.USED: "used",
    NodeState.IN_USE: "in-use but unlocked: its user died",
    NodeState.FAILED: "failed",
    NodeState.ABORTED: "aborted",
    NodeState.DELETING: "deleting",
}


def hold_limit(node: Node, max_hold_age: float) -> float:
    """Seconds a `hold` node is kept: its own hold_expiration or max-hold-age, the lower."""
    limits = [max_hold_age if max_hold_age and max_hold_age > 0 else math.inf]
    if node.hold_expiration and node.hold_expiration > 0:
        limits.append(node.hold_expiration)
    return min(limits)


def hold_expired(node: Node, now: float, max_hold_age: float) -> bool:
    return now - (node.state_time or now) > hold_limit(node, max_hold_age)


def ready_age_limits(labels: Mapping[str, Label]) -> dict[str, float]:
    """max-ready-age by label name, of the labels that have one (looked up once per pass
    over the nodes, not once per node: a pass over 10,000 nodes spent half its time here)."""
    return {name: age for name, label in labels.items()
            if (age := label.max_ready_age)}


def ready_age_limit(node: Node, limits: Mapping[str, float]) -> float:
    """max-ready-age of the node's labels (0 = none); `limits` from `ready_age_limits`."""
    if not limits:
        return 0
    if len(node.type) == 1:
        return limits.get(node.type[0], 0)
    return max((limits.get(t, 0) for t in node.type), default=0)


def next_expiry(nodes: Iterable[Node], labels: Mapping[str, Label], max_hold_age: float) -> float:
    """The earliest wall-clock time at which a hold or an unused ready node expires."""
    earliest = math.inf
    limits = ready_age_limits(labels)
    for node in nodes:
        if not node.state_time:
            continue   # plan() counts ages from now for these: they never expire
        if node.state == NodeState.HOLD:
            earliest = min(earliest, (node.state_time or 0) + hold_limit(node, max_hold_age))
        elif node.state == NodeState.READY and node.allocated_to is None:
            limit = ready_age_limit(node, limits)
            if limit:
                earliest = min(earliest, (node.state_time or 0) + limit)
    return earliest


def plan(
    nodes: Iterable[Node],
    is_locked: Callable[[str], bool],
    busy: set[str],
    request_exists: Callable[[str], bool],
    labels: Mapping[str, Label],
    max_hold_age: float,
    now: float,
    can_resume: bool = True,
) -> list[NodeAction]:
    """What to do with the provider's nodes that nobody holds and we are not working on.

    `busy` are node ids with a task of ours; `labels` maps label name to its
    config (for max-ready-age); `can_resume` is False for drivers that do not launch.
    """
    actions = []
    limits = ready_age_limits(labels)
    for node in nodes:
        if node.id in busy or is_locked(node.id):
            continue
        state = node.state
        if state == NodeState.DELETED:
            actions.append(NodeAction(node.id, Action.REMOVE, "deleted, record left behind"))
        elif state in _DELETE_WHEN_UNLOCKED:
            actions.append(NodeAction(node.id, Action.DELETE, _DELETE_WHEN_UNLOCKED[state]))
        elif state in LAUNCHING:
            if can_resume and node.driver_data:
                actions.append(NodeAction(node.id, Action.RESUME, f"{state.value} without a launcher"))
            else:
                actions.append(NodeAction(node.id, Action.DELETE,
                                          f"{state.value} without a launcher, nothing to resume"))
        elif state == NodeState.HOLD:
            if hold_expired(node, now, max_hold_age):
                actions.append(NodeAction(node.id, Action.DELETE, "hold expired"))
        elif state == NodeState.READY:
            if node.allocated_to is not None:
                if not request_exists(node.allocated_to):
                    actions.append(NodeAction(node.id, Action.RELEASE,
                                              f"request {node.allocated_to} is gone"))
                continue  # allocated to a live request: left alone (hand-off step 5)
            age_limit = ready_age_limit(node, limits)
            if age_limit and now - (node.state_time or now) > age_limit:
                actions.append(NodeAction(node.id, Action.DELETE,
                                          f"ready longer than max-ready-age {age_limit}s"))
    return actions
