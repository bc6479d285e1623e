"""Driving launch and delete tasks: cloud steps on the executor, results on the loop.

A mixin of ProviderWorker. Each pass submits the tasks that are due, collects
finished steps, confirms pipelined writes, runs keyscans, and applies the
outcome: progress, retry with backoff, another attempt, ready, or deletion.
"""

from __future__ import annotations

import logging
import time

from kazoo.exceptions import BadVersionError, NoNodeError

from nodepool import errors
from nodepool.drivers.adapter import Instance
from nodepool.launcher.tasks import DeleteTask, LaunchTask, Phase, backoff, run_steps
from nodepool.model import Node, NodeState
from nodepool.zk import locks, nodes, paths

log = logging.getLogger("nodepool.launcher.machines")

DELETE_ATTEMPT_MAX = 300.0  # a delete not finished by then (or launch-timeout) starts over
QUOTA_REFUSAL_MEMORY = 60.0  # seconds after a cloud quota refusal that deletions re-read limits


class MachineDriving:
    """The step-by-step part of the lifecycle."""

    def task_timers(self) -> list[float]:
        out = [t.next_at for t in self.launches.values() if t.next_at]
        out += [t.next_at for t in self.deletes.values() if t.next_at]
        for t in self.launches.values():
            if t.phase == Phase.CLOUD:
                out.append(t.attempt_started + self.provider.launch_timeout)
        out += [t.started + self._delete_timeout() for t in self.deletes.values()]
        return out

    def _delete_timeout(self) -> float:
        return min(DELETE_ATTEMPT_MAX, float(self.provider.launch_timeout))

    def advance_tasks(self, now: float) -> None:
        for task in list(self.launches.values()):
            if task.phase == Phase.CLOUD and task.future is None and task.write is None and \
                    now - task.attempt_started > self.provider.launch_timeout:
                self._attempt_failed(task, errors.LaunchFailure(
                    f"server not active within launch-timeout {self.provider.launch_timeout}s"))
                continue
            machine = task.sm if task.phase == Phase.CLOUD else \
                task.cleanup_sm if task.phase == Phase.CLEANUP else None
            if machine is not None and task.due(now, self.listing):
                self._submit(task, machine)
        for task in list(self.deletes.values()):
            if task.future is None and now - task.started > self._delete_timeout():
                # The cloud accepted a delete and forgot it: issue it again, keep the record.
                self.log.warning("node=%s provider=%s Delete not done after %.0fs; retrying",
                                 task.node.id, self.name, now - task.started)
                task.sm = self.adapter.delete(task.node)
                task.started = now
                task.last_state, task.waits_for_listing = None, False
            if task.due(now, self.listing):
                self._submit(task, task.sm)

    def _submit(self, task, machine) -> None:
        listing = self.listing
        task.step_listing = listing
        task.future = self._call(run_steps, machine, listing)
        if task.waits_for_listing:
            self.listing_wanted = True

    # -- collecting --------------------------------------------------------------

    def collect_finished(self, now: float) -> None:
        for task in list(self.launches.values()):
            if not self._write_done(task):
                continue
            if task.future is not None and task.future.done():
                self._collect_launch(task, now)
            elif task.phase == Phase.SCAN and task.scan is not None and task.scan.done:
                self._collect_scan(task)
        for task in list(self.deletes.values()):
            if self._write_done(task) and task.future is not None and task.future.done():
                self._collect_delete(task, now)

    def _write_done(self, task) -> bool:
        """Is the task's pipelined write confirmed? A lost record drops the task."""
        result = task.write
        if result is None:
            return True
        if not result.ready():
            return False
        task.write = None
        if result.successful():
            task.node.version = result.get().version
            return True
        self.log.error("node=%s provider=%s Writing the node failed: %r", task.node.id,
                       self.name, result.exception)
        if isinstance(result.exception, (NoNodeError, BadVersionError)):
            # Gone, or changed since we decided (a conditional write): drop the
            # task; the cache shows what is there now. A leaked server is found
            # by its tags on the next leak scan.
            self.launches.pop(task.node.id, None)
            self.deletes.pop(task.node.id, None)
            locks.release_async(self.ctx.kazoo, task.lock)
            return False
        self.write(task)   # connection trouble: write the same again
        return False

    def _collect_launch(self, task: LaunchTask, now: float) -> None:
        future, task.future = task.future, None
        error = future.exception()
        if task.phase == Phase.CLEANUP:
            if error is not None:
                self._transient(task, error, now)
                self.save_machine(task)
                return
            task.stepped(task.cleanup_sm.state, task.step_listing, future.result())
            if task.cleanup_sm.complete:
                self._new_attempt(task)
            elif task.waits_for_listing:
                self.listing_wanted = True
            return
        sm = task.sm
        # Steps before a failing one may have moved the machine on: keep what they learnt.
        data = sm.driver_data()
        if data != task.node.driver_data or sm.external_id != task.node.external_id:
            task.unsaved = True
        task.node.driver_data = data
        task.node.external_id = sm.external_id
        if error is not None:
            if isinstance(error, errors.TransientError):
                self._transient(task, error, now)
                self.save_machine(task)   # it waits out the backoff
            elif isinstance(error, errors.QuotaError):
                self._quota_hit(task, error)
            else:
                self._attempt_failed(task, error)
            return
        progressed = task.stepped(sm.state, task.step_listing, future.result())
        if sm.complete:
            self.booted(task, sm.instance)   # the node's next write carries the machine
            return
        # The machine's state is saved when it stops to wait (time passes only
        # then), not after every step it runs straight through: a takeover resumes
        # from the last saved state, or deletes an `init` node without one by its
        # tag (drivers.md, "The create state machine").
        if not progressed:
            self.save_machine(task)
        if task.waits_for_listing:
            self.listing_wanted = True

    def save_machine(self, task: LaunchTask) -> None:
        """Write a launch's unsaved machine state before it waits."""
        if task.unsaved and task.write is None:
            task.unsaved = False
            self.write(task)

    def _transient(self, task, error, now: float) -> None:
        task.transient_failures += 1
        delay = backoff(task.transient_failures, getattr(error, "retry_after", None))
        task.next_at = now + delay
        self.log.warning("node=%s provider=%s Transient error, retrying in %.2fs: %s",
                         task.node.id, self.name, delay, error)

    def _quota_hit(self, task: LaunchTask, error) -> None:
        """Quota refused: abort the node (no failure counted), pause the pool, re-read quota."""
        self.log.info("node=%s provider=%s Quota exceeded, aborting: %s", task.node.id,
                      self.name, error)
        task.pool.paused, task.pool.pause_reason = True, f"quota: {error}"
        self.quota_refused_at = time.monotonic()
        self.refresh_quota()
        self.launch_aborted(task)
        self._finish_launch(task, NodeState.ABORTED, f"quota exceeded: {error}")

    def _attempt_failed(self, task: LaunchTask, error) -> None:
        retries = max(1, self.provider.launch_retries)
        final = isinstance(error, errors.ConfigurationError) or task.attempt >= retries
        level = logging.ERROR if final else logging.WARNING
        self.log.log(level, "node=%s provider=%s Launch attempt %d/%d failed: %s",
                     task.node.id, self.name, task.attempt, retries, error,
                     exc_info=not isinstance(error, errors.NodepoolError))
        if task.scan is not None:
            task.scan.cancel()
            task.scan = None
        if final:
            self.launch_failed(task, str(error))
            self._finish_launch(task, NodeState.FAILED, str(error))
            return
        ext = (task.sm.external_id if task.sm else None) or task.node.external_id
        if ext:
            gone = Node.from_dict(task.node.id, task.node.to_dict())
            gone.external_id = ext
            task.cleanup_sm = self.adapter.delete(gone)
            task.phase = Phase.CLEANUP
            task.last_state, task.waits_for_listing = None, False
        else:
            self._new_attempt(task)

    def _new_attempt(self, task: LaunchTask) -> None:
        task.attempt += 1
        task.phase, task.cleanup_sm, task.booted_at = Phase.CLOUD, None, None
        task.attempt_started = time.monotonic()
        task.last_state, task.waits_for_listing = None, False
        task.node.external_id = None
        task.sm = self.adapter.create(self._launch_context(task))
        task.node.driver_data = task.sm.driver_data()
        self.write(task)

    def _finish_launch(self, task: LaunchTask, state: NodeState, reason: str) -> None:
        del self.launches[task.node.id]
        task.node.set_state(state)
        self.write(task)   # pipelined: the deleting write below lands after it
        self.start_delete(task.node, task.lock, reason)

    # -- booted, scanned, ready ------------------------------------------------------

    def booted(self, task: LaunchTask, inst: Instance) -> None:
        node = task.node
        for field in ("interface_ip", "public_ipv4", "private_ipv4", "public_ipv6",
                      "private_ipv6", "az", "host_id", "hostname", "external_id", "username",
                      "connection_port", "connection_type", "shell_type", "python_path", "slot"):
            value = getattr(inst, field, None)
            if value is not None:
                setattr(node, field, value)
        node.region = inst.region or node.region
        task.booted_at = time.monotonic()
        meta = inst.metadata or {}
        checking = meta.get("host_key_checking", getattr(
            task.label, "host_key_checking", getattr(task.pool.cfg, "host_key_checking", True)))
        # host_keys from the driver: a list is final (empty = the requestor will not
        # check), None means scan them.
        if inst.host_keys is not None or not checking:
            node.host_keys = list(inst.host_keys or [])
        elif node.connection_type == "ssh" and node.interface_ip:
            task.phase = Phase.SCAN
            self.save_machine(task)
            timeout = float(meta.get("timeout") or self.provider.boot_timeout)
            task.scan = self.ctx.scanner.scan(node.interface_ip, node.connection_port,
                                              timeout=timeout, on_done=lambda _: self.wake())
            return
        self._ready(task)

    def _collect_scan(self, task: LaunchTask) -> None:
        scan, task.scan = task.scan, None
        if scan.error is not None:
            if not self.adapter.launches:    # a static host that does not answer: retry later
                ext = (task.node.driver_data or {}).get("standing")
                self.standing_retry[ext] = time.monotonic() + self.STANDING_RETRY
                self.log.warning("node=%s Static host %s unreachable, retrying in %ss: %s",
                                 task.node.id, task.node.interface_ip, self.STANDING_RETRY,
                                 scan.error)
                del self.launches[task.node.id]
                self.start_delete(task.node, task.lock, "static host unreachable")
                return
            self._attempt_failed(task, errors.LaunchFailure(f"keyscan failed: {scan.error}"))
            return
        task.node.host_keys = list(scan.result)
        self._ready(task)

    def _ready(self, task: LaunchTask) -> None:
        del self.launches[task.node.id]
        task.phase = Phase.DONE
        task.node.set_state(NodeState.READY)
        if self.launch_ready(task):
            self.write(task)            # stays locked until its request is fulfilled
        else:
            self.write_and_unlock(task)   # a spare: nobody waits for it
        self.log.info("node=%s provider=%s Ready at %s", task.node.id, self.name,
                      task.node.interface_ip)

    # -- deleted -------------------------------------------------------------------

    def _collect_delete(self, task: DeleteTask, now: float) -> None:
        future, task.future = task.future, None
        error = future.exception()
        if error is not None:
            # Never drop the record while the server may exist: retry with backoff.
            self._transient(task, error, now)
            return
        task.stepped(task.sm.state, task.step_listing, future.result())
        if not task.sm.complete:
            if task.waits_for_listing:
                self.listing_wanted = True
            return
        del self.deletes[task.node.id]
        self._remove(task)
        self.log.info("node=%s provider=%s Deleted", task.node.id, self.name)
        # Our own usage is counted from our nodes, so a deletion needs no new limits,
        # unless the cloud lately refused a launch our count let through (it counts
        # something we do not): then re-read them while a pool waits.
        if now - self.quota_refused_at < QUOTA_REFUSAL_MEMORY and \
                any(p.paused for p in self.pools.values()):
            self.refresh_quota()

    def _remove(self, task: DeleteTask) -> None:
        """Remove the node, its lock dir and our contender at once (not waited for).

        If someone queued for the lock meanwhile the removal fails as a whole
        (NotEmpty): then the node is marked `deleted` (its server is gone) and
        the careful path retries the removal.
        """
        node, lock, kazoo = task.node, task.lock, self.ctx.kazoo
        node.set_state(NodeState.DELETED)
        tx = kazoo.transaction()
        if lock is not None and lock.node:
            tx.delete(f"{lock.path}/{lock.node}")
            tx.delete(lock.path)
            lock.is_acquired, lock.node = False, None
        tx.delete(paths.node(node.id))
        result = self.ctx.cache.commit_own(tx, [], removes=(node.id,))

        def done(res) -> None:
            try:
                failed = any(isinstance(r, Exception) for r in res.get())
            except Exception:
                failed = True
            if failed:
                self.ctx.cache.write_node(node.id, node.to_json())
                self.remove_later.add(node.id)
                self.wake()
        result.rawlink(done)

    def retry_removals(self) -> None:
        """Removals whose one-shot transaction failed: the careful, synchronous way."""
        while self.remove_later:
            node_id = self.remove_later.pop()
            try:
                nodes.delete_node(self.ctx.kazoo, node_id)
            except errors.VersionConflict:
                self.remove_later.add(node_id)
                return
