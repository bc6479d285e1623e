"""Request znodes: the requestor's create, the launcher's locked read-modify-write."""

from __future__ import annotations

import logging
import time

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoNodeError, NotEmptyError

from nodepool.errors import NotFound, ProtocolError, VersionConflict
from nodepool.model import NodeRequest, RequestState, is_request_id
from nodepool.zk import paths

log = logging.getLogger("nodepool.zk.requests")


def submit_request(kazoo: KazooClient, request: NodeRequest, priority: int = 200) -> NodeRequest:
    """Create a request as a requestor does: sequential under its priority prefix.

    Launchers never call this (they only `set` requests); the CLI's `request`
    command, tests and the benchmark act as requestors.
    """
    now = time.time()
    request.state = RequestState.REQUESTED
    request.state_time = now
    if request.created_time is None:
        request.created_time = now
    path = kazoo.create(paths.request_prefix(priority), request.to_json(),
                        sequence=True, makepath=True)
    request.id = paths.basename(path)
    request.version = 0
    return request


def get_request(kazoo: KazooClient, request_id: str) -> NodeRequest | None:
    """The request, or None when it does not exist (the requestor cancelled it)."""
    try:
        raw, stat = kazoo.get(paths.request(request_id))
    except NoNodeError:
        return None
    return NodeRequest.from_json(request_id, raw, stat.version)


def update_request(kazoo: KazooClient, request: NodeRequest) -> NodeRequest:
    """Write the whole request over the version we read (the caller holds its lock).

    NoNode means the requestor deleted it: NotFound, which callers treat as cancelled.
    """
    try:
        stat = kazoo.set(paths.request(request.id), request.to_json(), version=request.version)
    except BadVersionError:
        raise VersionConflict(f"request {request.id} changed since version {request.version}") \
            from None
    except NoNodeError:
        raise NotFound(f"request {request.id} was deleted (cancelled)") from None
    request.version = stat.version
    return request


def delete_request(kazoo: KazooClient, request_id: str) -> None:
    """Delete a request (requestor side); deleting what is gone is success."""
    try:
        kazoo.delete(paths.request(request_id))
    except NoNodeError:
        pass


def list_request_ids(kazoo: KazooClient) -> list[str]:
    try:
        children = kazoo.get_children(paths.REQUESTS)
    except NoNodeError:
        return []
    return [c for c in children if is_request_id(c)]


def get_requests(kazoo: KazooClient) -> list[NodeRequest]:
    """Every request, in protocol service order, read with pipelined calls."""
    pending = [(rid, kazoo.get_async(paths.request(rid))) for rid in list_request_ids(kazoo)]
    requests = []
    for rid, result in pending:
        try:
            raw, stat = result.get()
        except NoNodeError:
            continue
        try:
            requests.append(NodeRequest.from_json(rid, raw, stat.version))
        except ProtocolError as e:
            log.warning("Skipping unreadable request %s: %s", rid, e)
    requests.sort(key=lambda r: r.sort_key)
    return requests


def delete_stale_request_locks(kazoo: KazooClient, older_than: float, now: float | None = None) -> list[str]:
    """Remove lock dirs of requests that no longer exist and are older than the grace period."""
    now = time.time() if now is None else now
    try:
        lock_ids = kazoo.get_children(paths.REQUEST_LOCKS)
    except NoNodeError:
        return []
    existing = set(list_request_ids(kazoo))
    removed = []
    for rid in lock_ids:
        if rid in existing:
            continue
        path = paths.request_lock(rid)
        try:
            _, stat = kazoo.get(path)
            if now - stat.mtime / 1000.0 < older_than or stat.numChildren:
                continue
            kazoo.delete(path, version=stat.version)
            removed.append(rid)
        except (NoNodeError, BadVersionError, NotEmptyError):
            continue  # gone, or someone is locking it right now
    return removed
