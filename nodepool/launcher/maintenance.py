"""Every periodic job of the launcher, registered with apscheduler in this one file.

Everything else is event-driven; these are the jobs that are periodic by
nature. They run on apscheduler's thread, and each only sets something in
motion: the work itself runs where its state, locks and executors live.

- config-reload and lost-requests ask the launcher loop (daemon.py), which
  owns the leases and the provider workers, to check the config file and to
  reset lost requests (`want_config_check`, `want_lost_requests_reset`: the
  ask is noted and the loop woken; a reload, its lease changes and worker
  restarts all happen on the loop).
- full-cleanup-pass, quota-refresh and leaked-instances set a flag on each
  provider worker of `Launcher.worker_snapshot` and wake that worker's loop.
- stale-request-locks is the exception: it does its ZooKeeper work here. It
  deletes only empty lock dirs of requests that no longer exist and shares no
  state with any loop, so running it elsewhere would only delay that loop.
  request-timelines likewise deletes the timelines of requests that are gone,
  on the launcher that owns min-ready only (one sweeper, not one per launcher).

How often each runs is in `Launcher.tuning` (nodepool/launcher/tuning.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from apscheduler.schedulers.background import BackgroundScheduler

from nodepool.zk import requests, timelines

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher
    from nodepool.launcher.provider import ProviderWorker

log = logging.getLogger("nodepool.launcher.maintenance")


def start(launcher: Launcher) -> BackgroundScheduler:
    """Register and start the jobs for `launcher`."""
    scheduler = BackgroundScheduler(daemon=True)
    tuning = launcher.tuning

    def job(fn: Callable[[], object], seconds: float, name: str) -> None:
        def run() -> None:
            if launcher.stopping or not launcher.ctx.zk.connected:
                return
            try:
                fn()
            except Exception:
                log.exception("Periodic job %s failed", name)
        scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name,
                          max_instances=1, coalesce=True)

    def each_worker(ask: Callable[[ProviderWorker], None]) -> Callable[[], None]:
        def run() -> None:
            for worker in launcher.worker_snapshot:
                ask(worker)
        return run

    job(launcher.want_config_check, tuning.config_check, "config-reload")
    job(launcher.want_lost_requests_reset, tuning.lost_requests, "lost-requests")
    job(each_worker(lambda w: w.request_full_cleanup()), tuning.full_cleanup,
        "full-cleanup-pass")
    job(each_worker(lambda w: w.refresh_quota()), tuning.quota_refresh, "quota-refresh")
    job(each_worker(lambda w: w.request_leak_scan()), tuning.leak_scan, "leaked-instances")
    job(lambda: requests.delete_stale_request_locks(launcher.ctx.kazoo,
                                                    tuning.request_lock_grace),
        tuning.request_locks, "stale-request-locks")
    job(lambda: sweep_timelines(launcher), tuning.timeline_sweep, "request-timelines")
    scheduler.start()
    return scheduler


def sweep_timelines(launcher: Launcher) -> list[str]:
    """The orphan sweep of request timelines, by min-ready's owner only."""
    if not launcher.min_ready_owner:
        return []
    return timelines.delete_orphans(launcher.ctx.kazoo)
