"""The launcher's tuning constants, in one frozen dataclass a test or benchmark can override.

`Launcher(..., tuning=Tuning(...))` puts its instance on the LauncherContext
(`ctx.tuning`), where every part reads it. The defaults are what production runs;
a test or benchmark builds another with `dataclasses.replace(DEFAULT, ...)`.

None of these is a protocol value shared with other Nodepool components (min-ready's
request priority 900 and the lease names stay where they are used): changing one
only changes how soon or how often this launcher does something.

Where each group was a module constant (the field is the constant's name in lower
case): the launcher loop's in daemon.py (MIN_READY_INTERVAL, MIN_READY_EVERY and
the loop's literals), min-ready's in minready.py (FAILED_BACKOFF, REFUSAL_HOLD),
the periodic jobs' in maintenance.py (CONFIG_CHECK, LOST_REQUESTS, TIMERS as
full_cleanup, QUOTA_REFRESH, LEAK_SCAN, REQUEST_LOCKS, REQUEST_LOCK_GRACE);
ownership.py has none. The provider worker's lived in provider.py
(EXECUTOR_WORKERS, LISTING_MIN_INTERVAL, LISTING_MAX_INTERVAL, LISTING_AGE_FRACTION,
IDLE_WAIT, IMAGE_CACHE_SECONDS, REQUEST_RETRY), machines.py (DELETE_ATTEMPT_MAX,
QUOTA_REFUSAL_MEMORY), lifecycle.py (STANDING_RETRY), tasks.py (BACKOFF_MIN,
BACKOFF_MAX, STEPS_PER_RUN), spares.py (SPARE_UNSEEN_MAX) and handling.py
(SPARE_CANDIDATES, used by taking.py).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Seconds unless named otherwise."""

    # Provider worker
    executor_workers: int = 4          # threads per provider for blocking cloud calls
    idle_wait: float = 60.0            # longest a loop sleeps without an event or timer
    request_retry: float = 0.1         # a request whose take failed is looked at again
    image_cache_seconds: float = 5.0   # a diskimage's latest upload is looked up again
    spare_candidates: int = 16         # spares looked at per label beyond those a request needs
    # The shared listing: taken more often the younger the youngest wait on the cloud
    # is (an eighth of its age), between these bounds.
    listing_min_interval: float = 0.02
    listing_max_interval: float = 2.0
    listing_age_fraction: float = 1 / 8
    # Once waits in a machine state have a typical length (pacing.py), the listing is
    # taken at these fractions of it (the last must be 1.0), then every
    # `listing_past_typical` of it up to twice it, then by the age rule again.
    listing_probes: tuple[float, ...] = (0.97, 1.0)
    listing_past_typical: float = 0.05
    listing_history: int = 16          # ended waits per state the typical length is of
    # Machines
    delete_attempt_max: float = 300.0  # a delete not done by then (or launch-timeout) restarts
    quota_refusal_memory: float = 60.0  # after a cloud quota refusal, deletions re-read limits
    standing_retry: float = 10.0       # a static host that did not answer is tried again
    spare_unseen_max: float = 60.0     # a ready spare the cache has not shown stays counted
    # Machine steps (tasks.py)
    backoff_min: float = 0.05          # a failing step's first retry delay, doubling ...
    backoff_max: float = 30.0          # ... up to this
    steps_per_run: int = 8             # a machine's steps run back to back, at most this many

    # Steps of a provider loop pass (guarded.py): one that raised waits, doubling
    step_backoff_min: float = 0.5
    step_backoff_max: float = 30.0

    # The launcher loop (daemon.py)
    loop_idle_wait: float = 1.0        # longest the loop sleeps (it wakes at once on events)
    loop_failure_pause: float = 0.1    # after a pass failed unexpectedly: no spinning on a fault
    min_ready_interval: float = 0.1    # min-ready runs at most this often, however many events
    min_ready_every: float = 10.0      # and at least this often (it retries what failed)
    # The share of a core min-ready may take: a pass that cost c seconds of CPU is
    # followed by the next no sooner than c / min_ready_cpu_share later.
    min_ready_cpu_share: float = 0.05
    loop_call_timeout: float = 30.0    # longest check_config()/reset_lost_requests() wait
    # A provider lease nobody holds waits this long for its owner by the spread, per
    # place in the standby line, before another launcher takes it (placement.py)
    orphan_grace: float = 3.0
    # min-ready (minready.py)
    min_ready_failed_backoff: float = 60.0  # a label whose request or spare launch failed
    min_ready_refusal_hold: float = 2.0     # a worker that could not launch a label is not asked
    # Periodic jobs (maintenance.py): how often each is set in motion
    config_check: float = 1.0          # is nodepool.yaml changed?
    lost_requests: float = 5.0         # pending requests whose launcher died
    full_cleanup: float = 10.0         # a cleanup pass over every node (events cover the rest)
    quota_refresh: float = 60.0        # re-read each cloud's limits
    leak_scan: float = 60.0            # leaked instances (deleted after two scans)
    request_locks: float = 300.0       # empty lock dirs of vanished requests ...
    request_lock_grace: float = 300.0  # ... gone at least this long
    timeline_sweep: float = 60.0       # timelines of requests that are gone (min-ready owner)
    # Request timelines (timeline_flush.py)
    timeline_flush: float = 1.0        # the flusher's pass: changed timelines written
    timeline_delay: float = 1.0        # a request still waiting this long gets its timeline
    # Metrics (launcher/stats.py): the gauges are computed from the cache this often
    metrics_interval: float = 15.0     # Nodepool's STATS_INTERVAL


DEFAULT = Tuning()
