"""What the parts of one provider worker share: its config, adapter, pools and services.

Every part of a worker (requests, launches, deletions, sweep, spares, leaks,
supply, cloud view) is built with this scope. The scope itself holds no
state that changes after the worker is built, except `stopping`, which only
the worker sets.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from nodepool.config.model import Pool, Provider
from nodepool.drivers.adapter import Adapter
from nodepool.launcher.context import LauncherContext
from nodepool.launcher.effects import ZkEffects
from nodepool.launcher.fence import LeaseFence, NoFence
from nodepool.launcher.indexes import ProviderIndex
from nodepool.launcher.planner import PoolView


@dataclasses.dataclass(eq=False)
class PoolState:
    """One of this provider's pools at run time; `paused` is written by the request part."""

    cfg: Pool
    view: PoolView
    component: object = None
    paused: bool = False
    pause_reason: str = ""


@dataclasses.dataclass(eq=False)
class ProviderScope:
    """The services and fixed facts of one provider worker."""

    ctx: LauncherContext
    provider: Provider
    adapter: Adapter
    pools: dict[str, PoolState]
    index: ProviderIndex
    effects: ZkEffects
    executor: ThreadPoolExecutor
    wake: Callable[[], None]
    log: logging.LoggerAdapter
    fence: LeaseFence | NoFence = dataclasses.field(default_factory=NoFence)
    stopping: bool = False

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def tuning(self):
        return self.ctx.tuning

    def call(self, fn, *args) -> Future:
        """Run a blocking (cloud) call on the provider's executor; its end wakes the loop."""
        future = self.executor.submit(fn, *args)
        future.add_done_callback(lambda _: self.wake())
        return future
