"""A thread-safe limiter spacing a provider's API calls by its `rate` (seconds between calls)."""

from __future__ import annotations

import threading
import time
from typing import Callable


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
