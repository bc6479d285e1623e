"""Handing ready nodes over in few round trips: pipelined locks, one transaction.

Claiming a node means locking it (kazoo's Lock recipe, the contender create
and listing pipelined for every node at once) and preparing its allocation
over the version the cache showed as ready and unallocated. `commit` then
writes every allocation, releases every node lock and, when the request is
complete, writes `nodes` + `fulfilled` and releases the request lock, as one
ZooKeeper transaction: all of it happens or none (a node changed since the
cache saw it makes the whole commit fail, and nothing is written).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.launcher.planner import PoolView, choose_nodes, is_reusable
from nodepool.model import Node, NodeRequest
from nodepool.zk import locks, paths
from nodepool.zk.cache import NODE, REQUEST


@dataclasses.dataclass
class Claim:
    """A ready node we hold locked, with the allocation to write for it."""

    slot: int
    node: Node
    lock: Lock


def start_claims(kazoo: KazooClient, cache: Any, request: NodeRequest, slots: list[str | None],
                 pool: PoolView, az: str | None, identifier: str, candidates: list[Node],
                 exclude: set[str] | None = None) -> tuple[list, str | None]:
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
        lock, created, listed = locks.start_lock(kazoo, paths.node_lock(node_id), identifier)
        attempts.append((slot, seen, lock, created, listed))
    return attempts, az


def settle_claims(kazoo: KazooClient, attempts: list, request: NodeRequest,
                  identifier: str) -> list[Claim]:
    claims = []
    for slot, seen, lock, created, listed in attempts:
        held = locks.settle_node_lock(kazoo, (lock, created, listed), seen.id, identifier)
        if held is not None:
            node = dataclasses.replace(seen, allocated_to=request.id,
                                       tenant_name=request.tenant_name,
                                       requestor=request.requestor)
            claims.append(Claim(slot, node, held))
    return claims


def commit(kazoo: KazooClient, claims: list[Claim], request: NodeRequest | None = None,
           request_lock: Lock | None = None) -> bool:
    """Write the allocations and unlock the nodes (and fulfil the request) atomically."""
    return finish_commit(kazoo, claims, request_lock,
                         send_commit(kazoo, claims, request, request_lock))


def send_commit(kazoo: KazooClient, claims: list[Claim], request: NodeRequest | None = None,
                request_lock: Lock | None = None, cache: Any = None):
    """Send `commit`'s transaction without waiting; `finish_commit` collects it.

    With the `cache`, what it writes is cached from the answer, not read back.
    """
    tx = kazoo.transaction()
    writes = []
    for claim in claims:
        data = claim.node.to_json()
        writes.append((NODE, claim.node.id, data, len(tx.operations)))
        tx.set_data(paths.node(claim.node.id), data, claim.node.version)
        tx.delete(f"{claim.lock.path}/{claim.lock.node}")
    if request is not None:
        data = request.to_json()
        writes.append((REQUEST, request.id, data, len(tx.operations)))
        tx.set_data(paths.request(request.id), data, request.version)
        if request_lock is not None and request_lock.node:
            tx.delete(f"{request_lock.path}/{request_lock.node}")
    return cache.commit_own(tx, writes) if cache is not None else tx.commit_async()


def finish_commit(kazoo: KazooClient, claims: list[Claim], request_lock: Lock | None,
                  pending) -> bool:
    """True when the transaction was applied; otherwise the node locks are let go."""
    try:
        results = pending.get()
    except Exception:
        results = [Exception("commit not answered")]
    if any(isinstance(r, Exception) for r in results):
        release(kazoo, claims)
        return False
    for claim in claims:
        claim.lock.is_acquired, claim.lock.node = False, None
    if request_lock is not None:
        request_lock.is_acquired, request_lock.node = False, None
    return True


def abandon(kazoo: KazooClient, attempts: list, request: NodeRequest, identifier: str) -> None:
    """Let go of claims sent for a request that turned out not to be ours to serve."""
    release(kazoo, settle_claims(kazoo, attempts, request, identifier))


def release(kazoo: KazooClient, claims: list[Claim]) -> None:
    for claim in claims:
        locks.release_async(kazoo, claim.lock)


def unallocate(kazoo: KazooClient, seen: Node, identifier: str) -> bool:
    """Give a ready node back to the pool: lock, clear `allocated_to`, unlock.

    The write is conditional on the version the cache showed (ready, allocated
    to a request that is gone), so it fails, changing nothing, if anything
    happened since; lock and write are pipelined, the commit is not waited for.
    """
    try:
        lock = locks.try_lock(kazoo, paths.node_lock(seen.id), identifier)
    except NoNodeError:
        return False
    if lock is None:
        return False
    node = dataclasses.replace(seen, allocated_to=None)
    contender = f"{lock.path}/{lock.node}"
    tx = kazoo.transaction()
    tx.set_data(paths.node(node.id), node.to_json(), seen.version)
    tx.delete(contender)
    lock.is_acquired, lock.node = False, None

    def done(result) -> None:
        try:
            failed = any(isinstance(r, Exception) for r in result.get())
        except Exception:
            failed = True
        if failed:       # nothing was written: let go of the lock we still hold
            kazoo.delete_async(contender)
    tx.commit_async().rawlink(done)
    return True
