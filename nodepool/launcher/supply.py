"""Where a provider's nodes come from: launched in a cloud, or standing slots (static hosts).

A part of ProviderWorker, chosen once when the worker is built (by the
adapter's `launches`), so the rest of the core has no static branches. The
request part asks its supply two things: why the rest of a request cannot
be had right now (`shortfall`), and to fill a held request's empty slots
(`fill`), which returns why they stay empty, if they do.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from nodepool.drivers.adapter import KNOWN_KEYS, Instance, standing_key
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.handler import RequestHandler
from nodepool.launcher.launches import Launches
from nodepool.launcher.registration import Registrations
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.model import Node, NodeRequest, NodeState

AT_QUOTA = "at quota"
HOSTS_BUSY = "every host of the pool is busy"


class CloudSupply:
    """Nodes launched on demand, under quota; ready spares only for `reuse` requests."""

    launches_nodes = True

    def __init__(self, scope: ProviderScope, launches: Launches, capacity: Capacity):
        self.scope = scope
        self.launches = launches
        self.capacity = capacity

    def pool_max_servers(self, pool_cfg) -> float:
        return pool_cfg.max_servers

    def reuses_ready(self, req: NodeRequest) -> bool:
        return req.reuse

    def usable(self, node: Node) -> bool:
        return True

    def shortfall(self, req: NodeRequest, pool: PoolState, need: list[str]) -> str | None:
        """Why `need` cannot be launched now: launches for nobody count first."""
        need = self.to_launch(pool, need)
        if not need:
            return None
        return self.capacity.launch_blocker(pool, need, req.tenant_name)

    def to_launch(self, pool: PoolState, need: list[str]) -> list[str]:
        """The labels of `need` that launches under way for nobody would not serve."""
        need = list(need)
        for task in self.launches.unassigned(pool):
            for label in task.node.type:
                if label in need:
                    need.remove(label)
                    break
        return need

    def fill(self, h: RequestHandler, first: bool) -> str | None:
        """Adopt launches under way for nobody, then launch the rest if quota allows."""
        if self.scope.stopping and not first:
            return h.waiting     # launches nothing more while it stops
        slots, req, pool, az = h.slots, h.request, h.pool, h.az
        self._adopt(slots, req, pool, az)
        missing = [i for i, s in enumerate(slots) if s is None]
        if not missing:
            return None
        labels = [req.node_types[i] for i in missing]
        if not self.capacity.can_launch(pool, labels, req.tenant_name):
            return AT_QUOTA
        for i in missing:
            slots[i] = self.launches.start(pool, req.node_types[i], request=req, az=az).node.id
        return None

    def _adopt(self, slots: list[str | None], req: NodeRequest, pool: PoolState,
               az: str | None) -> None:
        """Give empty slots the launches already under way for nobody (a resumed launch,
        a released min-ready node): no second server when one is nearly there."""
        # Those resumed for this request first; none resumed for another one.
        under_way = sorted((t for t in self.launches.unassigned(pool)
                            if t.node.allocated_to in (None, req.id)),
                           key=lambda t: t.node.allocated_to != req.id)
        for i, slot in enumerate(slots):
            if slot is not None:
                continue
            label = req.node_types[i]
            for task in under_way:
                if label in task.node.type and task.node.id not in slots and \
                        (az is None or task.az in (None, az)):
                    self.launches.adopt(task, req)
                    slots[i] = task.node.id
                    break

    def act(self, now: float) -> None:
        pass

    def timers(self) -> list[float]:
        return []

    def settle(self, timeout: float) -> None:
        pass


class StandingSupply:
    """Standing slots of a driver that launches nothing (static hosts): each free slot is
    registered as a ready node once its host answers; a request is served from those
    ready nodes only. Which slot a node occupies and whether it still matches the
    config is the driver's to say (Adapter.standing_slot, standing_outdated)."""

    launches_nodes = False

    def __init__(self, scope: ProviderScope, launches: Launches,
                 provider_nodes: Callable[[], list]):
        self.scope = scope
        self.launches = launches
        self._provider_nodes = provider_nodes
        self.claim_ready: Callable | None = None   # the request part's claim of ready nodes
        self.standing: dict[str, Instance] = {
            standing_key(i): i for i in scope.adapter.standing_instances()}
        self._retry_at: dict[str, float] = {}      # host slot -> when to try it again
        self._keys: dict[str, list[str]] = {}      # host slot -> keys it was last scanned with
        self.registrations = Registrations(scope, launches.new_node, self._unreachable)

    def pool_max_servers(self, pool_cfg) -> float:
        """A static pool holds as many nodes as its hosts have slots; `max-servers: 0`
        (or less) disables it, as in Nodepool: it declines every request."""
        if pool_cfg.max_servers <= 0:
            return 0
        return sum(1 for i in self.standing.values() if i.pool == pool_cfg.name)

    def reuses_ready(self, req: NodeRequest) -> bool:
        return True

    def usable(self, node: Node) -> bool:
        """A ready node whose host slot the config no longer has as it was is not
        handed out (it is being unregistered)."""
        return self.scope.adapter.standing_outdated(node) is None

    def shortfall(self, req: NodeRequest, pool: PoolState, need: list[str]) -> str | None:
        return "hosts busy"

    def fill(self, h: RequestHandler, first: bool) -> str | None:
        """Claim hosts freed since (not on the first look: the take just claimed)."""
        if not first:
            self.claim_ready(h)
        return HOSTS_BUSY if h.missing() else None

    def act(self, now: float) -> None:
        """Every free slot becomes a ready node once its host answers; ready nodes of
        slots removed or changed in the config are unregistered."""
        self.registrations.collect()
        nodes = self._provider_nodes()
        self._unregister_outdated(nodes)
        present = self._present(nodes)
        for key, instance in self.standing.items():
            if key in present or key in self.registrations.under_way or \
                    self._retry_at.get(key, 0) > now:
                continue
            pool = self.scope.pools.get(instance.pool or "")
            labels = list((instance.metadata or {}).get("labels") or [])
            if pool is None or not labels:
                continue
            self._retry_at.pop(key, None)
            self.registrations.start(pool, labels[0], self._again(key, instance))

    def _present(self, nodes: list[Node]) -> set[str | None]:
        """The slots that have a node; the scanned keys of each slot's node are kept
        to check the host against when the slot is registered again."""
        present = set()
        for node in nodes:
            slot = self.scope.adapter.standing_slot(node)
            present.add(slot)
            instance = self.standing.get(slot or "")
            if node.host_keys and instance is not None and instance.host_keys is None and \
                    self._keys.get(slot) != node.host_keys and \
                    self.scope.adapter.standing_outdated(node) is None:
                self._keys[slot] = node.host_keys
        return present

    def _again(self, key: str, instance: Instance) -> Instance:
        """The slot's instance, with the keys its host had last time (if scanned):
        the launch checks the host still presents them rather than scanning anew."""
        known = self._keys.pop(key, None)
        if not known or instance.host_keys is not None:
            return instance
        return dataclasses.replace(instance, metadata={**(instance.metadata or {}),
                                                       KNOWN_KEYS: list(known)})

    def _unregister_outdated(self, nodes: list[Node]) -> None:
        """Delete the idle ready nodes of removed or changed slots (the host itself is
        untouched); one in use is left to its user and deleted when returned, as
        every used node is, and its slot is registered again only if still configured."""
        for node in nodes:
            if node.state != NodeState.READY or node.allocated_to or node.id is None or \
                    node.id in self.launches.tasks:
                continue
            reason = self.scope.adapter.standing_outdated(node)
            if reason is not None:
                self.launches.deletions.lock_for_deletion(node.id, reason)

    def timers(self) -> list[float]:
        return list(self._retry_at.values())

    def settle(self, timeout: float) -> None:
        self.registrations.settle(timeout)

    def _unreachable(self, slot: str, node: Node, error: Exception) -> None:
        """A static host that does not answer (or fails its check): its slot is tried
        again later."""
        delay = self.scope.tuning.standing_retry
        self._retry_at[slot] = time.monotonic() + delay
        self.scope.log.warning("provider=%s Static host %s (slot %s) unreachable, retrying "
                               "in %ss: %s", self.scope.name, node.interface_ip, slot, delay,
                               error)
