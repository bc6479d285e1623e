"""Node znodes: create with a sequential id, read, version-checked update, recursive delete."""

from __future__ import annotations

import logging

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoNodeError, NotEmptyError

from nodepool.errors import NotFound, ProtocolError, VersionConflict
from nodepool.model import Node
from nodepool.zk import paths

log = logging.getLogger("nodepool.zk.nodes")


def create_node(kazoo: KazooClient, node: Node) -> Node:
    """Write a new node; its id is the 10-digit sequence ZooKeeper assigns."""
    path = kazoo.create(paths.node_create_prefix(), node.to_json(), sequence=True, makepath=True)
    node.id = paths.basename(path)
    node.version = 0
    return node


def get_node(kazoo: KazooClient, node_id: str) -> Node | None:
    """The node, or None when it does not exist (or holds no data yet)."""
    try:
        raw, stat = kazoo.get(paths.node(node_id))
    except NoNodeError:
        return None
    if not raw:
        return None
    return Node.from_json(node_id, raw, stat.version)


def update_node(kazoo: KazooClient, node: Node, check_version: bool = True) -> Node:
    """Write the whole node; with `check_version`, only over the version we read."""
    version = node.version if check_version else -1
    try:
        stat = kazoo.set(paths.node(node.id), node.to_json(), version=version)
    except BadVersionError:
        raise VersionConflict(f"node {node.id} changed since version {node.version}") from None
    except NoNodeError:
        raise NotFound(f"node {node.id} does not exist") from None
    node.version = stat.version
    return node


def delete_node(kazoo: KazooClient, node_id: str) -> None:
    """Remove a node and its lock directory; deleting what is gone is success.

    Done as one transaction over the children we saw, retried if a contender
    appeared meanwhile (ZooKeeper then says NotEmpty and nothing is deleted).
    """
    node_path = paths.node(node_id)
    lock_path = paths.node_lock(node_id)
    for _ in range(10):
        try:
            children = kazoo.get_children(node_path)
        except NoNodeError:
            return
        tx = kazoo.transaction()
        for child in children:
            child_path = f"{node_path}/{child}"
            if child_path == lock_path:
                try:
                    for contender in kazoo.get_children(lock_path):
                        tx.delete(f"{lock_path}/{contender}")
                except NoNodeError:
                    continue
            tx.delete(child_path)
        tx.delete(node_path)
        results = tx.commit()
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return
        if any(isinstance(r, NoNodeError) for r in failures) and kazoo.exists(node_path) is None:
            return
        if not any(isinstance(r, (NotEmptyError, NoNodeError)) for r in failures):
            raise failures[0]
    raise VersionConflict(f"node {node_id}: could not delete, its children keep changing")


def list_node_ids(kazoo: KazooClient) -> list[str]:
    try:
        return sorted(kazoo.get_children(paths.NODES))
    except NoNodeError:
        return []


def get_nodes(kazoo: KazooClient, node_ids: list[str] | None = None) -> list[Node]:
    """Read many nodes with pipelined calls (one round trip's latency, not one per node)."""
    if node_ids is None:
        node_ids = list_node_ids(kazoo)
    pending = [(nid, kazoo.get_async(paths.node(nid))) for nid in node_ids]
    nodes = []
    for nid, result in pending:
        try:
            raw, stat = result.get()
        except NoNodeError:
            continue
        if not raw:
            continue
        try:
            nodes.append(Node.from_json(nid, raw, stat.version))
        except ProtocolError as e:
            log.warning("Skipping unreadable node %s: %s", nid, e)
    return nodes
