"""A thread-safe limiter spacing a provider's API calls by its `rate` (seconds between calls)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class RateLimiter:
    """Hands out call slots at least `interval` seconds apart, first come first served.

    Each caller reserves the next free slot under the lock and sleeps outside
    it, so several executor threads queue up in order instead of all waking at
    once; `interval <= 0` means no limit (and no lock round trip).
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = max(0.0, float(interval or 0.0))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0  # the earliest time the next call may start

    def wait(self) -> float:
        """Block until this call may start; return the seconds waited."""
        if self.interval <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)  # the rate limit itself: the provider asked for this spacing
        return delay


def guarded_call(limiter: RateLimiter, fence: Callable[[], None],
                 observe: Callable[[str, float, str | None], None], what: str,
                 run: Callable[[], T], classify: Callable[..., Exception],
                 is_not_found: Callable[[BaseException], bool], prefix: str,
                 default: type, not_found: Any = ...) -> T:
    """One cloud API call as every driver makes it: under the rate limit, fenced right
    before the request (a wait above may have been long), timed and observed under its
    call name, errors classified through the driver's table (`classify(e, text, default)`).
    `not_found`, when given, is returned for the driver's "not found" instead of raising."""
    from nodepool.metrics import call_name, error_class
    limiter.wait()
    fence()
    started = time.monotonic()
    try:
        result = run()
    except Exception as e:
        if not_found is not ... and is_not_found(e):
            observe(call_name(what), time.monotonic() - started, None)
            return not_found
        error = classify(e, f"{prefix}: {what}", default)
        observe(call_name(what), time.monotonic() - started, error_class(error))
        raise error from e
    observe(call_name(what), time.monotonic() - started, None)
    return result
