"""Pure decisions about requests: which pool takes one, declines, and which ready nodes it reuses.

Functions of plain data (requests, nodes, pool views, registered pool
components); no ZooKeeper, no clock but the one passed in. The provider
worker applies what they return (ARCHITECTURE.md section 7).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Container, Iterable, Mapping, Sequence

from nodepool.model import LAUNCHING, Node, NodeRequest, NodeState


@dataclasses.dataclass(frozen=True)
class PoolView:
    """One of our pools, as decisions need it."""

    id: str                 # the pool component's id (what goes into declined_by)
    provider: str
    name: str
    labels: frozenset[str]
    max_servers: float
    priority: int = 100
    launches: bool = True   # False for drivers whose nodes are standing hosts (static)


@dataclasses.dataclass(frozen=True)
class RegisteredPool:
    """A pool component read from ZooKeeper (ours or another launcher's)."""

    id: str
    provider: str
    labels: frozenset[str]
    priority: int = 100
    paused: bool = False

    @classmethod
    def from_component(cls, data: Mapping[str, Any]) -> RegisteredPool:
        return cls(id=str(data.get("id")), provider=str(data.get("provider_name")),
                   labels=frozenset(data.get("supported_labels") or ()),
                   priority=int(data.get("priority", 100)), paused=bool(data.get("paused")))


class Verdict(str, enum.Enum):
    TAKE = "take"          # lock it and serve it
    SKIP = "skip"          # not ours to act on now (another pool goes first, or we declined)
    DECLINE = "decline"    # this pool can never serve it


@dataclasses.dataclass(frozen=True)
class Triage:
    verdict: Verdict
    reason: str = ""


def triage(request: NodeRequest, pool: PoolView, registered: Iterable[RegisteredPool],
           never_fits: str | None = None) -> Triage:
    """Decide what `pool` does with a `requested` request.

    `never_fits` says why the request's total cost exceeds what the pool could ever
    hold (its absolute limits, the cloud's whole quota), which is a decline, not a wait.
    """
    if pool.id in request.declined_by:
        return Triage(Verdict.SKIP, "declined by this pool already")
    missing = sorted(set(request.node_types) - pool.labels)
    if missing:
        return Triage(Verdict.DECLINE, f"label(s) {', '.join(missing)} not offered by pool "
                                       f"{pool.provider}/{pool.name}")
    if not request.node_types:
        return Triage(Verdict.DECLINE, "request asks for no nodes")
    if len(request.node_types) > pool.max_servers:
        return Triage(Verdict.DECLINE, f"{len(request.node_types)} nodes exceed pool "
                                       f"max-servers {pool.max_servers:g}")
    if never_fits:
        return Triage(Verdict.DECLINE, never_fits)
    wanted = set(request.node_types)
    others = [p for p in registered if p.id != pool.id and p.id not in request.declined_by
              and wanted <= p.labels]
    if request.provider and request.provider != pool.provider:
        if any(p.provider == request.provider for p in others):
            return Triage(Verdict.SKIP, f"prefers provider {request.provider}")
    if any(p.priority < pool.priority and not p.paused for p in others):
        return Triage(Verdict.SKIP, "a pool with a lower priority value can serve it")
    return Triage(Verdict.TAKE)


def every_pool_declined(declined_by: Sequence[str], registered: Iterable[RegisteredPool]) -> bool:
    """True when every registered pool id has declined: the request fails."""
    ids = {p.id for p in registered}
    return bool(ids) and ids <= set(declined_by)


def between_owners(labels: Iterable[str], offered: Mapping[str, Iterable[frozenset[str]]],
                   registered: Iterable[RegisteredPool], owned: Iterable[str]) -> list[str]:
    """Providers that could serve `labels` but are between two owners right now (pure).

    `offered`: provider -> the label sets of its pools (our config); `owned`: the
    providers some live launcher should run (the spread). Such a provider with no
    registered pool is in a hand-over or a takeover: its pool will register soon,
    so a request that every registered pool declined must not fail yet.
    """
    wanted = frozenset(labels)
    running = {p.provider for p in registered}
    return sorted(name for name in set(owned) - running
                  if any(wanted <= pool for pool in offered.get(name, ())))


def launch_elsewhere(allocated: Iterable[Node], ours: Container[str],
                     runnable: Callable[[], Container[str]]) -> Node | None:
    """A launch for a request under way that this worker does not run (pure), or None.

    `allocated`: the nodes allocated to the request; `ours`: our launches;
    `runnable()`: the providers some live launcher should run (asked only when
    such a launch exists). A hand-over gives a request back while its launches
    go on under the provider's next owner, which resumes them for it: the
    request waits for that owner instead of being launched for twice.
    """
    others = [n for n in allocated if n.state in LAUNCHING and n.id not in ours]
    if not others:
        return None
    runs = runnable()
    return next((n for n in others if n.provider in runs), None)


def is_spare(node: Node, locked: bool) -> bool:
    """Ready, unallocated and unlocked: free to hand over."""
    return node.state == NodeState.READY and node.allocated_to is None and not locked


def is_reusable(node: Node, pool: PoolView, locked: bool) -> bool:
    return is_spare(node, locked) and node.provider == pool.provider and node.pool == pool.name


def choose_nodes(request: NodeRequest, pool: PoolView, nodes: Iterable[Node],
                 is_locked, allow_reuse: bool | None = None, az: str | None = None,
                 exclude: frozenset[str] = frozenset()) -> tuple[list[str | None], str | None]:
    """For each of the request's labels, a ready node to hand over, or None to launch.

    Reused nodes constrain the availability zone: all of a request's nodes
    come from the zone of the first one chosen (or `az`, when some already
    were). Oldest ready nodes go first; `exclude` are ids not to offer.
    Returns (node ids aligned with node_types, the zone the rest must use).
    """
    reuse = request.reuse if allow_reuse is None else allow_reuse
    chosen: list[str | None] = [None] * len(request.node_types)
    if not reuse:
        return chosen, az
    candidates = sorted((n for n in nodes if n.id not in exclude
                         and is_reusable(n, pool, is_locked(n.id))),
                        key=lambda n: (n.state_time, n.id))
    used: set[str] = set()
    for i, label in enumerate(request.node_types):
        for node in candidates:
            if node.id in used or label not in node.type:
                continue
            if az is not None and node.az is not None and node.az != az:
                continue
            chosen[i] = node.id
            used.add(node.id)
            az = az or node.az
            break
    return chosen, az
