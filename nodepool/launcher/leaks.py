"""Leak cleanup: cloud objects tagged with our provider whose node is not in ZooKeeper.

A set difference between the cloud's listing and ZooKeeper; an object is
deleted only when seen leaked on two passes in a row, and untagged objects
are never touched (ARCHITECTURE.md section 6).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Iterable

from nodepool.drivers.adapter import CloudResource, Instance, Listing
from nodepool.model import Node

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


class LeakCleanup:
    """A provider worker's leak scans; the listing and deletions run on its executor."""

    def init_leaks(self) -> None:
        self.leak_wanted = False
        self.leak_future: Future | None = None
        self.leak_suspects: set[str] = set()

    def request_leak_scan(self) -> None:
        self.leak_wanted = True
        self.wake()

    def leak_tick(self) -> None:
        if self.leak_future is not None and self.leak_future.done():
            future, self.leak_future = self.leak_future, None
            try:
                instances, resources = future.result()
            except Exception as e:
                log.warning("provider=%s Leak scan listing failed: %s", self.name, e)
                return
            self._judge(instances, resources)
        if self.leak_wanted and self.leak_future is None:
            self.leak_wanted = False
            self.leak_future = self._call(
                lambda: (self.adapter.list_instances(), self.adapter.list_resources()))

    def _judge(self, instances, resources) -> None:
        # Ids from ZooKeeper itself, not the cache: a node created a moment ago
        # must never look leaked.
        from nodepool.zk import nodes
        node_ids = set(nodes.list_node_ids(self.ctx.kazoo)) | set(self.launches)
        leaked = leaked_keys(instances, resources, self.name, node_ids)
        confirmed = {k: v for k, v in leaked.items() if k in self.leak_suspects}
        self.leak_suspects = set(leaked) - set(confirmed)
        for key, obj in confirmed.items():
            log.warning("provider=%s Deleting leaked %s (node %s is not in ZooKeeper)",
                        self.name, key, getattr(obj, "node_id", None))
            self._call(self._delete_leak, obj, instances)

    def _delete_leak(self, obj, instances) -> None:
        if isinstance(obj, CloudResource):
            self.adapter.delete_resource(obj)
            return
        ghost = Node(id=obj.node_id, provider=self.name, pool=obj.pool,
                     external_id=obj.external_id)
        listing = Listing({i.external_id: i for i in instances}, 0.0)
        machine = self.adapter.delete(ghost)
        # One step issues the delete; the next scan confirms it is gone.
        machine.advance(listing)
