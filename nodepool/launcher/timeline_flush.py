"""The flusher: writes changed request timelines to ZooKeeper from a thread of its own.

One per launcher, every `tuning.timeline_flush` seconds. Each pass sends its
calls with kazoo's async API, all of them before it waits for any answer:
first the reads of timelines this process has not written yet (a previous
owner's entries, merged before our first write: the history continues after
a takeover), then the writes. Never on a provider loop, never on the
hand-over path.

What is written: a timeline whose request is still waiting `timeline_delay`
after we first recorded it, or failed, or that we wrote before and changed
since. A request handed over sooner costs no write at all. A timeline whose
request is gone (the cache says so) is deleted if we wrote it, and
forgotten; so is one of a provider this launcher no longer owns (its new
owner continues it). While ZooKeeper is away nothing is sent: the entries
stay in memory (bounded per request) and go out once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.handlers.threading import KazooTimeoutError

from nodepool import timeline as tl
from nodepool.launcher.context import LauncherContext
from nodepool.launcher.recorder import LAUNCHER_PREFIX, Recorder, Timeline
from nodepool.model import RequestState
from nodepool.zk import timelines as zkt

log = logging.getLogger("nodepool.launcher.timeline")

ABSENT = -1          # Timeline.version once read and found missing: create it
ANSWER_WAIT = 10.0   # longest a pass waits for the answers of one wave


class TimelineFlusher:
    """Writes the recorder's changed timelines, batched, every interval."""

    def __init__(self, ctx: LauncherContext, owned: Callable[[], set[str]]):
        self.ctx = ctx
        self.recorder: Recorder = ctx.timeline
        self._owned = owned               # providers this launcher owns now
        self.passes = 0                   # completed passes (tests wait on it)
        self.writes = 0                   # znode writes sent (creates and sets)
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="timeline-flush", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(ANSWER_WAIT)

    def _run(self) -> None:
        interval = self.ctx.tuning.timeline_flush
        while not self._stop.wait(interval):
            try:
                if self.ctx.zk.connected:
                    self.flush()
            except (KazooException, KazooTimeoutError, OSError) as e:
                log.warning("Timeline flush pass failed (%s); entries kept for the next",
                            type(e).__name__)
            except Exception:
                log.exception("Timeline flush pass failed; entries kept for the next")
            finally:
                self.passes += 1

    # -- one pass ------------------------------------------------------------------------

    def flush(self) -> None:
        """Decide, read what was never read, write what is due, delete what is gone."""
        due, gone = self._triage()
        self._read_unread([k for k, t in due if t.version is None])
        self._write(due)
        self._delete(gone)

    def _triage(self) -> tuple[list, list]:
        now = self.recorder.clock()
        owned = self._owned()
        delay = self.ctx.tuning.timeline_delay
        due, gone = [], []
        for key, t in self.recorder.items():
            request_id, writer = key
            req = self.ctx.cache.get_request(request_id)
            if req is None or (not writer.startswith(LAUNCHER_PREFIX) and writer not in owned):
                self.recorder.forget(key)
                if req is None and t.version not in (None, ABSENT):
                    gone.append(key)
                continue
            if t.dirty and self._worth_writing(t, req.state, now, delay):
                due.append((key, t))
        return due, gone

    @staticmethod
    def _worth_writing(t: Timeline, state: RequestState, now: float, delay: float) -> bool:
        if t.version not in (None, ABSENT) or t.ended == tl.FAILED \
                or state == RequestState.FAILED:
            return True
        if state == RequestState.FULFILLED or t.ended == tl.FULFILLED:
            return t.last - t.first >= delay     # it waited: worth keeping until it goes
        return now - t.first >= delay

    def _read_unread(self, keys: list[tuple[str, str]]) -> None:
        kazoo = self.ctx.kazoo
        sent = [(key, kazoo.get_async(zkt.entry_path(*key))) for key in keys]
        deadline = time.monotonic() + ANSWER_WAIT
        for key, answer in sent:
            try:
                raw, stat = _answer(answer, deadline)
            except NoNodeError:
                self.recorder.merged(key, [], 0, ABSENT)
                continue
            stored, dropped = tl.decode(raw)
            self.recorder.merged(key, stored, dropped, stat.version)

    def _write(self, due: list) -> None:
        kazoo = self.ctx.kazoo
        sent = []
        for key, _ in due:
            taken = self.recorder.take(key)
            if taken is None or taken[2] is None:
                continue    # forgotten meanwhile, or the read failed: next pass
            entries, dropped, version = taken
            entries, dropped = tl.bound(entries, dropped)
            data, path = tl.encode(entries, dropped), zkt.entry_path(*key)
            if version == ABSENT:
                sent.append((key, True, kazoo.create_async(path, data, makepath=True)))
            else:
                sent.append((key, False, kazoo.set_async(path, data, version=version)))
            self.writes += 1
        deadline = time.monotonic() + ANSWER_WAIT
        for key, created, answer in sent:
            try:
                result = _answer(answer, deadline)
            except (NodeExistsError, BadVersionError, NoNodeError, KazooException,
                    KazooTimeoutError):
                # Someone else's write (merge it), or no answer: read and write again.
                self.recorder.wrote(key, None, ok=False)
                continue
            self.recorder.wrote(key, 0 if created else result.version, ok=True)

    def _delete(self, gone: list[tuple[str, str]]) -> None:
        """Our znodes of requests that are gone, and their directory once empty."""
        kazoo = self.ctx.kazoo
        sent = []
        for request_id, writer in gone:
            sent.append(kazoo.delete_async(zkt.entry_path(request_id, writer)))
            sent.append(kazoo.delete_async(zkt.request_dir(request_id)))
        deadline = time.monotonic() + ANSWER_WAIT
        for answer in sent:
            try:
                _answer(answer, deadline)
            except (NoNodeError, NotEmptyError):
                pass    # gone already, or another writer's entries remain (the sweep's)


def _answer(answer, deadline: float):
    """An async call's result, waiting no later than `deadline` (monotonic)."""
    return answer.get(timeout=max(0.01, deadline - time.monotonic()))
