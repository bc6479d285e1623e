"""Starting and ending node work: launches, deletions, resumes, releases, cleanup.

A mixin of ProviderWorker, on its loop thread. Writes to nodes we hold locked
are pipelined (`write()`): ZooKeeper applies one session's requests in order,
so the loop never waits a round trip for them; a task's next cloud step waits
until its write is confirmed (the record precedes the irreversible call).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from nodepool import errors
from nodepool.drivers.adapter import Instance, LaunchContext
from nodepool.launcher import cleanup, handover
from nodepool.launcher.machines import MachineDriving
from nodepool.launcher.tasks import DeleteTask, LaunchTask
from nodepool.model import Node, NodeState
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, nodes, paths

log = logging.getLogger("nodepool.launcher.lifecycle")



class Lifecycle(MachineDriving):
    """Launch, keyscan, ready; delete and remove; resume what a dead launcher left."""

    STANDING_RETRY = 10.0   # seconds before re-checking a static host that did not answer

    def init_lifecycle(self) -> None:
        self.launches: dict[str, LaunchTask] = {}
        self.deletes: dict[str, DeleteTask] = {}
        self.remove_later: set[str] = set()
        # Deletions whose node lock is in flight: node id -> (reason, node as seen, attempt).
        self.locking: dict[str, tuple] = {}
        self.quota_refused_at = -math.inf   # monotonic time of the cloud's last quota refusal

    def _lock_id(self) -> str:
        return f"{self.ctx.hostname}:{self.name}"

    def write(self, task, check_version: bool = False) -> None:
        """Write a node we hold locked, without waiting; the task waits before its next step.

        No version check by default: under the node lock no one else writes it
        (PROTOCOL.md); `check_version` makes it conditional on the version we read.
        """
        node = task.node
        version = node.version if check_version else -1
        # Through the cache: it takes what we wrote from the reply, not a re-read.
        result = self.ctx.cache.write_node(node.id, node.to_json(), version)
        task.write = result
        result.rawlink(lambda _: self.wake())

    def write_and_unlock(self, task) -> None:
        """Write a node we hold locked and let the lock go, in one transaction (not
        waited for). Should it fail, the lock is let go on its own."""
        node, lock, kazoo = task.node, task.lock, self.ctx.kazoo
        if lock is None or not lock.is_acquired or lock.node is None:
            self.write(task)
            return
        contender = f"{lock.path}/{lock.node}"
        lock.is_acquired, lock.node = False, None
        data = node.to_json()
        tx = kazoo.transaction()
        tx.set_data(paths.node(node.id), data)
        tx.delete(contender)
        result = self.ctx.cache.commit_own(tx, [(zkcache.NODE, node.id, data, 0)])
        task.write = None

        def done(res) -> None:   # on the callback thread: nothing that waits
            failed = res.exception if not res.successful() else next(
                (r for r in res.get() if isinstance(r, Exception)), None)
            if failed is not None:
                self.log.error("node=%s provider=%s Writing %s failed: %r", node.id,
                               self.name, node.state.value, failed)
                kazoo.delete_async(contender)
        result.rawlink(done)

    # -- starting work -------------------------------------------------------

    def start_launch(self, pool, label_name: str, request=None, az: str | None = None,
                     instance: Instance | None = None) -> LaunchTask:
        """Write a new node (init, allocated), lock it, mark it building, start its machine."""
        node = self.new_node(pool, label_name, request)
        nodes.create_node(self.ctx.kazoo, node)
        lock = locks.lock_new_node(self.ctx.kazoo, node.id, identifier=self._lock_id())
        return self.begin_launch(pool, label_name, node, lock, az, instance)

    def new_node(self, pool, label_name: str, request=None) -> Node:
        """The record of a launch about to start (not written yet)."""
        now = self.ctx.clock()
        return Node(type=[label_name], provider=self.name, pool=pool.cfg.name,
                    launcher=pool.view.id, cloud=getattr(self.provider, "cloud", None),
                    region=getattr(self.provider, "region_name", None),
                    allocated_to=request.id if request else None,
                    tenant_name=request.tenant_name if request else None,
                    requestor=request.requestor if request else None,
                    attributes=dict(pool.cfg.node_attributes) or None,
                    resources=self.label_cost(pool.cfg, label_name).to_dict(),
                    state_time=now, created_time=now)

    def begin_launch(self, pool, label_name: str, node: Node, lock, az: str | None = None,
                     instance: Instance | None = None) -> LaunchTask:
        """A written node we hold locked: mark it building and start its machine."""
        label = pool.cfg.labels[label_name]
        now = self.ctx.clock()
        task = LaunchTask(node=node, lock=lock, pool=pool, label=label,
                          request_id=node.allocated_to, attempt_started=time.monotonic(), az=az)
        if instance is not None:    # a standing host: no cloud step, straight to the scan
            node.type = list((instance.metadata or {}).get("labels") or [label_name])
            node.driver_data = {"standing": instance.external_id}
            node.set_state(NodeState.BUILDING, now)
            self.write(task)
            self.launches[node.id] = task
            self.booted(task, instance)
            return task
        task.sm = self.adapter.create(self._launch_context(task))
        node.driver_data = task.sm.driver_data()
        node.set_state(NodeState.BUILDING, now)
        # Not written yet: a machine's first state makes no cloud call (drivers.md), so
        # an `init` node without driver_data resumes the same way. The first advance's
        # save writes `building` with the state it moved to: one write less per launch.
        task.unsaved = True
        self.launches[node.id] = task
        self.log.info("node=%s provider=%s Launching %s (request %s)", node.id, self.name,
                      label_name, node.allocated_to)
        return task

    def _launch_context(self, task: LaunchTask) -> LaunchContext:
        return LaunchContext(node=task.node, provider=self.provider, pool=task.pool.cfg,
                             label=task.label, az=task.az,
                             image=self.resolve_image(task.label))

    def resume_launch(self, node_id: str) -> None:
        """Finish a launch whose launcher died, from the driver_data it saved."""
        try:
            lock = locks.lock_node(self.ctx.kazoo, node_id, identifier=self._lock_id())
        except (errors.LockFailed, errors.NotFound):
            return
        node = nodes.get_node(self.ctx.kazoo, node_id)
        pool = self.pools.get(node.pool or "") if node else None
        if node is None or node.state not in (NodeState.INIT, NodeState.BUILDING,
                                               NodeState.TESTING):
            locks.release(lock)
            return
        if pool is None or not node.type or node.type[0] not in pool.cfg.labels:
            self.start_delete(node, lock, "launch of a pool or label no longer configured")
            return
        task = LaunchTask(node=node, lock=lock, pool=pool, label=pool.cfg.labels[node.type[0]],
                          request_id=None, attempt_started=time.monotonic())
        # The request it was for is reset (and re-served) by whoever finds it
        # pending and unlocked; this node finishes as a ready spare.
        node.allocated_to = None
        task.sm = self.adapter.create(self._launch_context(task), node.driver_data)
        if node.state == NodeState.INIT:
            node.set_state(NodeState.BUILDING)
        self.write(task)
        self.launches[node.id] = task
        self.log.info("node=%s provider=%s Resuming launch from %s", node.id, self.name,
                      node.driver_data)

    def start_delete(self, node: Node, lock, reason: str, check_version: bool = False) -> None:
        """Delete a node we hold locked: mark it deleting, then run the driver's machine."""
        task = DeleteTask(node=node, lock=lock, sm=self.adapter.delete(node),
                          started=time.monotonic())
        if node.state != NodeState.DELETING or check_version:
            node.set_state(NodeState.DELETING)
            self.write(task, check_version)
        self.deletes[node.id] = task
        self.log.info("node=%s provider=%s Deleting: %s", node.id, self.name, reason)

    def apply_cleanup(self) -> None:
        """Act on nodes nobody holds: delete finished ones, release orphans, resume launches."""
        busy = set(self.launches) | set(self.deletes) | set(self.locking) | \
            self.handler_node_ids() | \
            {n.id for n in self.starting_nodes() if n.id is not None}
        if self.full_cleanup:
            self.full_cleanup, self.dirty = False, set()
            pnodes = [n for n in self.ctx.cache.nodes() if n.provider == self.name]
            self.expiry_at = cleanup.next_expiry(pnodes, self.ctx.config.labels,
                                                 self.ctx.config.max_hold_age)
        else:
            # Only what changed since the last pass (cache events); timers and a
            # periodic full pass cover ages and anything an event could miss.
            pnodes = [n for n in (self.ctx.cache.get_node(i) for i in self.dirty)
                      if n is not None and n.provider == self.name]
            self.dirty = set()
            self.expiry_at = min(self.expiry_at, cleanup.next_expiry(
                pnodes, self.ctx.config.labels, self.ctx.config.max_hold_age))
        if any(s.node.id is None for s in self.starting):
            # A spare's create may show in the cache before its answer tells us the
            # id: our own unlocked init nodes wait for the next pass.
            ours = {p.view.id for p in self.pools.values()}
            early = {n.id for n in pnodes if n.state == NodeState.INIT and n.launcher in ours}
            self.dirty |= early
            pnodes = [n for n in pnodes if n.id not in early]
        actions = cleanup.plan(pnodes, self.ctx.cache.is_node_locked, busy,
                               self._request_exists, self.ctx.config.labels,
                               self.ctx.config.max_hold_age, self.ctx.clock(),
                               can_resume=self.adapter.launches)
        # Deletions first, their locks sent at once: one round trip for all of them.
        deletes = [a for a in actions if a.action == cleanup.Action.DELETE]
        self._delete_many(deletes)
        for act in actions:
            if act.action == cleanup.Action.DELETE:
                continue
            try:
                if act.action == cleanup.Action.RESUME:
                    self.resume_launch(act.node_id)
                elif act.action == cleanup.Action.RELEASE:
                    self.release_node(act.node_id, expected_request=None)
                elif act.action == cleanup.Action.REMOVE:
                    self._remove_record(act.node_id)
            except (errors.LockFailed, errors.NotFound, errors.VersionConflict) as e:
                # Someone got there first; the cache will tell us what changed.
                self.log.debug("node=%s %s skipped: %s", act.node_id, act.action.value, e)

    def _remove_record(self, node_id: str) -> None:
        lock = locks.lock_node(self.ctx.kazoo, node_id, identifier=self._lock_id())
        node = nodes.get_node(self.ctx.kazoo, node_id)
        if node is not None and node.state == NodeState.DELETED:
            nodes.delete_node(self.ctx.kazoo, node_id)
        locks.release(lock)

    def _request_exists(self, request_id: str) -> bool:
        # The cache lists a new request before it can learn of any allocation to
        # it (one session's watch events and replies come in zxid order).
        return self.ctx.cache.request_exists(request_id)

    def _delete_many(self, actions: list) -> None:
        """Send the node locks of nodes the cache shows finished with, all at once;
        `advance_deletion_locks` starts each deletion once its lock's answer is in,
        so the loop does not wait for them.

        The `deleting` write is made over the version the cache showed: if the
        node changed meanwhile (a requestor set `hold` and unlocked), the write
        fails and the delete is dropped; the cache then shows the truth.
        """
        kazoo, name = self.ctx.kazoo, self._lock_id()
        for act in actions:
            seen = self.ctx.cache.get_node(act.node_id)
            if seen is None or seen.id in self.locking:
                continue
            attempt = locks.start_lock(kazoo, paths.node_lock(seen.id), name)
            attempt[2].rawlink(lambda _: self.wake())   # the listing is answered last
            self.locking[seen.id] = (act.reason, seen, attempt)

    def advance_deletion_locks(self) -> None:
        """Each pass: start the deletions whose lock answers came."""
        kazoo, name = self.ctx.kazoo, self._lock_id()
        for node_id, (reason, seen, attempt) in list(self.locking.items()):
            if not attempt[2].ready():
                continue
            del self.locking[node_id]
            lock = locks.settle_node_lock(kazoo, attempt, node_id, name)
            if lock is None:
                self.log.debug("node=%s delete skipped: locked by someone else, or gone", node_id)
                continue
            self.start_delete(dataclasses.replace(seen), lock, reason, check_version=True)

    def drop_deletion_locks(self) -> None:
        """On stop: let go of the deletion locks still in flight."""
        kazoo, name = self.ctx.kazoo, self._lock_id()
        for node_id, (_, _, attempt) in list(self.locking.items()):
            try:
                locks.release_async(kazoo, locks.settle_node_lock(kazoo, attempt, node_id, name))
            except Exception as e:     # the session is going: its ephemeral locks go too
                self.log.debug("node=%s deletion lock not released: %s", node_id, e)
        self.locking.clear()

    def release_node(self, node_id: str, expected_request: str | None) -> None:
        """Clear `allocated_to` of a ready node whose request is gone (or given up).

        Only a ready node is released: a requestor that deleted its request and
        then set the node used (and unlocked it) is finished with it.
        """
        seen = self.ctx.cache.get_node(node_id)
        if seen is None or seen.allocated_to is None or seen.state != NodeState.READY:
            return
        if expected_request is not None and seen.allocated_to != expected_request:
            return
        if expected_request is None and self._request_exists(seen.allocated_to):
            return
        if handover.unallocate(self.ctx.kazoo, seen, self._lock_id()):
            self.log.info("node=%s Released from request %s", node_id, seen.allocated_to)

    def register_standing(self, now: float) -> None:
        """Static hosts: every free slot becomes a ready node once its host answers."""
        present = {(n.driver_data or {}).get("standing") for n in self.provider_nodes().values()}
        for ext_id, instance in self.standing.items():
            if ext_id in present or self.standing_retry.get(ext_id, 0) > now:
                continue
            pool = self.pools.get(instance.pool or "")
            labels = list((instance.metadata or {}).get("labels") or [])
            if pool is None or not labels:
                continue
            self.standing_retry.pop(ext_id, None)
            self.start_launch(pool, labels[0], instance=instance)
