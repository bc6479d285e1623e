"""What a provider worker knows of its cloud: the shared listing, the limits, the images.

A part of ProviderWorker, on its loop thread. Machines waiting on the cloud
(BUILD -> ACTIVE, deletes) share one listing, taken more often the younger
the youngest wait is: a server that boots in 1 s is seen within ~0.1 s of
it, one that takes a minute costs a list call every 2 s, not fifty a second.
Once waits in a state have a typical length, the listing follows that instead
(pacing.py): a steady boot costs a few listings, not twenty.
The cloud's limits are read when asked (at start, by the quota job, after a
quota refusal); our own usage is counted from our nodes.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Callable, Iterable

from nodepool.drivers.adapter import Listing, Resources
from nodepool.launcher.pacing import Pacer
from nodepool.launcher.scope import ProviderScope
from nodepool.launcher.tasks import step_backoff
from nodepool.zk import images


class CloudView:
    """The listing, the limits and the image uploads of one provider."""

    def __init__(self, scope: ProviderScope, reads_limits: bool):
        self.scope = scope
        self.reads_limits = reads_limits      # static hosts have none to read
        self.listing: Listing | None = None
        self._listing_future: Future | None = None
        self._listing_wanted = False
        self._listing_started = 0.0
        self._listing_failures = 0            # listings failed in a row: the next waits
        self._listing_retry_at = 0.0
        self.limits: Resources | None = None
        self._limits_future: Future | None = None
        self._limits_stale = True
        self._limits_failures = 0             # reads failed in a row: the next waits
        self._limits_retry_at = 0.0
        self.quota_refused_at = -float("inf")   # monotonic time of the cloud's last refusal
        self._image_cache: dict[str, tuple[object, float]] = {}
        self._waits: Callable[[], Iterable[tuple[str | None, float]]] = lambda: ()
        self.pacer = Pacer(scope.tuning)

    def follow_waits(self, waits: Callable[[], Iterable[tuple[str | None, float]]]) -> None:
        """Where the listing's pace comes from: each machine's current wait on the cloud,
        as (the machine state it waits in, the monotonic start of the wait)."""
        self._waits = waits

    def wait_ended(self, state: str | None, age: float) -> None:
        """A machine's wait in `state` ended on a listing taken `age` seconds into it."""
        self.pacer.wait_ended(state, age)

    # -- asked by other parts ---------------------------------------------------------

    def want_listing(self) -> None:
        """A machine waits for a newer listing."""
        self._listing_wanted = True

    def refresh_limits(self) -> None:
        """Re-read the cloud's limits (the quota job; a quota refusal). Asked again while
        a read is due or under way, it does not wake the loop again (no busy passes)."""
        asked = self._limits_stale or self._limits_future is not None
        self._limits_stale = True
        if not asked:
            self.scope.wake()

    def quota_refused(self) -> None:
        """The cloud refused a launch for quota: our count let through what it does not."""
        self.quota_refused_at = time.monotonic()
        self.refresh_limits()

    # -- sync: take the answers ---------------------------------------------------------

    def sync(self) -> None:
        log = self.scope.log
        if self._listing_future is not None and self._listing_future.done():
            future, self._listing_future = self._listing_future, None
            try:
                self.listing = Listing({i.external_id: i for i in future.result()},
                                       self._listing_started)
                self._listing_failures = 0
            except Exception as e:
                self._listing_failures += 1
                delay = step_backoff(self._listing_failures, getattr(e, "retry_after", None),
                                     self.scope.tuning)
                self._listing_retry_at = time.monotonic() + delay
                log.warning("Listing servers of %s failed (%d in a row), again in %.2f s: %s",
                            self.scope.name, self._listing_failures, delay, e)
        if self._limits_future is not None and self._limits_future.done():
            future, self._limits_future = self._limits_future, None
            try:
                self.limits = future.result()
                self.scope.ctx.metrics.quota_limits(self.scope.name, self.limits)
                self._limits_stale = False
                self._limits_failures = 0
            except Exception as e:
                self._limits_failures += 1
                delay = step_backoff(self._limits_failures, getattr(e, "retry_after", None),
                                     self.scope.tuning)
                self._limits_stale, self._limits_retry_at = True, time.monotonic() + delay
                log.warning("Reading quota of %s failed (%d in a row), again in %.2f s: %s",
                            self.scope.name, self._limits_failures, delay, e)

    # -- act: ask the cloud again -------------------------------------------------------

    def act(self, now: float) -> None:
        adapter = self.scope.adapter
        due = self.listing_due() if self._listing_wanted else None
        if due is None:
            self._listing_wanted = False  # the wait that asked has ended: nobody would look
        elif self._listing_future is None and now >= max(due, self._listing_retry_at):
            self._listing_wanted = False
            self._listing_started = now   # before the call: what it shows is at least this new
            self._listing_future = self.scope.call(adapter.list_instances)
        if self._limits_stale and self._limits_future is None and self.reads_limits and \
                now >= self._limits_retry_at:
            self._limits_stale = False
            self._limits_future = self.scope.call(adapter.quota_limits)

    def listing_due(self) -> float | None:
        """When the next listing is due; None when no machine waits on the cloud.

        A machine asks for a listing when its step is sent (so one is under way
        while the step runs); if that step ends the wait, nobody is left to look,
        and a listing then would be a cloud call (and a pass) for nothing."""
        by_state: dict[str | None, list[float]] = {}
        for state, since in self._waits():
            by_state.setdefault(state, []).append(since)
        if not by_state:
            return None
        if self.listing is None:
            return 0.0
        taken = self.listing.taken_at
        return min(self.pacer.due_for(state, sinces, taken) for state, sinces in by_state.items())

    def timers(self) -> list[float]:
        due = []
        if self._listing_wanted and self._listing_future is None:
            listing_due = self.listing_due()
            if listing_due is None:
                self._listing_wanted = False   # nobody waits any more (as act would decide)
            else:
                due.append(max(listing_due, self._listing_retry_at))
        if self._limits_stale and self._limits_future is None and self._limits_failures:
            due.append(self._limits_retry_at)
        return due

    # -- images -------------------------------------------------------------------------

    def resolve_image(self, label) -> object | None:
        """The ready upload a diskimage label boots (cached briefly: uploads change rarely)."""
        name = label.diskimage
        if not name:
            return None
        now = time.monotonic()
        cached = self._image_cache.get(name)
        if cached is not None and now - cached[1] <= self.scope.tuning.image_cache_seconds:
            return cached[0]
        upload = images.latest_upload(self.scope.ctx.kazoo, name, self.scope.name)
        if upload is not None:   # a missing image is looked up again next time
            self._image_cache[name] = (upload, now)
        return upload

    def missing_image(self, pool_cfg, labels: list[str]) -> str | None:
        """Why the pool cannot serve these labels for want of an image, if it cannot."""
        for name in labels:
            label = pool_cfg.labels.get(name)
            if label is not None and label.diskimage and self.resolve_image(label) is None:
                return (f"no ready upload of image {label.diskimage} to provider "
                        f"{self.scope.name}")
        return None
