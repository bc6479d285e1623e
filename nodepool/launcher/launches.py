"""Launches: building nodes from a new record to `ready` (or to their deletion).

A part of ProviderWorker, on its loop thread. It owns the launch tasks: a
node, its lock, the driver's create machine, its keyscan. Cloud steps run
on the provider's executor; each pass collects the finished ones and submits
those that are due. A launch's outcome (ready, failed, aborted for quota)
is an event for the `LaunchOutcomes` listener (the request part); what is
to be deleted goes to the deletion part. Writes to nodes we hold locked are
pipelined: a task's next cloud step waits until its write is confirmed (the
record precedes the irreversible call).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from nodepool import errors
from nodepool import timeline as tl
from nodepool.drivers.adapter import Instance, LaunchContext
from nodepool.launcher.capacity import Capacity
from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.deletions import Deletions
from nodepool.launcher.hostcheck import check_for, check_timeout, take_instance
from nodepool.launcher.reasons import error_text
from nodepool.launcher.scope import PoolState, ProviderScope
from nodepool.launcher.tasks import LaunchTask, Phase, run_steps
from nodepool.model import Node, NodeRequest, NodeState, RequestState


class LaunchOutcomes(Protocol):
    """Who hears how launches end (the request part)."""

    def launch_ready(self, task: LaunchTask) -> bool:
        """A node is ready: True if a request keeps it locked until fulfilment."""

    def launch_failed(self, task: LaunchTask, reason: str) -> None:
        """A launch failed for good (its node is being deleted)."""

    def launch_aborted(self, task: LaunchTask, reason: str) -> None:
        """The cloud refused it for quota: nothing failed, the pool is at quota."""


class Launches:
    """The launch tasks of one provider, by node id."""

    def __init__(self, scope: ProviderScope, cloud: CloudView, capacity: Capacity,
                 deletions: Deletions):
        self.scope = scope
        self.cloud = cloud
        self.capacity = capacity
        self.deletions = deletions
        self.outcomes: LaunchOutcomes | None = None
        self.tasks: dict[str, LaunchTask] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def nodes(self) -> list[Node]:
        return [t.node for t in self.tasks.values()]

    def unassigned(self, pool: PoolState) -> list[LaunchTask]:
        """Launches under way for nobody in `pool` (a resumed launch, a spare)."""
        return [t for t in self.tasks.values() if t.request_id is None and t.pool is pool]

    def waits(self) -> list[tuple[str | None, float]]:
        return [(t.last_state, t.waiting_since) for t in self.tasks.values()
                if t.waiting_since is not None]

    def adopt(self, task: LaunchTask, req: NodeRequest) -> None:
        """A launch for nobody now serves `req` (its record says so once written)."""
        task.request_id = req.id
        task.node.allocated_to = req.id
        task.node.tenant_name = req.tenant_name
        task.node.requestor = req.requestor
        self.write(task)
        self._note(task, tl.LAUNCH_STARTED, "adopted a launch under way", az=task.az)

    def disown(self, node_id: str) -> bool:
        """The request a launch served is gone: it finishes as a spare. False: no such
        launch under way."""
        task = self.tasks.get(node_id)
        if task is None:
            return False
        task.request_id = None
        task.node.allocated_to = None
        if not task.unsaved:
            # Said at once: other pools wait for a request's launches under way
            # (planner.launch_elsewhere), and this one serves it no more.
            self.write(task)
        return True

    def write(self, task: LaunchTask) -> None:
        """Write the task's node (pipelined); its next step waits for the answer."""
        task.write = self.scope.effects.write_node_async(task.node, lock=task.lock)

    # -- starting -----------------------------------------------------------------------

    def new_node(self, pool: PoolState, label_name: str,
                 request: NodeRequest | None = None) -> Node:
        """The record of a launch about to start (not written yet)."""
        now = self.scope.ctx.clock()
        provider = self.scope.provider
        return Node(type=[label_name], provider=provider.name, pool=pool.cfg.name,
                    launcher=pool.view.id, cloud=getattr(provider, "cloud", None),
                    region=getattr(provider, "region_name", None),
                    allocated_to=request.id if request else None,
                    tenant_name=request.tenant_name if request else None,
                    requestor=request.requestor if request else None,
                    attributes=dict(pool.cfg.node_attributes) or None,
                    resources=self.capacity.label_cost(pool.cfg, label_name).to_dict(),
                    state_time=now, created_time=now)

    def start(self, pool: PoolState, label_name: str, request: NodeRequest | None = None,
              az: str | None = None) -> LaunchTask:
        """Write a new node (init, allocated), lock it, and begin its launch (waits for
        the create and the lock)."""
        node = self.new_node(pool, label_name, request)
        lock = self.scope.effects.create_node(node)
        return self.begin(pool, label_name, node, lock, az)

    def begin(self, pool: PoolState, label_name: str, node: Node, lock,
              az: str | None = None) -> LaunchTask:
        """A written node we hold locked: mark it building and start its machine."""
        task = LaunchTask(node=node, lock=lock, pool=pool, label=pool.cfg.labels[label_name],
                          request_id=node.allocated_to, attempt_started=time.monotonic(), az=az)
        task.sm = self.scope.adapter.create(self._context(task))
        node.driver_data = task.sm.driver_data()
        node.set_state(NodeState.BUILDING, self.scope.ctx.clock())
        # Not written yet: a machine's first state makes no cloud call (drivers.md), so
        # an `init` node without driver_data resumes the same way. The first advance's
        # save writes `building` with the state it moved to: one write less per launch.
        task.unsaved = True
        self.tasks[node.id] = task
        self._note(task, tl.LAUNCH_STARTED, az=az)
        self.scope.log.info("node=%s provider=%s Launching %s (request %s)", node.id,
                            self.scope.name, label_name, node.allocated_to)
        return task

    def _context(self, task: LaunchTask) -> LaunchContext:
        request = self.scope.ctx.cache.get_request(task.request_id) if task.request_id \
            else None
        return LaunchContext(node=task.node, provider=self.scope.provider, pool=task.pool.cfg,
                             label=task.label, az=task.az, request=request,
                             image=self.cloud.resolve_image(task.label))

    def resume(self, node_id: str) -> None:
        """Finish a launch whose launcher died, from the driver_data it saved (waits for
        the lock and a read)."""
        effects = self.scope.effects
        try:
            lock = effects.lock_node(node_id)
        except (errors.LockFailed, errors.NotFound):
            return
        node = effects.read_node(node_id)
        pool = self.scope.pools.get(node.pool or "") if node else None
        if node is None or node.state not in (NodeState.INIT, NodeState.BUILDING,
                                               NodeState.TESTING):
            effects.unlock(lock)
            return
        if pool is None or not node.type or node.type[0] not in pool.cfg.labels:
            self.deletions.start(node, lock, "launch of a pool or label no longer configured")
            return
        task = LaunchTask(node=node, lock=lock, pool=pool, label=pool.cfg.labels[node.type[0]],
                          request_id=None, attempt_started=time.monotonic())
        # The request it was for (handed back, or reset by whoever finds it pending and
        # unlocked) waits for it: it stays allocated, and serves that request when one
        # of our pools takes it again (supply._adopt). Else it finishes as a spare.
        if not self._still_waits(node.allocated_to):
            node.allocated_to = None
        task.sm = self.scope.adapter.create(self._context(task), node.driver_data)
        if node.state == NodeState.INIT:
            node.set_state(NodeState.BUILDING)
        self.write(task)
        self.tasks[node.id] = task
        self.scope.log.info("node=%s provider=%s Resuming launch from %s", node.id,
                            self.scope.name, node.driver_data)

    def _still_waits(self, request_id: str | None) -> bool:
        request = self.scope.ctx.cache.get_request(request_id) if request_id else None
        return request is not None and request.state in (RequestState.REQUESTED,
                                                         RequestState.PENDING)

    # -- timers and steps ----------------------------------------------------------------

    def timers(self) -> list[float]:
        timeout = self.scope.provider.launch_timeout
        out = [t.next_at for t in self.tasks.values() if t.next_at]
        out += [t.attempt_started + timeout for t in self.tasks.values()
                if t.phase == Phase.CLOUD]
        out += [t.attempt_started + self._cleanup_timeout() for t in self.tasks.values()
                if t.phase == Phase.CLEANUP]
        return out

    def _cleanup_timeout(self) -> float:
        """How long a failed attempt's server may take to go (as for deletions)."""
        return min(self.scope.tuning.delete_attempt_max, float(self.scope.provider.launch_timeout))

    def advance(self, now: float) -> None:
        """Submit every step that is due; fail attempts past launch-timeout."""
        timeout = self.scope.provider.launch_timeout
        for task in list(self.tasks.values()):
            if task.phase == Phase.CLOUD and task.future is None and task.write is None and \
                    now - task.attempt_started > timeout:
                self._attempt_failed(task, errors.LaunchFailure(
                    f"server not active within launch-timeout {timeout}s"))
                continue
            if task.phase == Phase.CLEANUP and task.future is None and \
                    now - task.attempt_started > self._cleanup_timeout():
                # The cloud accepted the delete and did not do it (the server went to
                # ERROR, or the delete was lost): delete it again, as deletions do.
                self.scope.log.warning("node=%s provider=%s Server %s of the failed attempt "
                                       "not deleted within %.0fs; deleting it again",
                                       task.node.id, self.scope.name,
                                       task.cleanup_of.external_id, now - task.attempt_started)
                task.cleanup_sm = self.scope.adapter.delete(task.cleanup_of)
                task.attempt_started = now
                task.last_state, task.waits_for_listing = None, False
            machine = task.sm if task.phase == Phase.CLOUD else \
                task.cleanup_sm if task.phase == Phase.CLEANUP else None
            if machine is not None and task.due(now, self.cloud.listing):
                task.step_listing = self.cloud.listing
                task.future = self.scope.call(run_steps, machine, task.step_listing,
                                              self.scope.tuning.steps_per_run)
                if task.waits_for_listing:
                    self.cloud.want_listing()

    def write_done(self, task: LaunchTask) -> bool:
        """Is the task's pipelined write confirmed? A lost record drops the task."""
        state = task.confirm_write(self.scope.log, self.write)
        if state == "lost":
            # Gone, or changed since we decided: the cache shows what is there now.
            # A leaked server is found by its tags on the next leak scan.
            self.tasks.pop(task.node.id, None)
            self.scope.effects.unlock_async(task.lock)
            self.scope.ctx.metrics.launched(task.node, "error.zksession", self.scope.ctx.clock())
        return state == "done"

    def collect(self, now: float) -> None:
        """Take the finished cloud steps and keyscans."""
        for task in list(self.tasks.values()):
            if not self.write_done(task):
                continue
            if task.future is not None and task.future.done():
                if task.phase == Phase.CLEANUP:
                    self._collect_cleanup(task, now)
                else:
                    self._collect_step(task, now)
            elif task.phase == Phase.SCAN and task.scan is not None and task.scan.done:
                self._collect_scan(task)

    def _collect_cleanup(self, task: LaunchTask, now: float) -> None:
        """The failed attempt's server is being deleted before the next attempt."""
        future, task.future = task.future, None
        error = future.exception()
        if error is not None:
            task.back_off(error, now, self.scope.tuning, self.scope.log)
            self._save(task)
            return
        task.stepped(task.cleanup_sm.state, task.step_listing, future.result(),
                     learn=self.cloud.wait_ended)
        if task.cleanup_sm.complete:
            self._new_attempt(task)
        elif task.waits_for_listing:
            self.cloud.want_listing()

    def _collect_step(self, task: LaunchTask, now: float) -> None:
        future, task.future = task.future, None
        error, sm = future.exception(), task.sm
        # Steps before a failing one may have moved the machine on: keep what they learnt.
        data = sm.driver_data()
        if data != task.node.driver_data or sm.external_id != task.node.external_id:
            task.unsaved = True
        task.node.driver_data, task.node.external_id = data, sm.external_id
        if isinstance(error, errors.TransientError):
            self._note(task, tl.DEFERRED, f"the cloud asked to retry: {error}", "rate limited")
            task.back_off(error, now, self.scope.tuning, self.scope.log)
            self._save(task)   # it waits out the backoff
            return
        if isinstance(error, errors.QuotaError):
            self._quota_hit(task, error)
            return
        if error is not None:
            self._attempt_failed(task, error)
            return
        progressed = task.stepped(sm.state, task.step_listing, future.result(),
                                  learn=self.cloud.wait_ended)
        if sm.complete:
            self._booted(task, sm.instance)   # the node's next write carries the machine
        elif not progressed:
            # Saved when it stops to wait (time passes only then), not after every
            # step it runs straight through: a takeover resumes from the last saved
            # state, or deletes an `init` node without one by its tag (drivers.md).
            self._save(task)
            self.cloud.want_listing()

    def _save(self, task: LaunchTask) -> None:
        """Write a launch's unsaved machine state before it waits."""
        if task.unsaved and task.write is None:
            task.unsaved = False
            self.write(task)

    # -- outcomes ----------------------------------------------------------------------

    def _quota_hit(self, task: LaunchTask, error) -> None:
        """Quota refused: abort the node (no failure counted), re-read the limits."""
        self.scope.log.info("node=%s provider=%s Quota exceeded, aborting: %s", task.node.id,
                            self.scope.name, error)
        self.cloud.quota_refused()
        self.scope.ctx.metrics.launched(task.node, "error.quota", self.scope.ctx.clock())
        self.outcomes.launch_aborted(task, f"quota: {error}")
        self._finish(task, NodeState.ABORTED, f"quota exceeded: {error}")

    def _attempt_failed(self, task: LaunchTask, error) -> None:
        retries = max(1, self.scope.provider.launch_retries)
        final = isinstance(error, errors.ConfigurationError) or task.attempt >= retries
        self.scope.log.log(logging.ERROR if final else logging.WARNING,
                           "node=%s provider=%s Launch attempt %d/%d failed: %s", task.node.id,
                           self.scope.name, task.attempt, retries, error,
                           exc_info=not isinstance(error, errors.NodepoolError))
        self._note(task, tl.LAUNCH_FAILED, error_text(error), attempt=task.attempt, of=retries)
        if task.scan is not None:
            task.scan.cancel()
            task.scan = None
        if final:
            self.scope.ctx.metrics.launched(task.node, getattr(error, "statsd_key", "error.unknown"),
                                            self.scope.ctx.clock())
            self.outcomes.launch_failed(task, str(error))
            self._finish(task, NodeState.FAILED, str(error))
            return
        ext = (task.sm.external_id if task.sm else None) or task.node.external_id
        if not ext:
            self._new_attempt(task)
            return
        gone = Node.from_dict(task.node.id, task.node.to_dict())
        gone.external_id = ext
        task.cleanup_of, task.cleanup_sm = gone, self.scope.adapter.delete(gone)
        task.phase, task.attempt_started = Phase.CLEANUP, time.monotonic()
        task.last_state, task.waits_for_listing = None, False

    def _new_attempt(self, task: LaunchTask) -> None:
        task.attempt += 1
        task.phase, task.cleanup_sm, task.booted_at = Phase.CLOUD, None, None
        task.cleanup_of = None
        task.attempt_started = time.monotonic()
        task.last_state, task.waits_for_listing = None, False
        task.node.external_id = None
        task.sm = self.scope.adapter.create(self._context(task))
        task.node.driver_data = task.sm.driver_data()
        self.write(task)

    def _finish(self, task: LaunchTask, state: NodeState, reason: str) -> None:
        del self.tasks[task.node.id]
        task.node.set_state(state)
        self.write(task)   # pipelined: the deleting write lands after it
        self.deletions.start(task.node, task.lock, reason)

    def _booted(self, task: LaunchTask, inst: Instance) -> None:
        take_instance(task.node, inst)
        task.booted_at = time.monotonic()
        check = check_for(self.scope.ctx.scanner, task.node, inst,
                          task.label.host_key_checking)
        if check is None:
            self._ready(task)
            return
        # Scan the node's host keys, or probe its port; the outcome is collected.
        node = task.node
        task.phase = Phase.SCAN
        self._save(task)
        task.scan = check(node.interface_ip, node.connection_port,
                          timeout=check_timeout(inst, self.scope.provider.boot_timeout),
                          on_done=lambda _: self.scope.wake())

    def _collect_scan(self, task: LaunchTask) -> None:
        scan, task.scan = task.scan, None
        if scan.error is None:
            if scan.key_types:   # a probe leaves the keys as they are
                task.node.host_keys = list(scan.result)
            self._ready(task)
        else:
            self._attempt_failed(task, errors.KeyscanFailure(f"keyscan failed: {scan.error}"))

    def _ready(self, task: LaunchTask) -> None:
        del self.tasks[task.node.id]
        task.phase = Phase.DONE
        task.node.set_state(NodeState.READY)
        self.scope.ctx.metrics.launched(task.node, "ready", self.scope.ctx.clock())
        if self.outcomes.launch_ready(task):
            self.write(task)            # stays locked until its request is fulfilled
        else:                           # a spare: nobody waits for it
            task.node.allocated_to = None   # resumed for a request no pool took again
            task.write = self.scope.effects.write_and_unlock_async(task.node, task.lock)
        self.scope.log.info("node=%s provider=%s Ready at %s", task.node.id, self.scope.name,
                            task.node.interface_ip)

    def _note(self, task: LaunchTask, event: str, text: str = "", cause: str | None = None,
              **detail) -> None:
        """An event of the timeline of the request this launch serves (in memory)."""
        self.scope.ctx.timeline.record(task.request_id, self.scope.name, event, text,
                                       pool=task.pool.cfg.name, cause=cause, node=task.node.id,
                                       **detail)

    # -- stop --------------------------------------------------------------------------

    def hand_back(self) -> None:
        """On stop: launches stay resumable from their records, still allocated to the
        requests they serve (the next owner resumes them for those); their locks go."""
        for task in list(self.tasks.values()):
            self.scope.effects.unlock_async(task.lock)
        self.tasks.clear()
