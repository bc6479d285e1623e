"""The sweep: what becomes of this provider's nodes that no part of the worker holds.

A part of ProviderWorker, on its loop thread. Each pass it looks at the
nodes the cache reported changed (a periodic full pass and expiry timers
cover ages, holds and anything an event could miss), asks the pure planner
(`cleanup.plan`) what to do with each, and acts: used or expired nodes go
to the deletion part, orphaned launches to the launch part to resume,
ready nodes of vanished requests are released, `deleted` records removed.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from nodepool import errors
from nodepool.launcher import cleanup
from nodepool.launcher.deletions import Deletions
from nodepool.launcher.scope import ProviderScope
from nodepool.model import Node, NodeState


class Sweep:
    """Owns which nodes are to be looked at again (`dirty`), and when all of them are."""

    def __init__(self, scope: ProviderScope, deletions: Deletions,
                 resume: Callable[[str], None], busy: Callable[[], set[str]],
                 starting_unnamed: Callable[[], bool], can_resume: bool):
        self.scope = scope
        self.deletions = deletions
        self._resume = resume
        self._busy = busy                    # node ids some part is working on
        self._starting_unnamed = starting_unnamed   # a spare create not answered yet?
        self.can_resume = can_resume
        self.dirty: set[str] = set()
        self.full = True                     # look at every node in the next pass
        self.expiry_at = math.inf            # wall-clock time of the next hold/age expiry
        self.resumed = False                 # the first sweep after taking the provider ran

    def changed(self, node_id: str) -> None:
        self.dirty.add(node_id)

    def changed_all(self, node_ids: set[str]) -> None:
        self.dirty |= node_ids

    def want_full(self) -> None:
        self.full = True

    def sync(self) -> None:
        if self.scope.ctx.clock() >= self.expiry_at:
            self.full = True

    def timers(self) -> list[float]:
        if self.expiry_at == math.inf:
            return []
        return [time.monotonic() + (self.expiry_at - self.scope.ctx.clock()) + 0.01]

    def _nodes(self) -> list[Node]:
        cache, config, name = self.scope.ctx.cache, self.scope.ctx.config, self.scope.name
        if self.full:
            self.full, self.dirty = False, set()
            nodes = [n for n in cache.nodes() if n.provider == name]
            self.expiry_at = cleanup.next_expiry(nodes, config.labels, config.max_hold_age)
            return nodes
        nodes = [n for n in (cache.get_node(i) for i in self.dirty)
                 if n is not None and n.provider == name]
        self.dirty = set()
        self.expiry_at = min(self.expiry_at, cleanup.next_expiry(
            nodes, config.labels, config.max_hold_age))
        return nodes

    def apply(self) -> None:
        """Act on nodes nobody holds: delete finished ones, release orphans, resume launches."""
        if not self.full and not self.dirty:
            return   # nothing changed since the last look (most passes)
        busy = self._busy()
        nodes = self._nodes()
        if self._starting_unnamed():
            # A spare's create may show in the cache before its answer tells us the
            # id: our own unlocked init nodes wait for the next pass.
            ours = {p.view.id for p in self.scope.pools.values()}
            early = {n.id for n in nodes if n.state == NodeState.INIT and n.launcher in ours}
            self.dirty |= early
            nodes = [n for n in nodes if n.id not in early]
        ctx = self.scope.ctx
        actions = cleanup.plan(nodes, ctx.cache.is_node_locked, busy, ctx.cache.request_exists,
                               ctx.config.labels, ctx.config.max_hold_age, ctx.clock(),
                               can_resume=self.can_resume)
        # Deletions first, their locks sent at once: one round trip for all of them.
        for act in actions:
            if act.action == cleanup.Action.DELETE:
                self.deletions.lock_for_deletion(act.node_id, act.reason)
        for act in actions:
            try:
                if act.action == cleanup.Action.RESUME:
                    self._resume(act.node_id)
                elif act.action == cleanup.Action.RELEASE:
                    self.release(act.node_id, expected_request=None)
                elif act.action == cleanup.Action.REMOVE:
                    self._remove_record(act.node_id)
            except (errors.LockFailed, errors.NotFound, errors.VersionConflict) as e:
                # Someone got there first; the cache will tell us what changed.
                self.scope.log.debug("node=%s %s skipped: %s", act.node_id, act.action.value, e)

    def first_pass(self) -> None:
        """First pass after taking the provider: resume orphaned launches before serving,
        so a request gets the server already booting, not a second one."""
        if not self.resumed:
            self.apply()
            self.resumed = True

    def _remove_record(self, node_id: str) -> None:
        effects = self.scope.effects
        lock = effects.lock_node(node_id)
        node = effects.read_node(node_id)
        if node is not None and node.state == NodeState.DELETED:
            effects.remove_node(node_id)
        effects.unlock(lock)

    def release(self, node_id: str, expected_request: str | None) -> None:
        """Clear `allocated_to` of a ready node whose request is gone (or given up).

        Only a ready node is released: a requestor that deleted its request and
        then set the node used (and unlocked it) is finished with it.
        """
        cache = self.scope.ctx.cache
        seen = cache.get_node(node_id)
        if seen is None or seen.allocated_to is None or seen.state != NodeState.READY:
            return
        if expected_request is not None and seen.allocated_to != expected_request:
            return
        # The cache lists a new request before it can learn of any allocation to
        # it (one session's watch events and replies come in zxid order) — but not
        # while it re-reads both trees after a reconnect: ask ZooKeeper itself
        # (a round trip, for a release only).
        if expected_request is None and (cache.request_exists(seen.allocated_to) or
                                         self.scope.effects.request_exists(seen.allocated_to)):
            return
        if self.scope.effects.unallocate_async(seen):
            self.scope.log.info("node=%s Released from request %s", node_id, seen.allocated_to)
