"""Request timelines in ZooKeeper: where they live, how to read them, the orphan sweep.

`/nodepool/request-timeline/<request id>/<writer>`: one znode per writer (a
provider, written by its current owner; `@<hostname>` for a launcher's own
events), each holding `nodepool.timeline`'s JSON. Outside the request znode
on purpose (doc/internals.md, "Request timelines"). Readers here need no
launcher: the CLI and the web call them with any kazoo client.
"""

from __future__ import annotations

import logging

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError, NotEmptyError

from nodepool import timeline as tl
from nodepool.zk import paths, requests

log = logging.getLogger("nodepool.zk.timelines")


def entry_path(request_id: str, writer: str) -> str:
    return paths.request_timeline_entry(request_id, writer)


def request_dir(request_id: str) -> str:
    return paths.request_timeline(request_id)


def read_timeline(kazoo: KazooClient, request_id: str) -> tuple[list[tl.Entry], int]:
    """Every writer's entries of one request, merged in time order, and how many the
    writers dropped to stay within their bounds. Nothing stored: ([], 0)."""
    return read_timelines(kazoo, [request_id]).get(request_id, ([], 0))


def read_timelines(kazoo: KazooClient, request_ids: list[str]
                   ) -> dict[str, tuple[list[tl.Entry], int]]:
    """As read_timeline for many requests: two waves of async calls (the listings, then
    every znode's data), each sent whole before any answer is awaited."""
    listings = [(rid, kazoo.get_children_async(request_dir(rid))) for rid in request_ids]
    reads = []
    for rid, answer in listings:
        try:
            writers = answer.get()
        except NoNodeError:
            continue
        reads += [(rid, kazoo.get_async(entry_path(rid, w))) for w in writers]
    found: dict[str, tuple[list[tl.Entry], int]] = {}
    for rid, answer in reads:
        try:
            raw, _ = answer.get()
        except NoNodeError:
            continue
        entries, dropped = tl.decode(raw)
        have, have_dropped = found.get(rid, ([], 0))
        found[rid] = (have + entries, have_dropped + dropped)
    return {rid: (sorted(e, key=lambda x: (x.get("time", 0), x.get("last", 0))), d)
            for rid, (e, d) in found.items()}


def list_timeline_ids(kazoo: KazooClient) -> list[str]:
    try:
        return kazoo.get_children(paths.REQUEST_TIMELINES)
    except NoNodeError:
        return []


def delete_orphans(kazoo: KazooClient) -> list[str]:
    """Delete the timelines of requests that no longer exist (min-ready's owner runs
    this periodically: a writer that died, or missed the deletion, leaves them)."""
    existing = set(requests.list_request_ids(kazoo))
    removed = []
    for rid in list_timeline_ids(kazoo):
        if rid in existing:
            continue
        try:
            kazoo.delete(request_dir(rid), recursive=True)
            removed.append(rid)
        except (NoNodeError, NotEmptyError):
            continue    # gone already, or a writer was creating an entry: next sweep
    if removed:
        log.info("Deleted the timelines of %d request(s) that are gone", len(removed))
    return removed
