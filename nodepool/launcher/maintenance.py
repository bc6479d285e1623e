"""Every periodic job of the launcher, registered with apscheduler in this one file.

Everything else is event-driven; these are the jobs that are periodic by
nature. Each job only sets something in motion (wakes a loop, flags a scan):
the work itself runs where its locks and executors live.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler

from nodepool.zk import requests

log = logging.getLogger("nodepool.launcher.maintenance")

CONFIG_CHECK = 1.0          # is nodepool.yaml changed?
LOST_REQUESTS = 5.0         # pending requests whose launcher died
TIMERS = 10.0               # a cleanup pass over every node (events cover the rest)
QUOTA_REFRESH = 60.0        # re-read each cloud's limits
LEAK_SCAN = 60.0            # leaked instances (deleted after two passes)
REQUEST_LOCKS = 300.0       # empty lock dirs of vanished requests
REQUEST_LOCK_GRACE = 300.0


def start(launcher) -> BackgroundScheduler:
    """Register and start the jobs for `launcher` (a nodepool.launcher.daemon.Launcher)."""
    scheduler = BackgroundScheduler(daemon=True)

    def job(fn, seconds, name):
        def run():
            if launcher.stopping or not launcher.ctx.zk.connected:
                return
            try:
                fn()
            except Exception:
                log.exception("Periodic job %s failed", name)
        scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name,
                          max_instances=1, coalesce=True)

    def each_worker(method):
        return lambda: [getattr(w, method)() for w in list(launcher.workers.values())]

    job(launcher.check_config, CONFIG_CHECK, "config-reload")
    job(launcher.reset_lost_requests, LOST_REQUESTS, "lost-requests")
    job(each_worker("request_full_cleanup"), TIMERS, "full-cleanup-pass")
    job(each_worker("refresh_quota"), QUOTA_REFRESH, "quota-refresh")
    job(each_worker("request_leak_scan"), LEAK_SCAN, "leaked-instances")
    job(lambda: requests.delete_stale_request_locks(launcher.ctx.kazoo, REQUEST_LOCK_GRACE),
        REQUEST_LOCKS, "stale-request-locks")
    scheduler.start()
    return scheduler
