"""The launcher's in-memory record of request timelines (appended to by provider loops).

`ctx.timeline` (LauncherContext) is a `Recorder`. A provider loop appends an
event with one call: a dict lookup and a list append under a lock held for
microseconds, no I/O. The flusher (timeline_flush.py) writes what changed to
ZooKeeper from its own thread. Without a flusher (tests that build contexts
by hand) the recorder just keeps the entries in memory.

One timeline per (request, writer): the writer is the provider whose loop
recorded it, or `@<hostname>` for this launcher's own events (a lost-request
reset). Each is one znode with one writer: the provider's current owner.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

from nodepool import timeline as tl

LAUNCHER_PREFIX = "@"
# A repeat that changes nothing a reader sees but its count and last time is written
# at most this often: a request waiting an hour at quota costs a write per half minute.
REPEAT_REFRESH = 30.0


@dataclasses.dataclass(eq=False)
class Timeline:
    """What this process knows of one (request, writer) timeline."""

    entries: list[tl.Entry]
    first: float                      # when we recorded its first entry
    dropped: int = 0
    dirty: bool = True                # changed since the last write
    ended: str | None = None          # FULFILLED or FAILED, once we recorded it
    last: float = 0.0                 # when we recorded its last entry
    taken: float = 0.0                # when the flusher last took it for a write
    version: int | None = None        # of the znode as we last wrote or read it; None: unread


class Recorder:
    """Timelines by (request id, writer); any thread may record."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._timelines: dict[tuple[str, str], Timeline] = {}

    def record(self, request_id: str | None, writer: str, event: str, text: str = "",
               pool: str | None = None, cause: str | None = None, once: bool = False,
               **detail: Any) -> None:
        """Append an event (coalesced with the last one when it repeats it). `once`:
        only if the timeline has no such event for this pool yet."""
        if not request_id:
            return
        now = self.clock()
        provider = None if writer.startswith(LAUNCHER_PREFIX) else writer
        key = (request_id, writer)
        with self._lock:
            t = self._timelines.get(key)
            if t is None:
                t = self._timelines[key] = Timeline(entries=[], first=now)
            elif once and tl.has(t.entries, event, provider, pool):
                return
            entry = tl.new_entry(event, now, text, provider=provider, pool=pool, cause=cause,
                                 detail=detail or None)
            if tl.append(t.entries, entry) or now - t.taken >= REPEAT_REFRESH:
                t.dirty = True
            if len(t.entries) > tl.MAX_ENTRIES:
                t.entries, t.dropped = tl.bound(t.entries, t.dropped)
            t.last = now
            if event in (tl.FULFILLED, tl.FAILED):
                t.ended = event

    def launcher(self, hostname: str) -> str:
        """The writer name of this launcher's own events."""
        return f"{LAUNCHER_PREFIX}{hostname}"

    # -- what the flusher and tests use ------------------------------------------------

    def items(self) -> list[tuple[tuple[str, str], Timeline]]:
        with self._lock:
            return list(self._timelines.items())

    def entries(self, request_id: str) -> list[tl.Entry]:
        """Every entry we hold for a request, in time order (copies)."""
        with self._lock:
            found = [dict(e) for (rid, _), t in self._timelines.items() if rid == request_id
                     for e in t.entries]
        return sorted(found, key=lambda e: e["time"])

    def take(self, key: tuple[str, str]) -> tuple[list[tl.Entry], int, int | None] | None:
        """For a write: (a copy of the entries, dropped, the version) and mark it clean."""
        with self._lock:
            t = self._timelines.get(key)
            if t is None:
                return None
            t.dirty = False
            t.taken = self.clock()
            return [dict(e) for e in t.entries], t.dropped, t.version

    def merged(self, key: tuple[str, str], stored: list[tl.Entry], dropped: int,
               version: int | None) -> None:
        """The znode as read (another owner's entries): ours continue them."""
        with self._lock:
            t = self._timelines.get(key)
            if t is None:
                return
            t.entries, t.dropped = tl.bound(tl.merge(stored, t.entries), t.dropped + dropped)
            t.version = version
            t.dirty = True

    def wrote(self, key: tuple[str, str], version: int | None, ok: bool) -> None:
        """A write's answer: its version, or (failed) re-read and write again."""
        with self._lock:
            t = self._timelines.get(key)
            if t is None:
                return
            t.version = version if ok else None
            if not ok:
                t.dirty = True

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._timelines.pop(key, None)

    def __len__(self) -> int:
        return len(self._timelines)
