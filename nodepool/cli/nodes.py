"""CLI commands on nodes: list, delete, hold, info (a provider: pools, images, nodes)."""

from __future__ import annotations

import argparse
import json
import threading
import time

from kazoo.exceptions import NoNodeError

from nodepool import listings
from nodepool.cli.output import age_of, print_json, print_table
from nodepool.errors import InvalidTransition, LockFailed, NodepoolError, NotFound
from nodepool.model import Node, NodeState
from nodepool.zk import components, images, locks, nodes, paths
from nodepool.zk.client import ZooKeeperClient


def nodes_table(found: list[Node], locked: set[str], detail: bool = False,
                now: float | None = None, fields: list[str] | None = None) -> str:
    """`nodepool list`'s table: the web's /node-list columns (listings.NODES); `fields`
    (column keys) chooses them instead of `detail`."""
    columns = listings.NODES.select(fields or (None if detail else listings.NODE_BRIEF_KEYS))
    return listings.table_text(columns, listings.node_rows(found, locked.__contains__, now))


def _json(node: Node, locked: bool, now: float) -> dict:
    data = node.to_dict()
    data.update(id=node.id, locked=locked, age=round(age_of(node.state_time, now), 3))
    return data


def _nodes_with_locks(zk: ZooKeeperClient, provider: str | None = None):
    found = nodes.get_nodes(zk.kazoo)
    if provider is not None:
        found = [n for n in found if n.provider == provider]
    locked = locks.locked_node_ids(zk.kazoo, [n.id for n in found])
    return found, locked


