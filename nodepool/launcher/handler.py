"""A request one of our pools holds locked and is serving (the request part's entity)."""

from __future__ import annotations

import dataclasses

from kazoo.recipe.lock import Lock

from nodepool.launcher.scope import PoolState
from nodepool.launcher.tasks import LaunchTask
from nodepool.model import NodeRequest


@dataclasses.dataclass(eq=False)
class RequestHandler:
    """A request one of our pools has locked and is serving."""

    request: NodeRequest
    lock: Lock | None
    pool: PoolState
    slots: list[str | None]                 # node id per node_types entry
    ready: set[str] = dataclasses.field(default_factory=set)
    # Launched nodes that are ready and still locked by us, by id.
    held: dict[str, LaunchTask] = dataclasses.field(default_factory=dict)
    waiting: str | None = None              # why it waits (quota, hosts busy)
    failed: str | None = None
    az: str | None = None

    def missing(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is None]
