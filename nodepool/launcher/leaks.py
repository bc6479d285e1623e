"""Leak cleanup: cloud objects tagged with our provider whose node is not in ZooKeeper.

A set difference between the cloud's listing and ZooKeeper; an object is
deleted only when seen leaked on two passes in a row, and untagged objects
are never touched (ARCHITECTURE.md section 6).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Callable, Iterable

from nodepool.drivers.adapter import CloudResource, Instance, Listing
from nodepool.launcher.scope import ProviderScope
from nodepool.launcher.vanished import Vanished
from nodepool.model import Node
from nodepool.zk import nodes

log = logging.getLogger("nodepool.launcher.leaks")


def leaked_keys(instances: Iterable[Instance], resources: Iterable[CloudResource],
                provider: str, node_ids: set[str]) -> dict[str, Instance | CloudResource]:
    """Servers of `provider` that name a node id ZooKeeper does not have, and the
    provider's other objects that name no node or an unknown one (pure)."""
    out: dict[str, Instance | CloudResource] = {}
    for inst in instances:
        if inst.provider == provider and inst.node_id and inst.node_id not in node_ids:
            out[f"server:{inst.external_id}"] = inst
    for res in resources:
        # A driver lists only objects of its provider; one without a node id is
        # leaked by the driver's own judgement (an unattached floating IP with
        # clean-floating-ips, a DOWN port whose server is gone).
        if res.provider == provider and (not res.node_id or res.node_id not in node_ids):
            out[f"{res.kind}:{res.id}"] = res
    return out


class Leaks:
    """A provider worker's leak scans; the listing and deletions run on its executor."""

    def __init__(self, scope: ProviderScope, launching: Callable[[], Iterable[str]],
                 vanished: Vanished):
        self.scope = scope
        self.vanished = vanished         # judged on the same listing
        self._scan_started = 0.0         # wall clock: the running scan's listing is newer
        self._launching = launching      # node ids of launches under way
        self.wanted = False
        self._future: Future | None = None
        self.suspects: set[str] = set()

    def want_scan(self) -> None:
        self.wanted = True
        self.scope.wake()

    def sync(self) -> None:
        """Judge a scan whose listing came (reads ZooKeeper's node ids: waits)."""
        if self._future is None or not self._future.done():
            return
        future, self._future = self._future, None
        try:
            instances, resources = future.result()
        except Exception as e:
            log.warning("provider=%s Leak scan listing failed: %s", self.scope.name, e)
            return
        self._judge(instances, resources)
        self.vanished.judge(instances, self._scan_started)

    def act(self) -> None:
        if self.wanted and self._future is None:
            self.wanted = False
            adapter = self.scope.adapter
            self._scan_started = time.time()
            self._future = self.scope.call(
                lambda: (adapter.list_instances(), adapter.list_resources()))

    def _judge(self, instances, resources) -> None:
        # Ids from ZooKeeper itself, not the cache: a node created a moment ago
        # must never look leaked.
        node_ids = set(nodes.list_node_ids(self.scope.ctx.kazoo)) | set(self._launching())
        leaked = leaked_keys(instances, resources, self.scope.name, node_ids)
        confirmed = {k: v for k, v in leaked.items() if k in self.suspects}
        self.suspects = set(leaked) - set(confirmed)
        for key, obj in confirmed.items():
            log.warning("provider=%s Deleting leaked %s (node %s is not in ZooKeeper)",
                        self.scope.name, key, getattr(obj, "node_id", None))
            self.scope.ctx.metrics.leaked(self.scope.name, key.split(":", 1)[0])
            self.scope.call(self._delete_leak, obj, instances)

    def _delete_leak(self, obj, instances) -> None:
        adapter = self.scope.adapter
        if isinstance(obj, CloudResource):
            adapter.delete_resource(obj)
            return
        ghost = Node(id=obj.node_id, provider=self.scope.name, pool=obj.pool,
                     external_id=obj.external_id)
        listing = Listing({i.external_id: i for i in instances}, 0.0)
        machine = adapter.delete(ghost)
        # One step issues the delete; the next scan confirms it is gone.
        machine.advance(listing)
