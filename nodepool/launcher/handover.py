"""Claiming ready nodes for a request in few round trips: pipelined locks.

Claiming a node means locking it (kazoo's Lock recipe, the contender create
and listing pipelined for every node at once) and preparing its allocation
over the version the cache showed as ready and unallocated. The effects
module's hand-over transaction (`ZkEffects.commit_claims_async`) then writes
every allocation, releases every node lock and, when the request is
complete, writes `nodes` + `fulfilled` and releases the request lock: all of
it happens or none (a node changed since the cache saw it makes the whole
commit fail, and nothing is written).
"""

from __future__ import annotations

import dataclasses

from nodepool.launcher.effects import Claim, ZkEffects
from nodepool.launcher.planner import PoolView, choose_nodes, is_reusable
from nodepool.model import Node, NodeRequest
from nodepool.zk import locks
from nodepool.zk.cache import ZooKeeperCache


@dataclasses.dataclass(eq=False)
class ClaimAttempt:
    """A ready node chosen for a slot, its lock attempt sent."""

    slot: int
    seen: Node                  # the node as the cache showed it (the commit checks its version)
    attempt: locks.LockAttempt


def start_claims(effects: ZkEffects, cache: ZooKeeperCache, request: NodeRequest,
                 slots: list[str | None], pool: PoolView, az: str | None,
                 candidates: list[Node], exclude: set[str] | None = None
                 ) -> tuple[list[ClaimAttempt], str | None]:
    """Choose ready nodes for the empty slots and send their lock attempts (no waiting).

    `exclude` (ids other requests of the same pass are claiming) is extended
    with the chosen ones. `settle_claims` collects the answers.
    """
    missing = [i for i, s in enumerate(slots) if s is None]
    wanted = dataclasses.replace(request, node_types=[request.node_types[i] for i in missing])
    taken = frozenset(s for s in slots if s is not None) | frozenset(exclude or ())
    chosen, az = choose_nodes(wanted, pool, candidates, cache.is_node_locked,
                              allow_reuse=True, az=az, exclude=taken)
    attempts = []
    for slot, node_id in zip(missing, chosen):
        seen = cache.get_node(node_id) if node_id else None
        # The candidates may be a step behind the cache: claim only what the cache
        # shows ready and unallocated now, at the version the commit will check.
        if seen is None or not is_reusable(seen, pool, cache.is_node_locked(node_id)):
            continue
        if exclude is not None:
            exclude.add(node_id)
        attempts.append(ClaimAttempt(slot, seen, effects.lock_node_async(node_id)))
    return attempts, az


def settle_claims(effects: ZkEffects, attempts: list[ClaimAttempt],
                  request: NodeRequest) -> list[Claim]:
    """The attempts that won their lock, each with its allocation to `request` prepared."""
    claims = []
    for a in attempts:
        held = effects.settle_node_lock(a.attempt, a.seen.id)
        if held is not None:
            node = dataclasses.replace(a.seen, allocated_to=request.id,
                                       tenant_name=request.tenant_name,
                                       requestor=request.requestor)
            claims.append(Claim(a.slot, node, held))
    return claims


def abandon(effects: ZkEffects, attempts: list[ClaimAttempt], request: NodeRequest) -> None:
    """Let go of claims sent for a request that turned out not to be ours to serve."""
    effects.release_claims(settle_claims(effects, attempts, request))


