"""What every part of a launcher shares: ZooKeeper, the cache, the config, the scanner."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Callable

from kazoo.client import KazooClient

from nodepool.config.model import Config
from nodepool.launcher.planner import RegisteredPool
from nodepool.launcher.recorder import Recorder
from nodepool.launcher.tuning import DEFAULT, Tuning
from nodepool.metrics import Metrics
from nodepool.zk.cache import ZooKeeperCache
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.components import ComponentRegistry

if TYPE_CHECKING:
    from nodepool.nodescan import NodeScanner

MIN_READY_REQUESTOR = "NodePool:min-ready"


@dataclasses.dataclass
class LauncherContext:
    """Shared services; `config` is swapped whole when a new file validates.

    `config` is replaced only by the launcher loop (a reload); other threads
    read whichever whole value is current. `tuning` never changes.
    """

    zk: ZooKeeperClient
    cache: ZooKeeperCache
    registry: ComponentRegistry
    scanner: NodeScanner
    config: Config
    hostname: str
    clock: Callable[[], float] = time.time
    tuning: Tuning = DEFAULT
    # statsd-less unless the Launcher makes one from the environment (nodepool/metrics.py)
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    # Ids of requests some worker of this launcher is handling (guarded by `lock`).
    handled_requests: set[str] = dataclasses.field(default_factory=set)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    # Request timelines, in memory; the launcher's flusher writes them (timeline_flush.py).
    timeline: Recorder = dataclasses.field(default_factory=Recorder)

    def registered_pools(self) -> list[RegisteredPool]:
        return [RegisteredPool.from_component(c) for c in self.cache.pool_components()]

    @property
    def kazoo(self) -> KazooClient:
        return self.zk.kazoo
