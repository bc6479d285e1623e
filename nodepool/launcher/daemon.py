"""The launcher daemon: ZooKeeper, cache, leases, provider workers, min-ready, reloads."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from nodepool import errors
from nodepool.config import ConfigError, load_config, provider_changes
from nodepool.drivers import adapter_for
from nodepool.launcher import handover, maintenance
from nodepool.launcher.context import LauncherContext
from nodepool.launcher.minready import MinReady
from nodepool.launcher.ownership import MIN_READY_LEASE, Leases
from nodepool.launcher.provider import ProviderWorker
from nodepool.model import NodeState, RequestState
from nodepool.nodescan import NodeScanner
from nodepool.zk import locks, requests
from nodepool.zk.cache import ZooKeeperCache
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.components import ComponentRegistry

log = logging.getLogger("nodepool.launcher")

MIN_READY_INTERVAL = 0.1   # at most this often, however many events arrive
MIN_READY_EVERY = 10.0     # and at least this often


class Launcher:
    """Everything one `nodepool-launcher` process runs."""

    def __init__(self, config_path: str, adapter_factory: Callable[[Any], Any] = adapter_for,
                 hostname: str | None = None):
        self.config_path = config_path
        self.adapter_factory = adapter_factory
        self.hostname = hostname or socket.getfqdn()
        self.config = load_config(config_path)
        self._config_stamp = self._stamp()
        self.workers: dict[str, ProviderWorker] = {}
        self.wakeup = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.ctx: LauncherContext | None = None
        self.min_ready: MinReady | None = None
        self.min_ready_owner = False
        self._min_ready_due = 0.0
        self.scheduler = None

    # -- start and stop -----------------------------------------------------

    def start(self) -> None:
        zk = ZooKeeperClient.from_config(self.config)
        zk.connect()
        cache = ZooKeeperCache(zk)
        cache.start()
        registry = ComponentRegistry(zk, self.hostname)
        registry.register_launcher()
        scanner = NodeScanner()
        scanner.start()
        self.ctx = LauncherContext(zk=zk, cache=cache, registry=registry, scanner=scanner,
                                   config=self.config, hostname=self.hostname)
        self.min_ready = MinReady(self.ctx, workers=lambda: list(self.workers.values()))
        self.min_ready.start()
        cache.subscribe(self._on_cache_event)
        self.leases = Leases(zk, owner=f"{self.hostname}:{os.getpid()}",
                             on_acquired=self._lease_won, on_lost=self._lease_lost,
                             wake=self.wake)
        self.leases.want(set(self.config.providers) | {MIN_READY_LEASE})
        self.thread = threading.Thread(target=self._run, name="launcher", daemon=True)
        self.thread.start()
        self.scheduler = maintenance.start(self)
        log.info("Launcher %s started with %d provider(s)", self.hostname,
                 len(self.config.providers))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests, hand back pending ones, leave launches resumable."""
        if self.stopping:
            return
        self.stopping = True
        log.info("Launcher stopping")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        self.wake()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.ctx is None:
            return
        self.leases.release_all()
        self.ctx.scanner.stop()
        self.ctx.registry.close()
        self.ctx.cache.stop()
        self.ctx.zk.disconnect()
        log.info("Launcher stopped")

    def wake(self) -> None:
        self.wakeup.set()

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
        worker = ProviderWorker(self.ctx, provider, adapter)
        self.workers[name] = worker
        worker.start()

    def _lease_lost(self, name: str) -> None:
        if name == MIN_READY_LEASE:
            self.min_ready_owner = False
            return
        worker = self.workers.pop(name, None)
        if worker is not None:
            worker.stop(hand_back=self.ctx.zk.connected)

    # -- the loop ------------------------------------------------------------

    def _on_cache_event(self, event) -> None:
        for worker in list(self.workers.values()):
            worker.notify(event)
        self.wake()

    def _run(self) -> None:
        wanted = True   # a min-ready pass is owed (something changed since the last one)
        while not self.stopping:
            timeout = 1.0
            if wanted:
                timeout = max(0.0, min(timeout, self._min_ready_due - time.monotonic()))
            if self.wakeup.wait(timeout) or time.monotonic() - self._min_ready_due > \
                    MIN_READY_EVERY:
                wanted = True   # an event, or the periodic pass (retries after failures)
            self.wakeup.clear()
            if self.stopping:
                break
            try:
                self.leases.poll()
                now = time.monotonic()
                if wanted and self.min_ready_owner and self.ctx.zk.connected and \
                        now >= self._min_ready_due:
                    wanted = False
                    cpu = time.thread_time()
                    self.min_ready.run()
                    # A pass costs the labels and min-ready's own requests (the census
                    # is kept from events); should it grow costly, space the passes
                    # so their CPU stays near 5 % of a core.
                    spent = time.thread_time() - cpu
                    self._min_ready_due = now + max(MIN_READY_INTERVAL, 20 * spent)
            except errors.ZooKeeperUnavailable:
                continue
            except Exception:
                log.exception("Launcher loop pass failed; continuing")
                time.sleep(0.1)

    # -- maintenance entry points (called by the scheduler) --------------------------

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.config_path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def check_config(self) -> None:
        """Re-read the config when the file changed; keep the last good one on errors."""
        stamp = self._stamp()
        if stamp == self._config_stamp or stamp is None:
            return
        self._config_stamp = stamp
        try:
            new = load_config(self.config_path)
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
        self.leases.want(set(new.providers) | {MIN_READY_LEASE})
        log.info("Configuration reloaded: %d added, %d removed, %d changed, %d unchanged",
                 len(changes.added), len(changes.removed), len(changes.changed),
                 len(changes.unchanged))

    def reset_lost_requests(self) -> None:
        """A `pending` request nobody holds lost its launcher: reset it to `requested`."""
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
                for node in self.ctx.cache.nodes():
                    if node.allocated_to == req.id and node.state == NodeState.READY:
                        handover.unallocate(kazoo, node, f"{self.hostname}:reset")
                fresh.set_state(RequestState.REQUESTED)
                requests.update_request(kazoo, fresh)
                log.warning("request=%s Reset to requested: its launcher is gone", req.id)
            except (errors.NotFound, errors.VersionConflict):
                continue
            finally:
                locks.release(lock)
