"""Every ZooKeeper write a provider worker makes, in one place.

The parts of a worker decide; this module writes. Calls named `*_async`
send and return at once (kazoo's async result, or nothing): the loop does not
wait for them, and ZooKeeper applies one session's requests in order, so a
later write still lands after them. Every other call waits for its answer
and so blocks the provider loop for a round trip. Writes of our own go
through the cache (`commit_own`, `write_node`), which takes what was written
from the reply instead of reading it back. Kazoo `Lock` fields are touched
only in `nodepool/zk/locks.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Callable

from kazoo.exceptions import BadVersionError, NoNodeError, RolledBackError
from kazoo.recipe.lock import Lock

from nodepool import errors
from nodepool.model import Node, NodeRequest
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, nodes, paths, requests
from nodepool.zk.cache import ZooKeeperCache
from nodepool.zk.kazooext.handler import Inline

log = logging.getLogger("nodepool.launcher.effects")


@dataclasses.dataclass
class Claim:
    """A ready node we hold locked, with the allocation to write for it."""

    slot: int
    node: Node
    lock: Lock


def _failed(result) -> BaseException | None:
    """The first failure of a transaction's answer, if any (on kazoo's reader thread)."""
    try:
        return next((r for r in result.get() if isinstance(r, Exception)), None)
    except Exception as e:
        return e


def _waits(op: str):
    """A call that waits for ZooKeeper: its time goes to `on_round_trip` (metrics)."""
    def wrap(fn):
        @functools.wraps(fn)
        def timed(self, *args, **kwargs):
            started = time.monotonic()
            try:
                return fn(self, *args, **kwargs)
            finally:
                self._on_round_trip(op, time.monotonic() - started)
        return timed
    return wrap


class ZkEffects:
    """The ZooKeeper writes of one provider worker, as `identifier` (our lock name)."""

    def __init__(self, cache: ZooKeeperCache, kazoo_of: Callable, identifier: str,
                 wake: Callable[[], None],
                 on_round_trip: Callable[[str, float], None] = lambda op, seconds: None):
        self._on_round_trip = on_round_trip   # (op, seconds) of each call that waits
        self.cache = cache
        self._kazoo_of = kazoo_of    # the session may be replaced: look it up per call
        self.identifier = identifier
        self.wake = wake

    @property
    def kazoo(self):
        return self._kazoo_of()

    # -- nodes ------------------------------------------------------------------------

    def write_node_async(self, node: Node, check_version: bool = False,
                         lock: Lock | None = None):
        """Write a node we hold locked; wakes the loop when answered.

        No version check by default: under the node lock no one else writes it
        (PROTOCOL.md); `check_version` makes it conditional on the version we read.
        With `lock`, the write applies only while our contender of it exists (fencing:
        a session that expired holds no lock, so its late writes fail).
        """
        version = node.version if check_version else -1
        contender = locks.contender_path(lock) if lock is not None else None
        if contender is None:
            return self.cache.write_node(node.id, node.to_json(), version,
                                         then=lambda _: self.wake())
        data = node.to_json()
        tx = self._fenced_write(contender, paths.node(node.id), data, version)
        return self.cache.commit_own(tx, [(zkcache.NODE, node.id, data, 1)],
                                     then=lambda _: self.wake())

    def _fenced_write(self, contender: str, path: str, data: bytes, version: int):
        """A transaction that writes `path` only while our lock contender exists (a lock
        of a session that expired is gone, so a late write of ours fails: fence.py)."""
        tx = self.kazoo.transaction()
        tx.check(contender, -1)
        tx.set_data(path, data, version)
        return tx

    def write_and_unlock_async(self, node: Node, lock: Lock | None) -> object | None:
        """Write a node we hold locked and let the lock go, in one transaction.

        Returns the plain write's result when there is no lock to let go (the
        caller then waits for it like any write), else None: should the
        transaction fail, the lock is let go on its own.
        """
        contender = locks.contender_path(lock) if lock is not None else None
        if contender is None:
            return self.write_node_async(node)
        locks.forget(lock)
        data = node.to_json()
        tx = self.kazoo.transaction()
        tx.set_data(paths.node(node.id), data)
        tx.delete(contender)
        kazoo = self.kazoo

        def done(res) -> None:   # on kazoo's reader thread: nothing that waits
            failed = res.exception if not res.successful() else _failed(res)
            if failed is not None:
                log.error("node=%s provider=%s Writing %s failed: %r", node.id, node.provider,
                          node.state.value, failed)
                locks.delete_contender_async(kazoo, contender)
        self.cache.commit_own(tx, [(zkcache.NODE, node.id, data, 0)], then=done)
        return None

    def remove_node_async(self, node: Node, lock: Lock | None,
                          on_failure: Callable[[], None]) -> None:
        """Remove the node, its lock dir and our contender at once.

        If someone queued for the lock meanwhile the removal fails as a whole
        (NotEmpty): then the node is written as it is (`deleted`: its server is
        gone) and `on_failure` runs (on kazoo's reader thread).
        """
        tx = self.kazoo.transaction()
        contender = locks.contender_path(lock) if lock is not None else None
        if contender is not None:
            tx.delete(contender)
            tx.delete(lock.path)
            locks.forget(lock)
        tx.delete(paths.node(node.id))

        def done(res) -> None:
            if _failed(res) is not None:
                self.cache.write_node(node.id, node.to_json())
                on_failure()
        self.cache.commit_own(tx, [], removes=(node.id,), then=done)

    @_waits("remove_node")
    def remove_node(self, node_id: str) -> None:
        """Remove a node record and its lock dir (waits; raises VersionConflict if in use)."""
        nodes.delete_node(self.kazoo, node_id)

    @_waits("create_node")
    def create_node(self, node: Node) -> Lock:
        """Write a new node and lock it (waits for both). The cache takes the node
        from the create's answer (no read back)."""
        path, stat = self.cache.create_node(node.to_json()).get()
        node.id, node.version = paths.basename(path), stat.version
        return locks.lock_new_node(self.kazoo, node.id, identifier=self.identifier)

    def create_node_async(self, node: Node):
        """Send a new node's create; the answer wakes the loop (`paths.basename` of its path
        is the id)."""
        return self.cache.create_node(node.to_json(), then=lambda _: self.wake())

    def lock_fresh_node_async(self, node_id: str) -> locks.LockAttempt:
        """Send the lock of a node we just created; the answer wakes the loop."""
        attempt = locks.start_fresh_node_lock(self.kazoo, node_id, self.identifier)
        attempt.on_answer(self.wake)
        return attempt

    @_waits("finish_fresh_node_lock")
    def finish_fresh_node_lock(self, attempt: locks.LockAttempt, node_id: str) -> Lock:
        """The lock `lock_fresh_node_async` sent, taken the general way if the fresh
        transaction lost (waits then). Raises LockFailed or NotFound."""
        if locks.finish_fresh_lock(attempt) == "ok":
            return attempt.lock
        return locks.lock_new_node(self.kazoo, node_id, identifier=self.identifier)

    @_waits("lock_node")
    def lock_node(self, node_id: str) -> Lock:
        """Lock a node now (waits; raises LockFailed or NotFound)."""
        return locks.lock_node(self.kazoo, node_id, identifier=self.identifier)

    def lock_node_async(self, node_id: str) -> locks.LockAttempt:
        """Send a node lock attempt (one request); its answer wakes the loop."""
        attempt = self._send_node_lock(node_id)
        attempt.on_answer(self.wake)
        return attempt

    def _send_node_lock(self, node_id: str) -> locks.LockAttempt:
        return locks.start_node_lock(self.kazoo, node_id, self.identifier,
                                     fresh=self._never_locked(node_id))

    def _never_locked(self, node_id: str) -> bool:
        """No lock dir yet, as the cache tells: the lock is sent fresh (locks.py)."""
        return not self.cache.has_node_lock_dir(node_id)

    def settle_node_lock(self, attempt: locks.LockAttempt, node_id: str) -> Lock | None:
        return locks.settle_node_lock(self.kazoo, attempt, node_id, self.identifier)

    def lock_and_write_async(self, node: Node, version: int) -> locks.LockAttempt:
        """Send a node's lock and a write of `node` over `version` as one transaction
        (a deletion's lock with its `deleting` write); the answer wakes the loop.
        `settle_lock_and_write` collects it."""
        fresh = self._never_locked(node.id)
        lock, tx = locks.node_lock_tx(self.kazoo, node.id, self.identifier, fresh)
        data = node.to_json()
        tx.set_data(paths.node(node.id), data, version)
        at = len(tx.operations) - 1
        pending = self.cache.commit_own(tx, [(zkcache.NODE, node.id, data, at)],
                                        then=lambda _: self.wake())
        return locks.LockAttempt(lock, pending, fresh=fresh)

    def settle_lock_and_write(self, attempt: locks.LockAttempt, node_id: str):
        """(lock, the write's stat) of `lock_and_write_async`; (None, None): held by
        someone, changed or gone; (lock, None): locked the general way, not written."""
        return locks.settle_with_write(self.kazoo, attempt, node_id, self.identifier)

    @_waits("read_node")
    def read_node(self, node_id: str) -> Node | None:
        return nodes.get_node(self.kazoo, node_id)

    def withdraw_lock(self, lock: Lock) -> None:
        """A lock attempt that will not be settled: delete its contender if it was made
        (once reconnected, if need be)."""
        locks.withdraw_lost(self.kazoo, lock)

    def unlock_async(self, lock: Lock | None) -> None:
        locks.release_async(self.kazoo, lock)

    def unlock(self, lock: Lock | None) -> None:
        locks.release(lock)

    def unallocate_async(self, seen: Node) -> bool:
        """Give a ready node back to the pool: lock, clear `allocated_to`, unlock.

        The write is conditional on the version the cache showed (ready, allocated
        to a request that is gone), so it fails, changing nothing, if anything
        happened since; lock and write are pipelined, the commit is not waited for.
        False: the node is locked by someone, or gone.
        """
        kazoo = self.kazoo
        lock = locks.settle_node_lock(kazoo, self._send_node_lock(seen.id), seen.id,
                                      self.identifier)
        if lock is None:
            return False
        node = dataclasses.replace(seen, allocated_to=None)
        contender = locks.contender_path(lock)
        tx = kazoo.transaction()
        tx.set_data(paths.node(node.id), node.to_json(), seen.version)
        tx.delete(contender)
        locks.forget(lock)

        def done(result) -> None:
            if _failed(result) is not None:   # nothing was written: let go of our lock
                locks.delete_contender_async(kazoo, contender)
        tx.commit_async().rawlink(Inline(done))
        return True

    # -- requests -----------------------------------------------------------------------

    @_waits("lock_request")
    def lock_request(self, request_id: str) -> Lock:
        """Lock a request now (waits; raises LockFailed)."""
        return locks.lock_request(self.kazoo, request_id, identifier=self.identifier)

    def lock_request_async(self, request_id: str) -> locks.LockAttempt:
        return locks.start_request_lock(self.kazoo, request_id, self.identifier)

    @_waits("finish_request_lock")
    def finish_request_lock(self, request_id: str, attempt: locks.LockAttempt) -> Lock:
        """The held lock (may wait a round trip more). Raises LockFailed."""
        return locks.finish_request_lock(self.kazoo, request_id, self.identifier, attempt)

    @_waits("request_exists")
    def request_exists(self, request_id: str) -> bool:
        """Is the request there now (waits a round trip)?"""
        return self.kazoo.exists(paths.request(request_id)) is not None

    @_waits("read_request")
    def read_request(self, request_id: str) -> NodeRequest | None:
        return requests.get_request(self.kazoo, request_id)

    @_waits("write_request")
    def write_request(self, req: NodeRequest, lock: Lock | None = None) -> None:
        """Write a request we hold locked, over the version we read (waits).

        With `lock`, only while our contender of it exists (fencing). Raises
        VersionConflict, NotFound, or LockFailed when our lock is gone.
        """
        contender = locks.contender_path(lock) if lock is not None else None
        if contender is None:
            requests.update_request(self.kazoo, req)
            return
        checked, written = self._fenced_request_write(contender, req).get()
        # A failed transaction answers the failing operation's error and RolledBackError
        # for the others: a rolled-back check passed.
        if isinstance(checked, Exception) and not isinstance(checked, RolledBackError):
            raise errors.LockFailed(f"request {req.id}: our lock of it is gone ({checked!r}); "
                                    "not written")
        if isinstance(written, BadVersionError):
            raise errors.VersionConflict(f"request {req.id} changed since version "
                                         f"{req.version}")
        if isinstance(written, NoNodeError):
            raise errors.NotFound(f"request {req.id} was deleted (cancelled)")
        if isinstance(written, Exception):
            raise written
        req.version = written.version

    def write_request_async(self, req: NodeRequest, lock: Lock | None = None) -> None:
        """Write a request we hold locked (pending) without waiting; `req.version` becomes
        the version the write will make, so the fulfil write that follows checks it.
        With `lock`, only while our contender of it exists (fencing)."""
        contender = locks.contender_path(lock) if lock is not None else None
        if contender is None:
            self.kazoo.set_async(paths.request(req.id), req.to_json(), req.version)
        else:
            self._fenced_request_write(contender, req)
        req.version += 1

    def _fenced_request_write(self, contender: str, req: NodeRequest):
        """Send the fenced write of a request; the cache takes what it wrote from the
        answer (no read back). Returns kazoo's result: [check, stat]."""
        data = req.to_json()
        tx = self._fenced_write(contender, paths.request(req.id), data, req.version)
        return self.cache.commit_own(tx, [(zkcache.REQUEST, req.id, data, 1)])

    # -- the hand-over transaction ----------------------------------------------------

    def commit_claims(self, claims: list[Claim]) -> bool:
        """Write the allocations and unlock the nodes atomically (waits)."""
        return self.finish_commit(claims, None, self.commit_claims_async(claims))

    def commit_claims_async(self, claims: list[Claim], request: NodeRequest | None = None,
                            request_lock: Lock | None = None):
        """Send one transaction: every claim's allocation (over the version the cache
        showed) and node unlock, and with `request`, its fulfilment and unlock.
        All of it happens or none. `finish_commit` collects the answer."""
        tx = self.kazoo.transaction()
        writes = []
        for claim in claims:
            data = claim.node.to_json()
            writes.append((zkcache.NODE, claim.node.id, data, len(tx.operations)))
            tx.set_data(paths.node(claim.node.id), data, claim.node.version)
            tx.delete(locks.contender_path(claim.lock))
        if request is not None:
            data = request.to_json()
            writes.append((zkcache.REQUEST, request.id, data, len(tx.operations)))
            tx.set_data(paths.request(request.id), data, request.version)
            contender = locks.contender_path(request_lock) if request_lock else None
            if contender is not None:
                tx.delete(contender)
        return self.cache.commit_own(tx, writes)

    @_waits("finish_commit")
    def finish_commit(self, claims: list[Claim], request_lock: Lock | None, pending) -> bool:
        """True when the transaction was applied; otherwise the node locks are let go."""
        try:
            failed = any(isinstance(r, Exception) for r in pending.get())
        except Exception:
            failed = True
        if failed:
            self.release_claims(claims)
            return False
        for claim in claims:
            locks.forget(claim.lock)
        locks.forget(request_lock)
        return True

    def release_claims(self, claims: list[Claim]) -> None:
        for claim in claims:
            self.unlock_async(claim.lock)
