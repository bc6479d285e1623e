"""Node and request locks: exactly kazoo's `Lock` recipe, which Zuul also uses."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    LockTimeout,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.recipe.lock import Lock

from nodepool.errors import LockFailed, NotFound
from nodepool.zk import paths
from nodepool.zk.kazooext.handler import Inline

# kazoo's contender names: `<uuid hex>__lock__<10-digit sequence>`.
_CONTENDER = re.compile(r"__lock__\d{10}$")


def is_contender(name: str) -> bool:
    return bool(_CONTENDER.search(name))


def _acquire_now(kazoo: KazooClient, lock: Lock, lock_dir: str, fresh_first: bool,
                 make_parent: bool, what: str) -> Lock:
    """Non-blocking: one round trip in the common case, whichever way the dir is.

    `fresh_first` says which is likelier: no lock dir yet (a new request) or
    an existing one (a node that was locked before). Without `make_parent`, a
    missing parent means the thing itself is gone (a deleted node).
    """
    for attempt in range(4):
        if fresh_first == (attempt % 2 == 0):
            outcome = _fresh_lock(kazoo, lock, lock_dir)
            if outcome == "ok":
                return lock
            if outcome == "no-parent":
                if not make_parent:
                    raise NotFound(f"{what} does not exist")
                kazoo.ensure_path(lock_dir.rsplit("/", 1)[0])
            continue
        try:
            quick = try_lock(kazoo, lock_dir, lock.data.decode())
        except NoNodeError:
            continue
        if quick is None:
            raise LockFailed(f"{what} is locked by someone else")
        return quick
    raise LockFailed(f"{what}: its lock directory keeps changing")


def _acquire(
    kazoo: KazooClient,
    lock: Lock,
    lock_dir: str,
    parent: str | None,
    blocking: bool,
    timeout: float | None,
    what: str,
    fresh_first: bool = False,
) -> Lock:
    """Acquire `lock`, creating its directory only while `parent` exists.

    The recipe's own ensure_path would re-create a node znode that someone
    just deleted (and with it a ghost node). So we tell the recipe the path
    exists, which costs no round trip when it does, and make the directory
    ourselves only after a NoNode says it is missing.
    """
    lock.assured_path = True
    if not blocking:
        return _acquire_now(kazoo, lock, lock_dir, fresh_first, parent is None, what)
    for _ in range(3):
        try:
            got = lock.acquire(blocking=blocking, timeout=timeout)
        except LockTimeout:
            raise LockFailed(f"{what} is locked by someone else (waited {timeout}s)") from None
        except NoNodeError:
            lock.create_tried = False
            try:
                kazoo.create(lock_dir, makepath=parent is None)
            except NodeExistsError:
                pass
            except NoNodeError:
                raise NotFound(f"{what} does not exist") from None
            continue
        if not got:
            raise LockFailed(f"{what} is locked by someone else")
        return lock
    raise LockFailed(f"{what}: lock directory keeps vanishing")


def _fresh_lock(kazoo: KazooClient, lock: Lock, lock_dir: str) -> str:
    """Take a lock nobody has used yet in one round trip: "ok", "exists" or "no-parent".

    The lock directory and our contender are created in one transaction: when
    the directory did not exist, no one else can be a contender, so we hold
    the lock (the same znodes kazoo's recipe makes). Otherwise nothing was
    created.
    """
    return finish_fresh_lock(send_fresh_lock(kazoo, lock, lock_dir))


def send_fresh_lock(kazoo: KazooClient, lock: Lock, lock_dir: str) -> LockAttempt:
    """Send `_fresh_lock`'s transaction without waiting."""
    tx = kazoo.transaction()
    lock_ops(tx, lock, fresh=True)
    return LockAttempt(lock, tx.commit_async(), fresh=True)


def lock_ops(tx, lock: Lock, fresh: bool) -> None:
    """Add a one-request lock of `lock`'s dir to the transaction `tx`: `fresh`, the
    dir made with our contender (`_fresh_lock`); else the empty dir deleted, made
    again, and our contender (`start_lock`). Our contender is the last op."""
    lock.assured_path = True
    if not fresh:
        tx.delete(lock.path)
    tx.create(lock.path)
    tx.create(lock.create_path, lock.data, ephemeral=True, sequence=True)


def start_fresh_node_lock(kazoo: KazooClient, node_id: str,
                          identifier: str = "") -> LockAttempt:
    """Send the fresh-lock transaction of a node just created (no waiting)."""
    lock_dir = paths.node_lock(node_id)
    return send_fresh_lock(kazoo, Lock(kazoo, lock_dir, identifier), lock_dir)


def finish_fresh_lock(attempt: LockAttempt) -> str:
    """"ok" (and its lock is held), "exists" or "no-parent", from the transaction's answer.

    A lost answer (ConnectionLoss) is raised after `withdraw_lost` was queued: the
    transaction may have been applied, leaving a contender nobody knows of.
    """
    results = _answer(attempt.lock.client, attempt)
    if isinstance(results[0], NoNodeError):
        return "no-parent"
    if isinstance(results[0], Exception) or isinstance(results[1], Exception):
        return "exists"
    _held(attempt, results)
    return "ok"


def _answer(kazoo: KazooClient, attempt: LockAttempt) -> list:
    """The lock transaction's results. A lost answer (ConnectionLoss) is raised after
    `withdraw_lost` was queued: it may have been applied, leaving a contender
    nobody knows of."""
    try:
        return attempt.pending.get()
    except ConnectionLoss:
        withdraw_lost(kazoo, attempt.lock)
        raise


def _held(attempt: LockAttempt, results: list) -> Lock:
    """The transaction applied: its lock is held by the contender it created."""
    lock = attempt.lock
    mine = results[1 if attempt.fresh else 2]
    lock.node, lock.create_tried, lock.is_acquired = mine[len(lock.path) + 1:], True, True
    return lock


@dataclasses.dataclass(eq=False)
class LockAttempt:
    """A lock sent as one transaction, not yet answered: of an existing lock dir
    (`start_lock`), or `fresh`: the dir made with our contender (`send_fresh_lock`)."""

    lock: Lock
    pending: Any     # kazoo async result of the transaction
    fresh: bool = False

    def ready(self) -> bool:
        return self.pending.ready()

    def on_answer(self, callback) -> None:
        """Call `callback()` (on kazoo's reader thread) once the transaction is answered."""
        self.pending.rawlink(Inline(lambda _: callback()))


def contender_path(lock: Lock) -> str | None:
    """The znode of the contender by which we hold `lock` (None: not held)."""
    if not lock.is_acquired or lock.node is None:
        return None
    return f"{lock.path}/{lock.node}"


def forget(lock: Lock | None) -> None:
    """Our contender was deleted in a transaction of ours: the lock is no longer held."""
    if lock is not None:
        lock.is_acquired, lock.node = False, None


def start_lock(kazoo: KazooClient, lock_dir: str, identifier: str = "") -> LockAttempt:
    """Send a lock of an existing lock dir in one request; `settle` decides.

    One transaction deletes the dir, makes it again and creates our contender
    in it. ZooKeeper deletes only a znode without children, so it applies
    exactly when nobody holds or waits for the lock, and then our contender is
    the only one, the lowest: we hold the lock by kazoo's rule. Nobody else
    ever sees the dir missing (a transaction is one change), and a contender
    created after ours has a higher sequence in the new dir. When the dir has
    any child nothing is changed. Before, this was a contender create and a
    listing (two requests, and a loser's contender to delete again).
    """
    lock = Lock(kazoo, lock_dir, identifier)
    tx = kazoo.transaction()
    lock_ops(tx, lock, fresh=False)
    return LockAttempt(lock, tx.commit_async())


def settle(kazoo: KazooClient, attempt: LockAttempt) -> Lock | None:
    """Did the lock `start_lock` sent win? None: the lock dir has a child (someone
    holds or waits for the lock). Raises NoNodeError when the lock dir does not exist.

    A lost answer (ConnectionLoss) is raised after `withdraw_lost` was queued.
    """
    results = _answer(kazoo, attempt)
    if isinstance(results[0], NoNodeError):
        raise NoNodeError(attempt.lock.path)
    if any(isinstance(r, Exception) for r in results):   # NotEmptyError: not ours
        return None
    return _held(attempt, results)


def start_node_lock(kazoo: KazooClient, node_id: str, identifier: str = "",
                    fresh: bool = False) -> LockAttempt:
    """Send a node's lock in one request. `fresh`: the node was never locked (no lock
    dir, as the cache tells): the dir and our contender are made together instead."""
    lock, tx = node_lock_tx(kazoo, node_id, identifier, fresh)
    return LockAttempt(lock, tx.commit_async(), fresh=fresh)


def node_lock_tx(kazoo: KazooClient, node_id: str, identifier: str, fresh: bool):
    """A node's lock and a transaction holding its lock ops (`lock_ops`), not sent: a
    caller may add a write of the node after them."""
    lock = Lock(kazoo, paths.node_lock(node_id), identifier)
    tx = kazoo.transaction()
    lock_ops(tx, lock, fresh)
    return lock, tx


def settle_node_lock(kazoo: KazooClient, attempt: LockAttempt, node_id: str,
                     identifier: str = "") -> Lock | None:
    """Settle a lock `start_node_lock` sent. None: someone else holds it, or the node
    is gone. When the lock dir turned out to be the other way than the attempt
    assumed, the node is locked the general way (waits)."""
    try:
        if attempt.fresh:
            outcome = finish_fresh_lock(attempt)
            if outcome != "exists":
                return attempt.lock if outcome == "ok" else None
            return lock_node(kazoo, node_id, identifier=identifier)
        try:
            return settle(kazoo, attempt)
        except NoNodeError:
            return lock_new_node(kazoo, node_id, identifier=identifier)
    except (LockFailed, NotFound):
        return None


def settle_with_write(kazoo: KazooClient, attempt: LockAttempt, node_id: str,
                      identifier: str = "") -> tuple[Lock | None, Any]:
    """Settle a node lock sent with a write of the node after its ops (`lock_ops`, then
    the write, one transaction): (the lock, the write's stat) when both applied;
    (None, None) when the write's check failed (the node changed or is gone); else,
    the lock part having failed, (the lock as `settle_node_lock` takes it, None)."""
    results = _answer(kazoo, attempt)
    last = results[-1]
    if isinstance(last, (BadVersionError, NoNodeError)):
        return None, None
    if isinstance(last, Exception):
        return settle_node_lock(kazoo, attempt, node_id, identifier), None
    return _held(attempt, results), last


def try_lock(kazoo: KazooClient, lock_dir: str, identifier: str = "") -> Lock | None:
    """Non-blocking acquire of an existing lock dir in one round trip's latency."""
    return settle(kazoo, start_lock(kazoo, lock_dir, identifier))


def lock_node(
    kazoo: KazooClient,
    node_id: str,
    blocking: bool = False,
    timeout: float | None = None,
    identifier: str = "",
) -> Lock:
    """Lock a node; raises NotFound when the node is gone, LockFailed when held."""
    lock_dir = paths.node_lock(node_id)
    lock = Lock(kazoo, lock_dir, identifier)
    return _acquire(kazoo, lock, lock_dir, paths.node(node_id), blocking, timeout,
                    f"node {node_id}")


def lock_new_node(kazoo: KazooClient, node_id: str, identifier: str = "") -> Lock:
    """Lock a node whose lock dir does not exist yet (just created, or never locked):
    the fresh-lock transaction goes first (one round trip instead of two)."""
    lock_dir = paths.node_lock(node_id)
    lock = Lock(kazoo, lock_dir, identifier)
    return _acquire(kazoo, lock, lock_dir, paths.node(node_id), False, None,
                    f"node {node_id}", fresh_first=True)


def lock_request(
    kazoo: KazooClient,
    request_id: str,
    blocking: bool = False,
    timeout: float | None = None,
    identifier: str = "",
) -> Lock:
    """Lock a request in its own tree (so the requestor may delete the request meanwhile)."""
    lock_dir = paths.request_lock(request_id)
    lock = Lock(kazoo, lock_dir, identifier)
    return _acquire(kazoo, lock, lock_dir, None, blocking, timeout, f"request {request_id}",
                    fresh_first=True)


def lock_dir(
    kazoo: KazooClient,
    lock_path: str,
    what: str,
    parent: str | None = None,
    blocking: bool = False,
    timeout: float | None = None,
    identifier: str = "",
) -> Lock:
    """Take the kazoo `Lock` at `lock_path` (image locks, nodepool/zk/image_locks.py).

    With `parent`, the lock is taken only while `parent` exists (NotFound
    otherwise: a lock must not re-create what someone deleted); without it,
    missing directories are made, as the recipe does. LockFailed when held.
    """
    lock = Lock(kazoo, lock_path, identifier)
    return _acquire(kazoo, lock, lock_path, parent, blocking, timeout, what)


def release(lock: Lock | None) -> None:
    """Release a lock whose directory may already be gone (node deleted under it)."""
    if lock is None or not lock.is_acquired:
        return
    try:
        lock.release()
    except NoNodeError:
        lock.is_acquired = False


def release_async(kazoo: KazooClient, lock: Lock | None) -> None:
    """Release without waiting for the answer.

    ZooKeeper runs one session's requests in order, so a write issued after
    this still lands after the unlock (the fulfil write relies on that).
    """
    if lock is None or not lock.is_acquired or lock.node is None:
        return
    delete_contender_async(kazoo, f"{lock.path}/{lock.node}")
    forget(lock)


def _when_connected(kazoo: KazooClient, job) -> None:
    """`job()` now, or once reconnected on the same session (NodepoolKazooClient)."""
    defer = getattr(kazoo, "when_connected", None)
    if defer is None:
        job()
    else:
        defer(job)


def _connection_trouble(result) -> bool:
    return not result.successful() and isinstance(result.exception,
                                                  (ConnectionLoss, SessionExpiredError))


def delete_contender_async(kazoo: KazooClient, path: str) -> None:
    """Delete one of our contenders without waiting, for sure: sent when connected, and
    again once reconnected on the same session if the connection took the answer (the
    delete may not have been applied; a new session has no contender of ours left).
    Gone is done."""
    def answered(result) -> None:    # on kazoo's reader thread: nothing that waits
        if _connection_trouble(result):
            delete_contender_async(kazoo, path)
    _when_connected(kazoo, lambda: kazoo.delete_async(path).rawlink(Inline(answered)))


def withdraw_lost(kazoo: KazooClient, lock: Lock) -> None:
    """A contender create of ours whose answer was lost may exist all the same, held by
    our session for ever (a lock no one would ever release). Once reconnected, list the
    lock dir and delete every child named with this lock's prefix (kazoo's recipe finds
    its own node the same way)."""
    prefix = lock.prefix

    def listed(result) -> None:      # on kazoo's reader thread
        if result.successful():
            for child in result.get():
                if child.startswith(prefix):
                    delete_contender_async(kazoo, f"{lock.path}/{child}")
        elif _connection_trouble(result):
            withdraw_lost(kazoo, lock)
    forget(lock)
    _when_connected(kazoo, lambda: kazoo.get_children_async(lock.path).rawlink(Inline(listed)))


def node_lock_contenders(kazoo: KazooClient, node_id: str) -> list[str]:
    """Names of the lock contenders of a node (any = the node is in use by someone)."""
    try:
        return sorted(c for c in kazoo.get_children(paths.node_lock(node_id)) if is_contender(c))
    except NoNodeError:
        return []


def locked_node_ids(kazoo: KazooClient, node_ids: list[str]) -> set[str]:
    """Which of `node_ids` have lock contenders, read with pipelined calls."""
    pending = [(nid, kazoo.get_children_async(paths.node_lock(nid))) for nid in node_ids]
    locked = set()
    for nid, result in pending:
        try:
            if any(is_contender(c) for c in result.get()):
                locked.add(nid)
        except NoNodeError:
            continue
    return locked


def start_request_lock(kazoo: KazooClient, request_id: str,
                       identifier: str = "") -> LockAttempt:
    """Send a request's fresh-lock transaction (no waiting).

    Started for many requests at once, their round trips overlap; `finish_request_lock`
    collects each.
    """
    lock_dir = paths.request_lock(request_id)
    return send_fresh_lock(kazoo, Lock(kazoo, lock_dir, identifier), lock_dir)


def finish_request_lock(kazoo: KazooClient, request_id: str, identifier: str,
                        started: LockAttempt) -> Lock:
    """The held lock. Raises LockFailed when someone holds it."""
    lock = started.lock
    if finish_fresh_lock(started) != "ok":
        # Used before, or no parent yet: the general way.
        lock = lock_request(kazoo, request_id, identifier=identifier)
    return lock
