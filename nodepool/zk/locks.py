"""Node and request locks: exactly kazoo's `Lock` recipe, which Zuul also uses."""

from __future__ import annotations

import re

from kazoo.client import KazooClient
from kazoo.exceptions import LockTimeout, NodeExistsError, NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.errors import LockFailed, NotFound
from nodepool.zk import paths

# kazoo's contender names: `<uuid hex>__lock__<10-digit sequence>`.
_CONTENDER = re.compile(r"__lock__\d{10}$")


def is_contender(name: str) -> bool:
    return bool(_CONTENDER.search(name))


def _acquire(
    kazoo: KazooClient,
    lock: Lock,
    lock_dir: str,
    parent: str | None,
    blocking: bool,
    timeout: float | None,
    what: str,
) -> Lock:
    """Acquire `lock`, creating its directory only while `parent` exists.

    The recipe's own ensure_path would re-create a node znode that someone
    just deleted (and with it a ghost node). So we tell the recipe the path
    exists, which costs no round trip when it does, and make the directory
    ourselves only after a NoNode says it is missing.
    """
    lock.assured_path = True
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
    return _acquire(kazoo, lock, lock_dir, None, blocking, timeout, f"request {request_id}")


def release(lock: Lock | None) -> None:
    """Release a lock whose directory may already be gone (node deleted under it)."""
    if lock is None or not lock.is_acquired:
        return
    try:
        lock.release()
    except NoNodeError:
        lock.is_acquired = False


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
