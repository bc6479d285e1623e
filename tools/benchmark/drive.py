"""Many request lifecycles on a few threads: generators resumed by kazoo's completions.

A lifecycle is written as straight-line code that yields what it waits for:

* a kazoo `IAsyncResult` (from a `*_async` call): resumed with its value, or the
  call's exception is raised at the yield;
* a list of them (requests pipelined on one session): resumed with a list of values
  once all have answered, or the first failure is raised;
* a `Later`: resumed with whatever is passed to `Later.fire` (a watch, a timer).

The generator runs on whichever thread completes what it waits for: kazoo's
callback thread of its session, or the `Timers` thread. One lifecycle is never
resumed by two threads at once, because it waits for one thing at a time. This
is how one process keeps 50 or 500 requests in flight without a thread per
request: the benchmark's own CPU stays small next to the launcher's it measures.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

Step = Generator[Any, Any, None]


class Later:
    """Something a lifecycle waits for that is not a single kazoo call; fired once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired = False
        self._value: Any = None
        self._resume: Callable[[Any, BaseException | None], None] | None = None

    def fire(self, value: Any = None) -> bool:
        """Resume the waiting lifecycle with value; False if it was fired already."""
        with self._lock:
            if self._fired:
                return False
            self._fired, self._value = True, value
            resume = self._resume
        if resume is not None:
            resume(value, None)
        return True

    @property
    def fired(self) -> bool:
        return self._fired

    def _wait(self, resume: Callable[[Any, BaseException | None], None]) -> None:
        with self._lock:
            if not self._fired:
                self._resume = resume
                return
        resume(self._value, None)


COMPACT_MIN = 64    # cancelled timers kept before the queue is compacted


class Timers:
    """One thread that calls functions at a monotonic time; `call_at` returns a cancel."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bench-timers", daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> Callable[[], None]:
        seq = next(self._seq)
        with self._cond:
            heapq.heappush(self._heap, (when, seq, fn))
            if self._heap[0][1] == seq:
                self._cond.notify()

        def cancel() -> None:
            with self._cond:
                self._cancelled.add(seq)
                self._compact()
        return cancel

    def pending(self) -> int:
        """Timers queued, cancelled ones not yet dropped included."""
        with self._cond:
            return len(self._heap)

    def _compact(self) -> None:
        """Drop cancelled timers once they are most of the queue (a request's timeout is
        cancelled when it ends: at 250 requests/s with a 60 s timeout the queue would
        otherwise hold some 15,000 of them). Amortised O(1) per cancel."""
        if len(self._cancelled) < COMPACT_MIN or 2 * len(self._cancelled) <= len(self._heap):
            return
        self._heap = [entry for entry in self._heap if entry[1] not in self._cancelled]
        heapq.heapify(self._heap)
        self._cancelled.clear()   # includes cancels of timers that had already fired

    def sleep(self, seconds: float) -> Later:
        later = Later()
        self.call_at(time.monotonic() + seconds, later.fire)
        return later

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                        not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                _, seq, fn = heapq.heappop(self._heap)
                if seq in self._cancelled:
                    self._cancelled.discard(seq)
                    continue
            fn()


Done = Callable[[BaseException | None], None]


def start(gen: Step, done: Done) -> None:
    """Run gen until it waits; it continues on completions; `done(None)` once it returns,
    `done(error)` if it raised."""
    _advance(gen, done, None, None)


def _advance(gen: Step, done: Done, value: Any, error: BaseException | None) -> None:
    try:
        waited = gen.throw(error) if error is not None else gen.send(value)
    except StopIteration:
        done(None)
        return
    except Exception as e:  # a bug in the lifecycle: reported, never a hang
        done(e)
        return

    def resume(v: Any, e: BaseException | None) -> None:
        _advance(gen, done, v, e)

    if isinstance(waited, Later):
        waited._wait(resume)
    elif isinstance(waited, list):
        _gather(waited, resume)
    else:
        waited.rawlink(lambda result: _settle(result, resume))


def _settle(result: Any, resume: Callable[[Any, BaseException | None], None]) -> None:
    try:
        value = result.get_nowait()
    except Exception as e:
        resume(None, e)
        return
    resume(value, None)


def _gather(results: list[Any], resume: Callable[[Any, BaseException | None], None]) -> None:
    """Resume once every result has answered: with their values, or the first failure."""
    if not results:
        resume([], None)
        return
    left = [len(results)]
    lock = threading.Lock()

    def one(_result: Any) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        values = []
        for r in results:
            try:
                values.append(r.get_nowait())
            except Exception as e:
                resume(None, e)
                return
        resume(values, None)

    for r in results:
        r.rawlink(one)
