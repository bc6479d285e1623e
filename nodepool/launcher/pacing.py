"""When the shared listing is next due: from how long each kind of wait on the cloud lasts.

A part of CloudView. Without history, a wait is looked at more often the younger it
is (an eighth of its age, between the tuning's bounds): a server that boots in 1 s is
seen within ~0.1 s of it, at the price of some twenty listings per boot. Once a few
waits in the same machine state (`wait-active`, `wait-gone` ...) have ended, the
pacer knows how long such a wait typically takes (the median age at which a listing
first showed it over) and looks at a wait only at set fractions of that (1/2, 9/10,
97/100, all of it), then every 1/20 of it up to twice it, then by the age rule: a
steady 1 s boot costs three or four listings instead of twenty and is seen within
about 20 ms of its end. The 97/100 probe keeps the estimate from creeping upwards:
a listing is taken a little after it is due, so the age it sees a wait end at is a
little more than the last typical length. A wait much shorter than usual is seen
later than by the age rule (at the next probe, and never more than
`listing_max_interval` late); the typical length follows as such waits become usual.
"""

from __future__ import annotations

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
        t = self.tuning
        age = last_taken - since      # the wait's age when the last listing was taken
        step = min(t.listing_max_interval, max(t.listing_min_interval,
                                               max(0.0, age) * t.listing_age_fraction))
        due = last_taken + step
        typical = self.typical(state)
        if typical is not None and age < typical:
            probes = [since + f * typical for f in t.listing_probes]
            due = min(min([p for p in probes if p > last_taken] or [due]),
                      last_taken + t.listing_max_interval)
        elif typical is not None and age < 2 * typical:
            due = min(due, last_taken + t.listing_past_typical * typical)
        return max(due, last_taken + t.listing_min_interval)