def cmd_list(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    fields = getattr(args, "fields", None)
    if fields:
        try:
            listings.NODES.select(fields)   # before reading anything
        except ValueError as e:
            raise NodepoolError(str(e)) from None
    found, locked = _nodes_with_locks(zk)
    now = time.time()
    if args.json:
        rows = [_json(n, n.id in locked, now) for n in found]
        if fields:
            rows = [{k: v for k, v in row.items() if k in fields} for row in rows]
        print_json(rows)
        return 0
    print(nodes_table(found, locked, args.detail, now, fields))
    return 0


_STATE_WORDS = {NodeState.HOLD: "held", NodeState.IN_USE: "in use"}


def _said(state: NodeState) -> str:
    """A node state as a sentence says it ("held", not "hold")."""
    return _STATE_WORDS.get(state, state.value)


def _change_state(zk: ZooKeeperClient, node_id: str, new: NodeState, verb: str,
                  **fields) -> Node:
    """Lock the node, set `new` (and fields) over the version read under the lock, unlock."""
    try:
        lock = locks.lock_node(zk.kazoo, node_id, identifier="nodepool-cli")
    except NotFound:
        raise NotFound(f"node {node_id} not found") from None
    except LockFailed:
        raise LockFailed(
            f"node {node_id} is locked by someone else (a launcher or a CI job is using it); "
            f"cannot {verb} it now") from None
    try:
        node = nodes.get_node(zk.kazoo, node_id)
        if node is None:
            raise NotFound(f"node {node_id} not found")
        try:
            node.set_state(new)
        except InvalidTransition:
            if node.state == new:
                raise NodepoolError(f"node {node_id} is already {_said(new)}") from None
            raise NodepoolError(f"node {node_id} is {_said(node.state)}; cannot {verb} it") \
                from None
        for key, value in fields.items():
            setattr(node, key, value)
        nodes.update_node(zk.kazoo, node)
        return node
    finally:
        locks.release(lock)


def cmd_delete(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    node = _change_state(zk, args.id, NodeState.DELETING, "delete")
    if not getattr(args, "now", False):
        print(f"Node {node.id} marked for deletion; the launcher of provider "
              f"{node.provider or '?'} deletes its server and record.")
        return 0
    print(f"Node {node.id} marked for deletion; waiting up to {args.timeout:g}s for the "
          f"launcher of provider {node.provider or '?'} to delete it", flush=True)
    if not _wait_gone(zk, node.id, args.timeout):
        raise NodepoolError(f"node {node.id} still exists after {args.timeout:g}s (is a "
                            f"launcher serving provider {node.provider}? see `nodepool info "
                            f"{node.provider}`); it stays marked for deletion")
    print(f"Node {node.id} deleted.")
    return 0


def _wait_gone(zk: ZooKeeperClient, node_id: str, timeout: float) -> bool:
    """Wait on a data watch (not a poll) until the node's record is gone."""
    gone = threading.Event()

    def watch(data, stat, event=None):
        if stat is None:
            gone.set()
            return False
        return True

    zk.kazoo.DataWatch(paths.node(node_id), watch)
    return gone.wait(timeout)


def cmd_hold(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    fields = {"comment": args.reason} if args.reason else {}
    node = _change_state(zk, args.id, NodeState.HOLD, "hold", **fields)
    print(f"Node {node.id} is held" + (f" ({args.reason})" if args.reason else "")
          + f"; release it with `nodepool delete {node.id}`.")
    return 0


def _image_rows(zk: ZooKeeperClient, provider: str) -> list[tuple[str, str, list[str]]]:
    """(image, build id, upload ids) of each build with records for `provider`, as
    Nodepool's `info` lists its image data."""
    found = images.provider_uploads(zk.kazoo, provider)
    return [(image, build_id, sorted(u.id for u in found[image][build_id]))
            for image in sorted(found) for build_id in sorted(found[image])]


def _ownership(zk: ZooKeeperClient, name: str, config) -> dict:
    """Who holds the provider's lease and who should by the spread (listings.provider_rows)."""
    launchers = components.list_components(zk, components.LAUNCHER)
    holder = None
    try:
        raw, _ = zk.kazoo.get(paths.provider_lease(name))
        holder = json.loads(raw or b"{}").get("owner")
    except NoNodeError:
        pass
    except ValueError:
        holder = "?"
    providers = set(config.providers) if config is not None else {name}
    rows = listings.provider_rows(providers | {name}, launchers,
                                  {name: holder} if holder else {})
    return next(r for r in rows if r["provider"] == name)


def cmd_info(args: argparse.Namespace, zk: ZooKeeperClient, config) -> int:
    """Show a provider: its configured pools and labels, pool workers, and nodes."""
    provider = config.providers.get(args.provider) if config is not None else None
    pools = [c for c in components.list_components(zk, components.POOL)
             if c.get("provider_name") == args.provider]
    found, locked = _nodes_with_locks(zk, args.provider)
    uploads = _image_rows(zk, args.provider)
    owner = _ownership(zk, args.provider, config)
    if provider is None and not pools and not found and not uploads:
        raise NotFound(f"provider {args.provider!r} is not in the configuration "
                       f"and has no nodes, images or pool workers in ZooKeeper")
    now = time.time()
    if args.json:
        print_json({
            "provider": args.provider,
            "configured": provider is not None,
            "driver": getattr(provider, "driver", None),
            "pools": [{"name": p.name, "max_servers": p.max_servers,
                       "labels": sorted(p.labels)} for p in (provider.pools.values()
                                                              if provider else [])],
            "pool_workers": pools,
            "images": [{"image": i, "build_id": b, "upload_ids": u} for i, b, u in uploads],
            "owner": owner,
            "nodes": [_json(n, n.id in locked, now) for n in found],
        })
        return 0
    if provider is None:
        print(f"Provider {args.provider} is not in this configuration.")
    else:
        print(f"Provider {provider.name} (driver {provider.driver})")
        print_table(["Pool", "Max Servers", "Labels"],
                    [[p.name, p.max_servers, sorted(p.labels)] for p in provider.pools.values()])
    print(f"Owner: {owner['owner'] or 'none (no launcher holds its lease)'}"
          + (f" on {owner['hostname']}" if owner["hostname"] else "")
          + f"; owner by the spread: {owner['spread_owner'] or 'none'}"
          + (f"; waiting for it: {', '.join(owner['standing_by'])}" if owner["standing_by"]
             else ""))
    if pools:
        print("Pool workers registered in ZooKeeper:")
        print_table(["Pool", "Hostname", "Paused", "Priority", "Labels"],
                    [[p.get("name"), p.get("hostname"), p.get("paused"), p.get("priority"),
                      p.get("supported_labels")] for p in pools])
    else:
        print("No pool worker of this provider is registered (no launcher serves it).")
    print("Image data:")
    print_table(["Image Name", "Build ID", "Upload IDs"], uploads)
    print(f"Nodes ({len(found)}):")
    print(nodes_table(found, locked, now=now))
    return 0
