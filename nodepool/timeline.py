"""A request's timeline: what happened to it and why it waits, as short bounded entries.

Pure data shared by the launcher's recorder (which appends) and the readers
(`nodepool.zk.timelines`, the CLI, the web). An entry is a plain dict:

    {"event": "deferred", "time": first, "last": last, "count": n,
     "provider": "rax-dfw", "pool": "main", "cause": "pool",
     "text": "pool main of provider rax-dfw is at quota, 10 of 10 servers",
     "detail": {"ahead": 3}}

Consecutive repeats of one event (same event, provider, pool and cause)
coalesce into one entry: its count grows, `last` and the text follow the
latest. A timeline keeps at most MAX_ENTRIES entries and MAX_BYTES of JSON:
the first entry stays (where it started), the oldest after it go, and
`dropped` counts them.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

# The events, in the order a request usually meets them.
SEEN = "seen"                      # a pool of ours looked at it
DECLINED = "declined"              # a pool can never serve it (text: why)
DEFERRED = "deferred"              # a pool could serve it, not now (cause: which limit)
LAUNCH_STARTED = "launch-started"  # a node is being launched for it
LAUNCH_FAILED = "launch-failed"    # one launch attempt failed (text: the driver's reason)
NODE_READY = "node-ready"          # one of its nodes is ready
NODE_VANISHED = "node-vanished"    # one of its nodes lost its server (text: which, why)
FULFILLED = "fulfilled"
FAILED = "failed"                  # text: why (a failed request always says why)
RESET = "reset"                    # its launcher was lost; it is requested again

BEHIND = "behind"                  # deferral cause: in line behind a request that waits

EVENTS = (SEEN, DECLINED, DEFERRED, LAUNCH_STARTED, LAUNCH_FAILED, NODE_READY, NODE_VANISHED,
          FULFILLED, FAILED, RESET)

# Causes of a deferral (Capacity.launch_blocker's kinds, and the other waits).
CAUSES = {
    "pool": "the pool is at its limits (max-servers, max-cores, max-ram)",
    "provider": "the cloud's quota for the provider is used up",
    "tenant": "the request's tenant is at its resource limit",
    "concurrency": "the provider handles max-concurrency requests already",
    "cost": "the labels' cost is not known yet (the flavors or instance types are being read)",
    "hosts busy": "every host of the static pool is in use",
    "paused": "the pool is paused (a launch hit the cloud's quota)",
    "quota refused": "the cloud refused a launch for quota; the pool pauses",
    "rate limited": "the cloud asked to retry later (rate limit or a passing error)",
    "behind": "a request ahead of it waits at the same pool, which takes none after it",
    "making room": "the pool is at its limits: unused ready nodes of other labels are deleted "
                   "to make room for it",
}

MAX_ENTRIES = 40
MAX_BYTES = 8192
MAX_TEXT = 300

Entry = dict[str, Any]


def _key(entry: Entry) -> tuple:
    return (entry.get("event"), entry.get("provider"), entry.get("pool"), entry.get("cause"))


def new_entry(event: str, now: float, text: str = "", provider: str | None = None,
              pool: str | None = None, cause: str | None = None,
              detail: dict[str, Any] | None = None) -> Entry:
    entry: Entry = {"event": event, "time": round(now, 3), "last": round(now, 3), "count": 1}
    if provider is not None:
        entry["provider"] = provider
    if pool is not None:
        entry["pool"] = pool
    if cause is not None:
        entry["cause"] = cause
    if text:
        entry["text"] = text[:MAX_TEXT]
    if detail:
        entry["detail"] = detail
    return entry


def append(entries: list[Entry], entry: Entry) -> bool:
    """Add `entry`, coalescing it into the last one when it repeats it. False: nothing
    changed that a reader would see (a repeat with the same text and detail)."""
    if entries and _key(entries[-1]) == _key(entry):
        last = entries[-1]
        same = last.get("text") == entry.get("text") and last.get("detail") == entry.get("detail")
        last["count"] = last.get("count", 1) + 1
        last["last"] = entry["last"]
        for field in ("text", "detail"):
            if field in entry:
                last[field] = entry[field]
        return not same
    entries.append(entry)
    return True


def has(entries: Iterable[Entry], event: str, provider: str | None = None,
        pool: str | None = None) -> bool:
    return any(e.get("event") == event and e.get("provider") == provider
               and e.get("pool") == pool for e in entries)


def bound(entries: list[Entry], dropped: int = 0) -> tuple[list[Entry], int]:
    """At most MAX_ENTRIES entries and MAX_BYTES encoded: the first one stays, the
    oldest after it go. Returns (entries, how many were dropped in all)."""
    if len(entries) > MAX_ENTRIES:
        cut = len(entries) - MAX_ENTRIES
        entries = entries[:1] + entries[1 + cut:]
        dropped += cut
    while len(entries) > 2 and len(encode(entries, dropped)) > MAX_BYTES:
        entries = entries[:1] + entries[2:]
        dropped += 1
    return entries, dropped


def encode(entries: list[Entry], dropped: int = 0) -> bytes:
    doc: dict[str, Any] = {"entries": entries}
    if dropped:
        doc["dropped"] = dropped
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(raw: bytes | None) -> tuple[list[Entry], int]:
    """(entries, dropped) from a stored timeline; unreadable data reads as empty."""
    if not raw:
        return [], 0
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [], 0
    if not isinstance(doc, dict):
        return [], 0
    entries = [e for e in doc.get("entries") or [] if _readable(e)]
    dropped = doc.get("dropped", 0)
    return entries, dropped if isinstance(dropped, int) else 0


def _readable(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("event"), str) and all(
        isinstance(entry.get(f, 0), (int, float)) for f in ("time", "last", "count"))


def merge(stored: list[Entry], ours: list[Entry]) -> list[Entry]:
    """A previous owner's entries and ours, in time order, duplicates once."""
    seen: dict[tuple, Entry] = {}
    for entry in stored + ours:
        ident = (_key(entry), entry.get("time"))
        if ident not in seen or entry.get("count", 1) >= seen[ident].get("count", 1):
            seen[ident] = entry
    return sorted(seen.values(), key=lambda e: (e.get("time", 0), e.get("last", 0)))
