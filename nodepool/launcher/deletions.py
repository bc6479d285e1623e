"""Deletions: a node's server deleted, then its record removed.

A part of ProviderWorker, on its loop thread. It owns the delete tasks,
the node locks sent for deletions (answered in a later pass, so the loop
never waits for them) and the removals to retry. A record is never dropped
while its server may exist: a failed step is retried with backoff, and a
delete the cloud forgot is issued again.
"""

from __future__ import annotations

import dataclasses
import time

from nodepool import errors
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.scope import ProviderScope
from nodepool.launcher.tasks import DeleteTask, run_steps
from nodepool.model import Node, NodeState
from nodepool.zk import locks


@dataclasses.dataclass(eq=False)
class DeletionLock:
    """A node lock sent for a deletion the cleanup plan chose, not answered yet."""

    reason: str
    node: Node                  # as the cache showed it, `deleting` (written with the lock)
    attempt: locks.LockAttempt
    used_at: float | None       # when it was set `used` (for the metrics), if it was


class Deletions:
    """The delete tasks of one provider, by node id."""

    def __init__(self, scope: ProviderScope, cloud: CloudView):
        self.scope = scope
        self.cloud = cloud
        self.tasks: dict[str, DeleteTask] = {}
        self.locking: dict[str, DeletionLock] = {}
        self._remove_later: set[str] = set()   # written on kazoo's reader thread, then woken

    def busy(self) -> set[str]:
        """Node ids this part is working on."""
        return set(self.tasks) | set(self.locking)

    def waits(self) -> list[tuple[str | None, float]]:
        return [(t.last_state, t.waiting_since) for t in self.tasks.values()
                if t.waiting_since is not None]

    def _timeout(self) -> float:
        return min(self.scope.tuning.delete_attempt_max, float(self.scope.provider.launch_timeout))

    # -- starting -----------------------------------------------------------------------

    def start(self, node: Node, lock, reason: str, check_version: bool = False,
              used_at: float | None = None) -> None:
        """Delete a node we hold locked: mark it deleting, then run the driver's machine."""
        if node.state == NodeState.USED:
            used_at = node.state_time
        task = DeleteTask(node=node, lock=lock, sm=self.scope.adapter.delete(node),
                          started=time.monotonic(), used_at=used_at)
        if node.state != NodeState.DELETING or check_version:
            node.set_state(NodeState.DELETING)
            task.write = self.scope.effects.write_node_async(node, check_version, lock)
        self.tasks[node.id] = task
        self.scope.log.info("node=%s provider=%s Deleting: %s", node.id, self.scope.name, reason)

    def lock_for_deletion(self, node_id: str, reason: str) -> None:
        """Send the lock of a node the cache shows finished with, and its `deleting`
        write, as one transaction (no waiting); `settle_locks` starts the deletion
        once its answer is in.

        The write is made over the version the cache showed: if the node changed
        meanwhile (a requestor set `hold` and unlocked), nothing is done and the
        delete is dropped; the cache then shows the truth.
        """
        seen = self.scope.ctx.cache.get_node(node_id)
        if seen is None or seen.id in self.locking:
            return
        node = dataclasses.replace(seen)
        node.set_state(NodeState.DELETING)
        used_at = seen.state_time if seen.state == NodeState.USED else None
        self.locking[seen.id] = DeletionLock(
            reason, node, self.scope.effects.lock_and_write_async(node, seen.version), used_at)

    def settle_locks(self) -> None:
        """Each pass: start the deletions whose lock answers came."""
        for node_id, pending in list(self.locking.items()):
            if not pending.attempt.ready():
                continue
            del self.locking[node_id]
            lock, stat = self.scope.effects.settle_lock_and_write(pending.attempt, node_id)
            if lock is None:
                self.scope.log.debug("node=%s delete skipped: locked by someone else, "
                                     "changed, or gone", node_id)
                continue
            node = pending.node
            if stat is not None:
                node.version = stat.version    # `deleting` is written
            self.start(node, lock, pending.reason, check_version=stat is None,
                       used_at=pending.used_at)

    # -- timers and steps ----------------------------------------------------------------

    def timers(self) -> list[float]:
        out = [t.next_at for t in self.tasks.values() if t.next_at]
        return out + [t.started + self._timeout() for t in self.tasks.values()]

    def advance(self, now: float) -> None:
        for task in list(self.tasks.values()):
            if task.future is None and now - task.started > self._timeout():
                # The cloud accepted a delete and forgot it: issue it again, keep the record.
                self.scope.log.warning("node=%s provider=%s Delete not done after %.0fs; "
                                       "retrying", task.node.id, self.scope.name,
                                       now - task.started)
                task.sm = self.scope.adapter.delete(task.node)
                task.started = now
                task.last_state, task.waits_for_listing = None, False
            if task.due(now, self.cloud.listing):
                task.step_listing = self.cloud.listing
                task.future = self.scope.call(run_steps, task.sm, task.step_listing,
                                              self.scope.tuning.steps_per_run)
                if task.waits_for_listing:
                    self.cloud.want_listing()

    def _rewrite(self, task: DeleteTask) -> None:
        task.write = self.scope.effects.write_node_async(task.node, lock=task.lock)

    def collect(self, now: float) -> None:
        for task in list(self.tasks.values()):
            state = task.confirm_write(self.scope.log, self._rewrite)
            if state == "lost":
                self.tasks.pop(task.node.id, None)
                self.scope.effects.unlock_async(task.lock)
            elif state == "done" and task.future is not None and task.future.done():
                self._collect_step(task, now)

    def _collect_step(self, task: DeleteTask, now: float) -> None:
        future, task.future = task.future, None
        error = future.exception()
        if error is not None:
            # Never drop the record while the server may exist: retry with backoff.
            task.back_off(error, now, self.scope.tuning, self.scope.log)
            return
        task.stepped(task.sm.state, task.step_listing, future.result(),
                     learn=self.cloud.wait_ended)
        if not task.sm.complete:
            if task.waits_for_listing:
                self.cloud.want_listing()
            return
        del self.tasks[task.node.id]
        task.node.set_state(NodeState.DELETED)
        self.scope.effects.remove_node_async(task.node, task.lock,
                                             lambda node_id=task.node.id: self._retry(node_id))
        self.scope.log.info("node=%s provider=%s Deleted", task.node.id, self.scope.name)
        self.scope.ctx.metrics.node_deleted(task.node, task.used_at, self.scope.ctx.clock())
        # Our own usage is counted from our nodes, so a deletion needs no new limits,
        # unless the cloud lately refused a launch our count let through (it counts
        # something we do not): then re-read them while a pool waits.
        if now - self.cloud.quota_refused_at < self.scope.tuning.quota_refusal_memory and \
                any(p.paused for p in self.scope.pools.values()):
            self.cloud.refresh_limits()

    def _retry(self, node_id: str) -> None:
        """(Callback thread) the one-shot removal failed: the careful way, next pass."""
        self._remove_later.add(node_id)
        self.scope.wake()

    def retry_removals(self) -> None:
        """Removals whose one-shot transaction failed, the careful way (waits)."""
        while self._remove_later:
            node_id = self._remove_later.pop()
            try:
                self.scope.effects.remove_node(node_id)
            except errors.VersionConflict:
                self._remove_later.add(node_id)
                return

    # -- stop --------------------------------------------------------------------------

    def hand_back(self) -> None:
        """On stop: deletions resume from their `deleting` records; their locks go."""
        effects = self.scope.effects
        for task in list(self.tasks.values()):
            effects.unlock_async(task.lock)
        for node_id, pending in list(self.locking.items()):
            try:
                effects.unlock_async(effects.settle_lock_and_write(pending.attempt, node_id)[0])
            except Exception as e:     # the session is going: its ephemeral locks go too
                self.scope.log.debug("node=%s deletion lock not released: %s", node_id, e)
        self.locking.clear()
        self.retry_removals()
        self.tasks.clear()
