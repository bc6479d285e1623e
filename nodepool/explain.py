"""Why a request waits (or failed), in plain sentences, from ZooKeeper alone.

`explain(kazoo, id)` gathers a request and its timeline; `render_explain`
turns that into sentences; `current_reasons(kazoo, ids)` gives one short
reason per request for listings (read with async calls for all at once).
The CLI (`nodepool request-explain`) and the web (`GET /request/ID`, the
request list's Reason column) use these; no launcher is needed.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from nodepool import timeline as tl
from nodepool.errors import NotFound, ProtocolError
from nodepool.model import NodeRequest, RequestState
from nodepool.zk import paths, requests
from nodepool.zk import timelines as zkt


def explain(kazoo: KazooClient, request_id: str, now: float | None = None) -> dict[str, Any]:
    """The request, its timeline's entries in time order and its current reason.

    Raises NotFound when there is no such request."""
    req = requests.get_request(kazoo, request_id)
    if req is None:
        raise NotFound(f"no request {request_id} (unknown, or deleted by its requestor)")
    earlier = []
    if req.state == RequestState.REQUESTED:    # who waits ahead of it, at the same pool
        earlier = [r for r in requests.get_requests(kazoo)
                   if r.state == RequestState.REQUESTED and r.sort_key < req.sort_key]
    found = zkt.read_timelines(kazoo, [r.id for r in earlier] + [request_id])
    entries, dropped = found.get(request_id, ([], 0))
    queue = queues([(r, found.get(r.id, ([], 0))[0]) for r in earlier + [req]]).get(req.id)
    now = time.time() if now is None else now
    return {"id": req.id, "state": req.state.value, "age": round(_age(req, now), 3),
            "request": req.to_dict(), "entries": entries, "dropped": dropped,
            "ahead": queue[1] if queue else None,
            "reason": current_reason(req, entries, now, queue)}


def current_reasons(kazoo: KazooClient, request_ids: list[str],
                    now: float | None = None) -> dict[str, str]:
    """One short reason per request that exists (requests and timelines read with async
    calls, each wave sent whole before any answer is awaited). Requests ahead in line
    are counted among `request_ids` (pass every waiting request for exact counts)."""
    reads = [(rid, kazoo.get_async(paths.request(rid))) for rid in request_ids]
    got: list[NodeRequest] = []
    for rid, answer in reads:
        try:
            raw, stat = answer.get()
            got.append(NodeRequest.from_json(rid, raw, stat.version))
        except (NoNodeError, ProtocolError):
            continue
    return reasons_of(kazoo, got, now)


def reasons_of(kazoo: KazooClient, reqs: list[NodeRequest],
               now: float | None = None) -> dict[str, str]:
    """As current_reasons for requests already read (a listing's, a launcher's cache):
    only their timelines are read, with async calls."""
    now = time.time() if now is None else now
    found = zkt.read_timelines(kazoo, [r.id for r in reqs])
    got = [(req, found.get(req.id, ([], 0))[0]) for req in reqs]
    lines = queues(got)
    return {req.id: current_reason(req, entries, now, lines.get(req.id))
            for req, entries in got}


def queues(items: list[tuple[NodeRequest, list[tl.Entry]]]
           ) -> dict[str, tuple[str | None, int]]:
    """Waiting requests whose current entry is a deferral: the reason the first in line
    at that pool gave (None: not known) and how many wait ahead of it. A pool at a limit
    takes no later request, so the line is in service order."""
    first: dict[tuple, str | None] = {}
    ahead: collections.Counter = collections.Counter()
    out: dict[str, tuple[str | None, int]] = {}
    for req, entries in sorted(items, key=lambda item: item[0].sort_key):
        entry = _current(entries) if req.state == RequestState.REQUESTED else None
        if entry is None or entry.get("event") != tl.DEFERRED or entry.get("cause") == "tenant":
            continue     # a request waiting for its tenant's limit waits alone
        where = (entry.get("provider"), entry.get("pool"))
        if entry.get("cause") != tl.BEHIND:
            first.setdefault(where, entry.get("text"))
        out[req.id] = (first.get(where), ahead[where])
        ahead[where] += 1
    return out


def decline_reasons(kazoo: KazooClient, request_id: str, wait: float = 3.0) -> list[str]:
    """Why the pools declined a failed request, one sentence per pool, from its timeline.

    A launcher writes a failed request's timeline within its flush interval (a
    second by default) of the failure: read again, for at most `wait` seconds,
    until its `failed` entry is there. [] when no launcher recorded why."""
    deadline = time.monotonic() + wait
    while True:
        entries, _ = zkt.read_timeline(kazoo, request_id)
        if any(e.get("event") == tl.FAILED for e in entries) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    said = [sentence(e) for e in entries if e.get("event") == tl.DECLINED]
    return list(dict.fromkeys(said))


def _age(req: NodeRequest, now: float) -> float:
    return max(0.0, now - (req.created_time or req.state_time or now))


def _current(entries: list[tl.Entry]) -> tl.Entry | None:
    """The entry that says where the request stands: the latest, a "seen" only if
    nothing else was recorded."""
    told = [e for e in entries if e.get("event") != tl.SEEN] or entries
    return max(told, key=lambda e: (e.get("last", 0), e.get("time", 0))) if told else None


def current_reason(req: NodeRequest, entries: list[tl.Entry], now: float,
                   queue: tuple[str | None, int] | None = None) -> str:
    """Where the request stands; `queue` (from `queues`) adds the line it waits in."""
    age = _age(req, now)
    if req.state == RequestState.FULFILLED:
        return f"fulfilled with {', '.join(req.nodes) or 'no nodes'}"
    if req.state == RequestState.FAILED:
        failed = [e for e in entries if e.get("event") == tl.FAILED]
        if failed:
            return f"failed: {failed[-1].get('text', 'no reason recorded')}"
        if req.declined_by:
            return f"failed: declined by every pool ({', '.join(req.declined_by)})"
        return "failed (no launcher recorded why; its timeline is gone)"
    entry = _current(entries)
    doing = "being served" if req.state == RequestState.PENDING else "waiting"
    if entry is None:
        if req.declined_by:
            return (f"waiting {age:.0f} s: declined by {len(req.declined_by)} pool(s), "
                    f"no other pool has taken it yet")
        return f"waiting {age:.0f} s: no launcher has recorded anything about it yet"
    said = sentence(entry, brief=True)
    if queue is not None and entry.get("event") == tl.DEFERRED:
        reason, ahead = queue
        if entry.get("cause") == tl.BEHIND and reason:
            said = reason
        if ahead:
            said += f"; {ahead} request{'s' if ahead != 1 else ''} ahead of it"
    return f"{doing} {age:.0f} s: {said}"


def _where(entry: tl.Entry) -> str:
    pool, provider = entry.get("pool"), entry.get("provider")
    if pool and provider:
        return f"pool {pool} of provider {provider}"
    return f"provider {provider}" if provider else "the launcher"


def sentence(entry: tl.Entry, brief: bool = False) -> str:
    """One entry as a sentence (`brief`: as the current reason of a waiting request)."""
    event, text, detail = entry.get("event"), entry.get("text", ""), entry.get("detail") or {}
    node = detail.get("node")
    if event == tl.SEEN:
        by = f" (launcher {detail['launcher']})" if detail.get("launcher") and not brief else ""
        return f"seen by {_where(entry)}{by}"
    if event == tl.DECLINED:
        return f"declined by {_where(entry)}: {text}"
    if event == tl.DEFERRED:
        said = text or tl.CAUSES.get(entry.get("cause") or "", "waits")
        return said if brief else f"deferred: {said}"
    if event == tl.LAUNCH_STARTED:
        zone = f", zone {detail['az']}" if detail.get("az") else ""
        return f"launching node {node} in {_where(entry)}{zone}"
    if event == tl.LAUNCH_FAILED:
        return f"launch attempt {detail.get('attempt', '?')} of node {node} failed: {text}"
    if event == tl.NODE_READY:
        return f"node {node} is ready"
    if event == tl.NODE_VANISHED:
        return f"node {node} ({detail.get('state', '?')}) vanished: {text}; it is deleted"
    if event == tl.FULFILLED:
        return f"fulfilled by {_where(entry)}" + (f": {text}" if text else "")
    if event == tl.FAILED:
        return f"failed: {text}"
    if event == tl.RESET:
        return f"reset to requested: {text}"
    return f"{event}: {text}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def render_explain(explained: dict[str, Any]) -> str:
    """The explanation as plain sentences, one line per entry."""
    req = explained.get("request") or {}
    start = req.get("created_time") or req.get("state_time") or 0
    labels = ", ".join(req.get("node_types") or []) or "no labels"
    lines = [f"request {explained['id']} ({labels}) from {req.get('requestor') or 'unknown'}:"
             f" {explained['reason']}"]
    if explained.get("dropped"):
        lines.append(f"  ({explained['dropped']} older entries were dropped to keep it short)")
    for entry in explained.get("entries") or []:
        first = entry.get("time", 0)
        when = f"+{max(0.0, first - start):.1f}s" if start else _clock(first)
        said = sentence(entry)
        count = entry.get("count", 1)
        if count > 1:
            said += (f" ({count} times, until +{max(0.0, entry.get('last', 0) - start):.1f}s)"
                     if start else f" ({count} times, until {_clock(entry.get('last', 0))})")
        lines.append(f"  {when:>9}  {said}")
    if not explained.get("entries"):
        lines.append("  (no timeline recorded: handed over at once, or no launcher looked "
                     "at it yet)")
    return "\n".join(lines)
