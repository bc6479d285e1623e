"""The launcher daemon: ZooKeeper, cache, leases, provider workers, min-ready, reloads.

Threads, and what each does here:

- The launcher loop (`Launcher._run`, thread "launcher") is the only owner
  of `Launcher.leases` and `Launcher.workers`: it alone wins and releases
  leases, starts and stops provider workers (in the lease callbacks), checks
  and reloads the config, resets lost requests and runs min-ready.
- apscheduler's thread (maintenance.py) only asks: `want_config_check` and
  `want_lost_requests_reset` note the ask and wake the loop; the per-worker
  jobs call worker methods that set a flag and wake that worker's own loop,
  on the workers of `worker_snapshot`.
- kazoo's reader thread (`_on_cache_event`, a cache event) hands events to the
  workers of `worker_snapshot` (and to min-ready's census) and wakes the loop.
- kazoo's threads (session states, lease watches in ownership.py) only set
  flags and wake the loop.
- Other threads (tests, tools) call `check_config()` or
  `reset_lost_requests()`, which ask the loop and wait until it has done it.
- `stop()` joins the loop first; only then does its own thread release the
  leases (stopping the workers).
- Each provider worker runs its own loop (provider.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

from nodepool import errors
from nodepool import timeline as tl
from nodepool.config import Config, ConfigError, ConfigFiles, Provider, provider_changes
from nodepool.config.files import Stamp
from nodepool.drivers import adapter_for
from nodepool.drivers.adapter import Adapter
from nodepool.launcher import maintenance
from nodepool.launcher.context import LauncherContext
from nodepool.launcher.effects import ZkEffects
from nodepool.launcher.fence import LeaseFence, SessionProof
from nodepool.launcher.guarded import ZOOKEEPER_LOST
from nodepool.launcher.minready import MinReady
from nodepool.launcher.ownership import MIN_READY_LEASE, Leases
from nodepool.launcher.placement import Placement
from nodepool.launcher.provider import ProviderWorker
from nodepool.launcher.spread import ProviderFilter
from nodepool.launcher.stats import StatsReporter
from nodepool.launcher.timeline_flush import TimelineFlusher
from nodepool.launcher.tuning import DEFAULT, Tuning
from nodepool.metrics import Metrics
from nodepool.model import NodeState, RequestState
from nodepool.nodescan import NodeScanner
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, requests
from nodepool.zk.cache import ZooKeeperCache
from nodepool.zk.client import ZooKeeperClient, connect_retrying
from nodepool.zk.components import LAUNCHER, Component, ComponentRegistry

log = logging.getLogger("nodepool.launcher")


def loop_timeout(now: float, idle: float, place_due: float | None,
                 min_ready_due: float | None) -> float:
    """How long the launcher loop may sleep: until the next free lease's wait ends or
    min-ready's pass is due (None: not ours to run, or nothing owed), at most `idle`.

    Only min-ready's owner runs its passes: a launcher that is not the owner owes one
    after every event and never pays it, so counting its due time spun its loop."""
    timeout = idle
    for due in (place_due, min_ready_due):
        if due is not None:
            timeout = min(timeout, due - now)
    return max(0.0, timeout)


class LoopWork:
    """Work other threads ask the launcher loop for, by name (a config check, a reset).

    Asks made while the loop is busy coalesce into one run. An asker may wait
    for its ask: for a run the loop began after the ask, to finish.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asked = 0     # asks so far
        self._taken = 0     # asks there had been when the loop last began the work
        self._done = 0      # asks there had been when the loop began the run it last finished

    def ask(self) -> int:
        """Note an ask (any thread); returns the ticket `wait` takes."""
        with self._cond:
            self._asked += 1
            return self._asked

    def take(self) -> bool:
        """On the loop: was the work asked for since it was last taken? Begins it if so."""
        with self._cond:
            if self._asked == self._taken:
                return False
            self._taken = self._asked
            return True

    def finish(self) -> None:
        """On the loop: the run `take` began is over (done or failed)."""
        with self._cond:
            self._done = self._taken
            self._cond.notify_all()

    def wait(self, ticket: int, timeout: float) -> bool:
        """Until a run that began after ask `ticket` finished; False if it did not in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= ticket, timeout)


class Launcher:
    """Everything one `nodepool-launcher` process runs.

    `tuning` holds its timings (nodepool/launcher/tuning.py); the parts read it
    from the context, `ctx.tuning`. `metrics`: statsd from STATSD_HOST/STATSD_PORT and
    Prometheus when not given (`Metrics.from_environ`); `NullMetrics()` turns them off.
    `serves` limits which providers it may own (`--providers`, `--exclude-providers`);
    the providers are spread over the live launchers (placement.py).
    """

    def __init__(self, config_path: str | ConfigFiles,
                 adapter_factory: Callable[[Provider], Adapter] = adapter_for,
                 hostname: str | None = None, tuning: Tuning = DEFAULT,
                 webapp: bool = False, metrics: Metrics | None = None,
                 zk_retry: bool = False, loaded: tuple[Config, Stamp | None] | None = None,
                 serves: ProviderFilter = ProviderFilter()):
        # nodepool.yaml and the secure file (-s), both watched for changes; `loaded`:
        # what `files.load_stamped()` returned already (the command read them to check).
        self.files = config_path if isinstance(config_path, ConfigFiles) \
            else ConfigFiles(config_path)
        self.config_path = self.files.config
        self.adapter_factory = adapter_factory
        self.hostname = hostname or socket.gethostname()   # as Nodepool names its components
        self.tuning = tuning
        self.metrics = metrics if metrics is not None else Metrics.from_environ()
        self.stats: StatsReporter | None = None
        self.config, self._config_stamp = loaded or self.files.load_stamped()
        # The loop's own (see the module docstring); other threads read worker_snapshot,
        # a tuple the loop replaces whole whenever `workers` changes.
        self.workers: dict[str, ProviderWorker] = {}
        self.worker_snapshot: tuple[ProviderWorker, ...] = ()
        self.leases: Leases | None = None
        self.owner_id = f"{self.hostname}:{os.getpid()}"   # in leases and the spread
        self.placement = Placement(self.owner_id, serves, grace=tuning.orphan_grace)
        self.component: Component | None = None   # our launcher component
        self._spread_changed = threading.Event()  # launchers or leases changed: place again
        self._place_due: float | None = None      # a free lease's wait ends (placement.py)
        self.passes = 0   # launcher loop passes completed (tests wait on it)
        self.config_checks = LoopWork()
        self.lost_request_resets = LoopWork()
        self.wakeup = threading.Event()       # wakes the loop
        self._changed = threading.Event()     # ... for something min-ready should look at
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.ctx: LauncherContext | None = None
        self.min_ready: MinReady | None = None
        self.min_ready_owner = False
        self._min_ready_due = 0.0
        self.scheduler = None
        self.proof: SessionProof | None = None   # proves our session alive (fencing)
        self.webapp = webapp
        self.web = None   # nodepool.web.LauncherWeb when webapp: its own threads
        self.timeline_flusher: TimelineFlusher | None = None
        # Start-up with ZooKeeper away: retried with a bounded backoff when zk_retry (the
        # daemon), else ZooKeeperUnavailable at once; zk_waiting says why (/ready shows it).
        self.zk_retry = zk_retry
        self.zk_waiting: str | None = None
        self._interrupted = threading.Event()

    # -- start and stop -----------------------------------------------------

    def start(self) -> None:
        if self.webapp:   # first: a port in use fails the start before anything runs
            from nodepool.web import LauncherWeb
            self.web = LauncherWeb(self).start()
        zk = self._connect()
        if zk is None:
            return   # interrupted while waiting for ZooKeeper
        cache = ZooKeeperCache(zk)
        cache.start()
        registry = ComponentRegistry(zk, self.hostname)
        self.component = registry.register(
            LAUNCHER, registry.base_data(LAUNCHER) | self.placement.component_data())
        scanner = NodeScanner()
        scanner.start()
        self.proof = SessionProof(zk, on_round_trip=self.metrics.zk_round_trip)
        self.proof.start()
        self.ctx = LauncherContext(zk=zk, cache=cache, registry=registry, scanner=scanner,
                                   config=self.config, hostname=self.hostname,
                                   tuning=self.tuning, metrics=self.metrics)
        self.min_ready = MinReady(self.ctx, workers=lambda: list(self.workers.values()))
        self.min_ready.start()
        cache.subscribe(self._on_cache_event)
        if self.web is not None:
            self.web.watch(cache)   # the status page's feed of hand-overs and failures
        self.timeline_flusher = TimelineFlusher(
            self.ctx, owned=lambda: {w.name for w in self.worker_snapshot})
        self.timeline_flusher.start()
        self.leases = Leases(zk, owner=self.owner_id,
                             on_acquired=self._lease_won, on_lost=self._lease_lost,
                             wake=self.wake)
        self._place()   # the leases this launcher seeks, before the loop runs
        self.thread = threading.Thread(target=self._run, name="launcher", daemon=True)
        self.thread.start()
        self.scheduler = maintenance.start(self)
        if self.metrics.enabled:
            self.stats = StatsReporter(self.ctx, lambda: self.min_ready_owner,
                                       lambda: [w.name for w in self.worker_snapshot],
                                       self.tuning.metrics_interval)
            self.stats.start()
        log.info("Launcher %s (%s) started with %d provider(s); it may own %s",
                 self.hostname, self.owner_id, len(self.config.providers),
                 self.placement.serves)

    def _connect(self) -> ZooKeeperClient | None:
        """A connected client; while ZooKeeper is away, retried (zk_retry) until it
        answers or interrupt() is called (then None); `zk_waiting` says why meanwhile."""
        return connect_retrying(self.config, self.zk_retry, self._interrupted,
                                lambda reason: setattr(self, "zk_waiting", reason))

    def interrupt(self) -> None:
        """Any thread or a signal handler: give up a start still waiting for ZooKeeper."""
        self._interrupted.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking requests, hand back pending ones, leave launches resumable."""
        if self.stopping:
            return
        self.stopping = True
        self.interrupt()
        log.info("Launcher stopping")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self.stats is not None:
            self.stats.stop()
        self.wake()
        if self.thread is not None:
            self.thread.join(self.tuning.loop_call_timeout if timeout is None else timeout)
            if self.thread.is_alive():
                log.error("The launcher loop did not end in time; releasing its leases anyway")
        if self.web is not None:
            self.web.stop()
        if self.ctx is None:
            return
        # The loop has ended: the leases and workers are this thread's now.
        if self.timeline_flusher is not None:
            self.timeline_flusher.stop()
        if self.component is not None:
            # First: the others place our providers without us and wait for them, so each
            # is taken the moment its lease goes.
            self.component.unregister()
        if self.leases is not None:
            self.leases.release_all()
        self.ctx.scanner.stop()
        if self.proof is not None:
            self.proof.stop()
        self.ctx.registry.close()
        self.ctx.cache.stop()
        self.ctx.zk.disconnect()
        self.metrics.stop()
        log.info("Launcher stopped")

    def wake(self) -> None:
        """Something changed (any thread): wake the loop for a min-ready pass too."""
        self._changed.set()
        self.wakeup.set()

    # -- what other threads ask of the loop ----------------------------------------------

    def want_config_check(self) -> int:
        """The config-reload job (any thread): have the loop check the file soon."""
        ticket = self.config_checks.ask()
        self.wakeup.set()
        return ticket

    def want_lost_requests_reset(self) -> int:
        """The lost-requests job (any thread): have the loop reset lost requests soon."""
        ticket = self.lost_request_resets.ask()
        self.wakeup.set()
        return ticket

    def check_config(self, timeout: float | None = None) -> bool:
        """Check the config file now and wait until the loop has (tests, tools).

        On the loop's own thread, or when no loop runs, it checks right here.
        False if the loop did not get to it within `timeout`.
        """
        if not self._loop_elsewhere():
            self._check_config()
            return True
        return self.config_checks.wait(self.want_config_check(), self._call_timeout(timeout))

    def reset_lost_requests(self, timeout: float | None = None) -> bool:
        """Reset lost requests now and wait until the loop has (as `check_config`)."""
        if not self._loop_elsewhere():
            self._reset_lost_requests()
            return True
        return self.lost_request_resets.wait(self.want_lost_requests_reset(),
                                             self._call_timeout(timeout))

    def _loop_elsewhere(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive() and thread is not threading.current_thread()

    def _call_timeout(self, timeout: float | None) -> float:
        return self.tuning.loop_call_timeout if timeout is None else timeout

    # -- leases ----------------------------------------------------------------

    def _lease_won(self, name: str) -> None:
        if name == MIN_READY_LEASE:
            self.min_ready_owner = True
            return
        provider = self.ctx.config.providers.get(name)
        if provider is None:
            self.leases.release(name)
            return
        try:
            adapter = self.adapter_factory(provider)
        except Exception:
            log.exception("provider=%s Cannot build its adapter; not serving it", name)
            return
        fence = LeaseFence(self.proof, name, self.leases.sessions.get(name))
        worker = ProviderWorker(self.ctx, provider, adapter, fence)
        self.workers[name] = worker
        self.worker_snapshot = tuple(self.workers.values())
        worker.start()

    def _lease_lost(self, name: str) -> None:
        if name == MIN_READY_LEASE:
            self.min_ready_owner = False
            return
        worker = self.workers.pop(name, None)
        self.worker_snapshot = tuple(self.workers.values())
        if worker is not None:
            worker.stop(hand_back=self.ctx.zk.connected)

    def _place(self) -> None:
        """Seek the leases of the providers ours by the spread; hand over those another
        launcher owns and waits for; say which we wait for (placement.py)."""
        cache, held = self.ctx.cache, self.leases.held
        holders = cache.lease_holders()
        decision = self.placement.decide(self.config.providers, cache.launcher_components(),
                                         holders, held, time.monotonic())
        for name in sorted(decision.hand_over):
            log.info("provider=%s Handing it over to launcher %s, its owner by the spread",
                     name, decision.owners.get(name))
        self.leases.want(set(decision.want) | {MIN_READY_LEASE})
        waiting = sorted(p for p in decision.want
                         if p not in self.leases.held and holders.get(p) not in (None, self.owner_id))
        if self.component is not None:
            self.component.update(waiting=waiting)
        self._place_due = decision.due
        self._spread_changed.clear()   # only now: a pass cut short by ZooKeeper places again

    # -- the loop ------------------------------------------------------------

    def _on_cache_event(self, event) -> None:
        """On kazoo's reader thread. The loop is woken only when this event owes
        it something new: a placement, or the first change since its last min-ready
        pass (later ones wait for that pass; a busy launcher has many per pass)."""
        spread = event.kind in (zkcache.LAUNCHER_COMPONENT, zkcache.LEASE)
        if spread:
            self._spread_changed.set()
        for worker in self.worker_snapshot:
            worker.notify(event)
        if spread or not self._changed.is_set():
            self.wake()

    def _run(self) -> None:
        tuning = self.tuning
        # `_changed` set: a min-ready pass is owed (something changed since the last one);
        # it stays set until that pass starts, so later events need not wake the loop.
        self._changed.set()
        zk_lost_said = False
        while not self.stopping:
            timeout = loop_timeout(time.monotonic(), tuning.loop_idle_wait, self._place_due,
                                   self._min_ready_due if self._changed.is_set() and
                                   self.min_ready_owner else None)
            self.wakeup.wait(timeout)
            self.wakeup.clear()
            if time.monotonic() - self._min_ready_due > tuning.min_ready_every:
                self._changed.set()   # the periodic pass (retries what failed)
            if self.stopping:
                break
            try:
                # The config first: the leases a reload wants are then tried in this pass.
                if self.config_checks.take():
                    try:
                        self._check_config()
                    finally:
                        self.config_checks.finish()
                if self._spread_changed.is_set() or (
                        self._place_due is not None and time.monotonic() >= self._place_due):
                    self._place()
                self.leases.poll()
                if self.lost_request_resets.take():
                    try:
                        self._reset_lost_requests()
                    finally:
                        self.lost_request_resets.finish()
                now = time.monotonic()
                if self._changed.is_set() and self.min_ready_owner and \
                        self.ctx.zk.connected and now >= self._min_ready_due:
                    self._changed.clear()   # events from here on owe the next pass
                    cpu = time.thread_time()
                    self.min_ready.run()
                    # A pass costs the labels and min-ready's own requests (the census
                    # is kept from events); should it grow costly, space the passes
                    # so their CPU stays near 5 % of a core.
                    spent = time.thread_time() - cpu
                    self._min_ready_due = now + max(tuning.min_ready_interval,
                                                    spent / tuning.min_ready_cpu_share)
            except ZOOKEEPER_LOST as e:
                # Expected at a leader loss or after a pause: one line, no traceback.
                if not zk_lost_said:
                    zk_lost_said = True
                    log.warning("Launcher loop: ZooKeeper connection lost (%s); waiting for "
                                "the session", type(e).__name__)
                continue
            except Exception:
                log.exception("Launcher loop pass failed; continuing")
                time.sleep(tuning.loop_failure_pause)
            else:
                zk_lost_said = False
            finally:
                self.passes += 1

    # -- the loop's maintenance work (asked for by maintenance.py's jobs) ---------------

    def _stamp(self) -> object:
        return self.files.stamp()

    def _check_config(self) -> None:
        """Re-read the config when the file changed; keep the last good one on errors.

        On the launcher loop: it releases the leases of removed and changed
        providers (stopping their workers) and wants the new set.
        """
        stamp = self._stamp()
        if stamp == self._config_stamp or stamp is None:
            return
        self._config_stamp = stamp
        try:
            new = self.files.load()
        except (ConfigError, OSError) as e:
            log.error("New configuration %s rejected, keeping the last good one:\n%s",
                      self.config_path, e)
            return
        changes = provider_changes(self.config, new)
        if (new.zookeeper_hosts(), new.zookeeper_chroot()) != \
                (self.config.zookeeper_hosts(), self.config.zookeeper_chroot()):
            log.warning("ZooKeeper settings changed: restart the launcher to use them")
        self.config = new
        self.ctx.config = new
        for name in changes.removed + changes.changed:
            log.info("provider=%s Configuration %s: restarting it", name,
                     "removed" if name in changes.removed else "changed")
            self.leases.release(name)
        self._place()
        log.info("Configuration reloaded: %d added, %d removed, %d changed, %d unchanged",
                 len(changes.added), len(changes.removed), len(changes.changed),
                 len(changes.unchanged))

    def _reset_lost_requests(self) -> None:
        """A `pending` request nobody holds lost its launcher: reset it to `requested`.

        On the launcher loop (ZooKeeper calls only; it touches no lease or worker).
        """
        kazoo = self.ctx.kazoo
        with self.ctx.lock:
            ours = set(self.ctx.handled_requests)
        for req in self.ctx.cache.requests():
            if req.state != RequestState.PENDING or req.id in ours:
                continue
            try:
                lock = locks.lock_request(kazoo, req.id, identifier=f"{self.hostname}:reset")
            except errors.LockFailed:
                continue
            try:
                fresh = requests.get_request(kazoo, req.id)
                if fresh is None or fresh.state != RequestState.PENDING:
                    continue
                effects = ZkEffects(self.ctx.cache, lambda: kazoo, f"{self.hostname}:reset",
                                    self.wake)
                for node in self.ctx.cache.nodes():
                    if node.allocated_to == req.id and node.state == NodeState.READY:
                        # Lock, clear, unlock; conditional on the version the cache showed.
                        effects.unallocate_async(node)
                fresh.set_state(RequestState.REQUESTED)
                requests.update_request(kazoo, fresh)
                log.warning("request=%s Reset to requested: its launcher is gone", req.id)
                self.ctx.timeline.record(req.id, self.ctx.timeline.launcher(self.hostname),
                                         tl.RESET, "it was pending and its launcher is gone")
            except (errors.NotFound, errors.VersionConflict):
                continue
            finally:
                locks.release(lock)
