"""The launcher loop owns the leases and the provider workers: scheduled jobs only ask it."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

from requestor import wait_for

from nodepool.launcher.daemon import Launcher, LoopWork, loop_timeout
from nodepool.launcher.tuning import DEFAULT
from nodepool.testing.fake_adapter import FakeAdapter


def run_job_on_a_foreign_thread(launcher: Launcher, name: str) -> None:
    """Run the function apscheduler runs for job `name`, to its end, on a thread of our own."""
    fn = launcher.scheduler.get_job(name).func
    thread = threading.Thread(target=fn, name=f"foreign-{name}")
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"job {name} did not return"


class Watch:
    """Records which thread changes leases, workers or the config; can hold the loop.

    `hold()` parks the launcher loop inside `leases.poll` (before it polls)
    until `release()`, so a test knows the loop did nothing in between.
    """

    def __init__(self, launcher: Launcher):
        self.launcher = launcher
        self.calls: list[tuple[str, threading.Thread]] = []
        self._open = threading.Event()
        self._open.set()
        self._parked = threading.Event()
        leases = launcher.leases
        for obj, name in [(leases, "want"), (leases, "release"), (leases, "on_acquired"),
                          (leases, "on_lost"), (launcher, "_check_config"),
                          (launcher, "_reset_lost_requests")]:
            setattr(obj, name, self._recorded(name, getattr(obj, name)))
        poll = leases.poll

        def held_poll():
            if not self._open.is_set():
                self._parked.set()
                self._open.wait(30)
            poll()
        leases.poll = held_poll

    def _recorded(self, name, fn):
        def call(*args, **kwargs):
            self.calls.append((name, threading.current_thread()))
            return fn(*args, **kwargs)
        return call

    def names(self) -> set[str]:
        return {name for name, _ in self.calls}

    def foreign(self) -> list[tuple[str, str]]:
        return [(name, t.name) for name, t in self.calls if t is not self.launcher.thread]

    def hold(self) -> None:
        self._parked.clear()
        self._open.clear()
        self.launcher.wake()
        wait_for(self._parked.is_set, what="the launcher loop parked")
        self.calls.clear()   # what the loop did before it parked

    def release(self) -> None:
        self._open.set()


def test_config_reload_job_only_asks_and_the_loop_restarts_the_provider(env):
    env.write_config(max_servers=10)
    launcher = env.start_launcher()
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider up")
    watch = Watch(launcher)
    held, config = set(launcher.leases.held), launcher.ctx.config
    watch.hold()
    try:
        env.write_config(max_servers=5)
        passes = launcher.passes
        run_job_on_a_foreign_thread(launcher, "config-reload")
        # The job has returned: had it done the reload itself, it would show now.
        assert launcher.workers == {"fake1": worker} and launcher.worker_snapshot == (worker,)
        assert launcher.leases.held == held and launcher.ctx.config is config
        assert watch.calls == [] and launcher.passes == passes
    finally:
        watch.release()
    new = wait_for(lambda: launcher.workers.get("fake1") not in (None, worker),
                   what="provider restarted") and launcher.workers["fake1"]
    assert launcher.passes > passes
    assert new.pools["main"].cfg.max_servers == 5 and launcher.worker_snapshot == (new,)
    assert {"_check_config", "release", "on_lost", "on_acquired"} <= watch.names()
    assert watch.foreign() == []
    assert env.requestor.wait(env.requestor.submit(["small"]))["state"] == "fulfilled"


def test_config_change_is_still_applied_within_about_a_second_of_the_write(env):
    env.write_config(max_servers=10)
    launcher = env.start_launcher()
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider up")
    watch = Watch(launcher)
    env.write_config(max_servers=5)      # nobody calls anything: the scheduled check finds it
    start = time.monotonic()
    new = wait_for(lambda: launcher.workers.get("fake1") not in (None, worker), timeout=5,
                   what="provider restarted") and launcher.workers["fake1"]
    assert time.monotonic() - start < 2.5    # the check runs every second
    assert new.pools["main"].cfg.max_servers == 5
    assert "_check_config" in watch.names() and watch.foreign() == []


def test_lost_requests_job_only_asks_and_the_loop_resets_them(env):
    env.write_config()
    launcher = env.start_launcher()
    wait_for(lambda: "fake1" in launcher.workers, what="provider up")
    rq = env.requestor
    rid = rq.submit(["small"])
    body = rq.wait(rid)
    env.kazoo.delete(f"/nodepool/requests/{rid}")
    body.update(state="pending", nodes=[])
    watch = Watch(launcher)
    watch.hold()
    try:
        # A request some dead launcher left pending (no lock held by anyone).
        path = env.kazoo.create("/nodepool/requests/200-", json.dumps(body).encode(),
                                sequence=True)
        lost = path.rsplit("/", 1)[1]
        run_job_on_a_foreign_thread(launcher, "lost-requests")
        assert rq.get(lost)["state"] == "pending" and watch.calls == []
    finally:
        watch.release()
    assert rq.wait(lost)["state"] == "fulfilled"
    assert "_reset_lost_requests" in watch.names() and watch.foreign() == []


def test_check_config_from_another_thread_waits_for_the_loop(env):
    env.write_config()
    launcher = env.start_launcher()
    wait_for(lambda: "fake1" in launcher.workers, what="provider up")
    watch = Watch(launcher)
    env.write_config(min_ready=1)
    assert launcher.check_config() is True
    assert launcher.ctx.config.labels["small"].min_ready == 1
    assert watch.foreign() == [] and "_check_config" in watch.names()
    watch.hold()
    try:
        assert launcher.check_config(timeout=0.2) is False     # the loop is busy elsewhere
    finally:
        watch.release()


def test_tuning_reaches_the_context_and_the_schedule(env):
    env.write_config()
    tuning = dataclasses.replace(DEFAULT, config_check=0.25, lost_requests=2.0)
    launcher = Launcher(env.config_path, hostname="nl-tuned", tuning=tuning,
                        adapter_factory=lambda provider: FakeAdapter(provider, env.cloud))
    env.launchers.append(launcher)
    launcher.start()
    wait_for(lambda: "fake1" in launcher.workers, what="provider up")
    assert launcher.ctx.tuning is tuning     # where every part reads it
    interval = launcher.scheduler.get_job("config-reload").trigger.interval.total_seconds()
    assert interval == 0.25
    assert launcher.scheduler.get_job("lost-requests").trigger.interval.total_seconds() == 2.0


def test_loop_work_asks_coalesce_and_a_wait_needs_a_run_begun_after_the_ask():
    work = LoopWork()
    assert work.take() is False
    first = work.ask()
    second = work.ask()
    assert work.take() is True and work.take() is False    # two asks, one run
    third = work.ask()                                      # asked while that run is under way
    work.finish()
    assert work.wait(first, 0) and work.wait(second, 0)
    assert not work.wait(third, 0)                          # that run began before it was asked
    assert work.take() is True
    work.finish()
    assert work.wait(third, 0)


def test_loop_sleeps_until_the_next_due_time_and_at_most_its_idle_wait():
    assert loop_timeout(100.0, 1.0, None, None) == 1.0
    assert loop_timeout(100.0, 1.0, 100.25, None) == 0.25
    assert loop_timeout(100.0, 1.0, None, 100.5) == 0.5
    assert loop_timeout(100.0, 1.0, 100.75, 100.5) == 0.5
    assert loop_timeout(100.0, 1.0, 99.0, None) == 0.0   # overdue: at once

