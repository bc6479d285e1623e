"""Registering standing slots (static hosts): a free slot becomes one `ready` node,
written once, after its host has been checked.

A part of StandingSupply, on the provider loop's thread. Nothing is written
while the host is checked (a keyscan, a verify against the keys it had last
time, or a port probe): the slot is known to be under way here, in memory.
When the check passes, the node is created `ready` and unlocked in one
request, as Nodepool's static driver registers it; a host that fails its
check leaves no record and its slot is tried again later. Before, a slot's
registration wrote the node four times (created, locked, `building`, then
`ready` and unlocked) and waited for the first two in the loop.

A launcher that stops mid-check leaves nothing behind: the next owner finds
the slot free. A create already sent is waited for when the worker stops
(`settle`), so the next owner's cache shows its node before it looks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from nodepool.drivers.adapter import STANDING, Instance, standing_key
from nodepool.launcher.hostcheck import check_for, check_timeout, take_instance
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.model import Node, NodeState
from nodepool.zk import paths


@dataclass
class Registration:
    slot: str
    node: Node
    scan: object | None = None       # the host check under way (nodescan.ScanRequest)
    created: object | None = None    # kazoo's result of the node's create, once sent
    # Set on kazoo's reader thread once the create's answer is in the cache.
    answered: threading.Event = field(default_factory=threading.Event)


class Registrations:
    """The slots being registered, by slot key."""

    def __init__(self, scope: ProviderScope, new_node: Callable[[PoolState, str], Node],
                 unreachable: Callable[[str, Node, Exception], None]):
        self.scope = scope
        self._new_node = new_node          # Launches.new_node: the fields every launch writes
        self._unreachable = unreachable    # the supply's retry of a host that failed its check
        self.under_way: dict[str, Registration] = {}

    def start(self, pool: PoolState, label: str, instance: Instance) -> None:
        """Check the slot's host, or register it at once when nothing is to be checked."""
        node = self._new_node(pool, label)
        node.type = list((instance.metadata or {}).get("labels") or [label])
        node.driver_data = {STANDING: standing_key(instance)}
        take_instance(node, instance)
        reg = Registration(slot=standing_key(instance), node=node)
        self.under_way[reg.slot] = reg
        check = check_for(self.scope.ctx.scanner, node, instance,
                          pool.cfg.labels[label].host_key_checking)
        if check is None:
            self._create(reg)
            return
        reg.scan = check(node.interface_ip, node.connection_port,
                         timeout=check_timeout(instance, self.scope.provider.boot_timeout),
                         on_done=lambda _: self.scope.wake())

    def collect(self) -> None:
        """Each pass: checked hosts are registered, answered creates are done."""
        for reg in list(self.under_way.values()):
            if reg.scan is not None and reg.scan.done:
                self._checked(reg)
            elif reg.answered.is_set():
                self._answered(reg)

    def _checked(self, reg: Registration) -> None:
        scan, reg.scan = reg.scan, None
        if scan.error is not None:
            del self.under_way[reg.slot]
            self._unreachable(reg.slot, reg.node, scan.error)
            return
        if scan.key_types:   # a probe leaves the keys as they are
            reg.node.host_keys = list(scan.result)
        self._create(reg)

    def _create(self, reg: Registration) -> None:
        now = self.scope.ctx.clock()
        reg.node.set_state(NodeState.READY, now)
        reg.created = self.scope.ctx.cache.create_node(reg.node.to_json(),
                                                       then=lambda _: self._on_answer(reg))

    def _on_answer(self, reg: Registration) -> None:
        # On kazoo's reader thread, after the cache took the node from the answer.
        reg.answered.set()
        self.scope.wake()

    def _answered(self, reg: Registration) -> None:
        del self.under_way[reg.slot]
        node = reg.node
        try:
            path, _ = reg.created.get()
        except Exception as e:
            self.scope.log.warning("provider=%s Registering static host slot %s failed: %s",
                                   self.scope.name, reg.slot, e)
            return
        node.id, node.version = paths.basename(path), 0
        self.scope.ctx.metrics.launched(node, "ready", self.scope.ctx.clock())
        self.scope.log.info("node=%s provider=%s Ready at %s (static host slot %s)", node.id,
                            self.scope.name, node.interface_ip, reg.slot)

    def settle(self, timeout: float) -> None:
        """On stop: cancel the checks; wait (at most `timeout`) for the creates sent."""
        deadline = time.monotonic() + timeout
        for reg in list(self.under_way.values()):
            if reg.scan is not None:
                reg.scan.cancel()
            elif reg.created is not None:
                # Failed or unanswered by then: the next owner's cache tells.
                reg.answered.wait(max(0.0, deadline - time.monotonic()))
        self.under_way.clear()
