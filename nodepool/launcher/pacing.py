"""When the shared listing is next due: from how long each kind of wait on the cloud lasts.

A part of CloudView. Without history, a wait is looked at more often the younger it
is (an eighth of its age, between the tuning's bounds): a server that boots in 1 s is
seen within ~0.1 s of it, at the price of some twenty listings per boot. Once a few
waits in the same machine state (`wait-active`, `wait-gone` ...) have ended, the
pacer knows how long such a wait typically takes (the median age at which a listing
first showed it over) and looks at a wait only at set fractions of that (97/100 and
all of it), then every 1/20 of it up to twice it, then by the age rule: a steady
1 s boot costs one or two listings instead of twenty and is seen within about 20 ms
of its end. The 97/100 probe keeps the estimate from creeping upwards: a listing is
taken a little after it is due, so the age it sees a wait end at is a little more
than the last typical length. A wait much shorter than usual is seen later than by
the age rule (at the 97/100 probe, and never more than `listing_max_interval`
late); the typical length follows as such waits become usual. There is no earlier
probe: at concurrency 1 each is a cloud call per wait that finds nothing in a
steady state (an earlier one at 9/10 did, for at most 7/100 of the wait sooner
on a wait that short), and with many waits the 2 s bound already looks often.
"""

from __future__ import annotations

import bisect
import collections
import statistics

from nodepool.launcher.tuning import Tuning

# A state's typical wait is trusted once this many waits in it have ended.
MIN_HISTORY = 3


class Pacer:
    """The ages at which waits ended, per machine state, and the next listing they want."""

    def __init__(self, tuning: Tuning):
        self.tuning = tuning
        self._ended: dict[str, collections.deque[float]] = {}
        self._typical: dict[str, float | None] = {}

    def wait_ended(self, state: str | None, age: float) -> None:
        """A wait in `state` ended: the listing taken `age` seconds into it showed so."""
        if state is None or age < 0:
            return
        ended = self._ended.get(state)
        if ended is None:
            ended = self._ended[state] = collections.deque(maxlen=self.tuning.listing_history)
        ended.append(age)
        self._typical[state] = statistics.median(ended) if len(ended) >= MIN_HISTORY else None

    def typical(self, state: str | None) -> float | None:
        """The median length of recent waits in `state`; None until there are enough."""
        return self._typical.get(state) if state is not None else None

    def due(self, state: str | None, since: float, last_taken: float) -> float:
        """Monotonic time at which the wait begun at `since` wants the next listing,
        given that the last one was taken at `last_taken`."""
        return self.due_for(state, [since], last_taken)

    def due_for(self, state: str | None, sinces: list[float], last_taken: float) -> float:
        """The earliest `due` of the waits in `state` begun at `sinces` (not empty).

        Computed per band of ages rather than per wait, in a few passes over the
        list: a thousand waiting launches cost the loop well under a millisecond.
        """
        t, taken = self.tuning, last_taken
        earliest = taken + t.listing_min_interval
        typical = self.typical(state)
        if typical is None:
            return max(self._by_age(taken, max(sinces)), earliest)
        due = float("inf")
        young = sorted(s for s in sinces if taken - s < typical)
        if young:   # at the probes: for each, the oldest wait not yet past it
            for fraction in t.listing_probes:
                first = bisect.bisect_right(young, taken - fraction * typical)
                if first < len(young):
                    due = min(due, young[first] + fraction * typical)
            due = min(due, taken + t.listing_max_interval)
        past = [s for s in sinces if typical <= taken - s < 2 * typical]
        if past:    # past the typical length: often, up to twice it
            due = min(due, self._by_age(taken, max(past)),
                      taken + t.listing_past_typical * typical)
        old = [s for s in sinces if taken - s >= 2 * typical]
        if old:     # by the age rule again
            due = min(due, self._by_age(taken, max(old)))
        return max(due, earliest)

    def _by_age(self, last_taken: float, since: float) -> float:
        """The age rule: a share of the wait's age at the last listing, within bounds."""
        t = self.tuning
        age = max(0.0, last_taken - since)
        return last_taken + min(t.listing_max_interval,
                                max(t.listing_min_interval, age * t.listing_age_fraction))
