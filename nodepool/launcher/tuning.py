"""The launcher's tuning constants, in one frozen dataclass a test or benchmark can override.

`Launcher(..., tuning=Tuning(...))` puts its instance on the LauncherContext
(`ctx.tuning`), where every part reads it. The defaults are what production runs.
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
    # Machines
    delete_attempt_max: float = 300.0  # a delete not done by then (or launch-timeout) restarts
    quota_refusal_memory: float = 60.0  # after a cloud quota refusal, deletions re-read limits
    standing_retry: float = 10.0       # a static host that did not answer is tried again
    spare_unseen_max: float = 60.0     # a ready spare the cache has not shown stays counted


DEFAULT = Tuning()
