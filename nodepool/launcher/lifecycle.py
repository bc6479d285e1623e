"""Launching and deleting nodes: the provider loop's side of the node lifecycle.

A mixin of ProviderWorker. Every ZooKeeper write here happens on the loop
thread while we hold the node's lock; driver steps run on the executor.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nodepool import errors
from nodepool.drivers.adapter import Instance, LaunchContext
from nodepool.launcher import cleanup
from nodepool.launcher.tasks import DeleteTask, LaunchTask, Phase, backoff
from nodepool.model import Node, NodeState
from nodepool.zk import locks, nodes

log = logging.getLogger("nodepool.launcher.lifecycle")

STANDING_RETRY = 10.0   # seconds before re-checking a static host that did not answer
DELETE_ATTEMPT_MAX = 300.0  # a delete not finished by then (or launch-timeout) starts over


class Lifecycle:
    """Launch, keyscan, ready; delete and remove; resume what a dead launcher left."""

    def init_lifecycle(self) -> None:
        self.launches: dict[str, LaunchTask] = {}
        self.deletes: dict[str, DeleteTask] = {}

    def _lock_id(self) -> str:
        return f"{self.ctx.hostname}:{self.name}"

    # -- starting work -------------------------------------------------------

    def start_launch(self, pool, label_name: str, request=None, az: str | None = None,
                     instance: Instance | None = None) -> LaunchTask:
        """Write a new node (init, allocated), lock it, mark it building, start its machine."""
        label = pool.cfg.labels[label_name]
        now = self.ctx.clock()
        node = Node(type=[label_name], provider=self.name, pool=pool.cfg.name,
                    launcher=pool.view.id, cloud=getattr(self.provider, "cloud", None),
                    region=getattr(self.provider, "region_name", None),
                    allocated_to=request.id if request else None,
                    tenant_name=request.tenant_name if request else None,
                    requestor=request.requestor if request else None,
                    attributes=dict(pool.cfg.node_attributes) or None,
                    resources=self.label_cost(pool.cfg, label_name).to_dict(),
                    state_time=now, created_time=now)
        nodes.create_node(self.ctx.kazoo, node)
        lock = locks.lock_node(self.ctx.kazoo, node.id, identifier=self._lock_id())
        task = LaunchTask(node=node, lock=lock, pool=pool, label=label,
                          request_id=node.allocated_to, attempt_started=time.monotonic(), az=az)
        if instance is not None:    # a standing host: no cloud step, straight to the scan
            node.type = list((instance.metadata or {}).get("labels") or [label_name])
            node.driver_data = {"standing": instance.external_id}
            node.set_state(NodeState.BUILDING, now)
            nodes.update_node(self.ctx.kazoo, node)
            self.launches[node.id] = task
            self._booted(task, instance)
            return task
        task.sm = self.adapter.create(self._launch_context(task))
        node.driver_data = task.sm.driver_data()
        node.set_state(NodeState.BUILDING, now)
        nodes.update_node(self.ctx.kazoo, node)
        self.launches[node.id] = task
        self.log.info("node=%s provider=%s Launching %s (request %s)", node.id, self.name,
                      label_name, node.allocated_to)
        return task

    def _launch_context(self, task: LaunchTask) -> LaunchContext:
        return LaunchContext(node=task.node, provider=self.provider, pool=task.pool.cfg,
                             label=task.label, az=task.az)

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
        nodes.update_node(self.ctx.kazoo, node)
        self.launches[node.id] = task
        self.log.info("node=%s provider=%s Resuming launch from %s", node.id, self.name,
                      node.driver_data)

    def start_delete(self, node: Node, lock, reason: str) -> None:
        """Delete a node we hold locked: mark it deleting, then run the driver's machine."""
        if node.state != NodeState.DELETING:
            node.set_state(NodeState.DELETING)
            nodes.update_node(self.ctx.kazoo, node)
        self.deletes[node.id] = DeleteTask(node=node, lock=lock, sm=self.adapter.delete(node),
                                           started=time.monotonic())
        self.log.info("node=%s provider=%s Deleting: %s", node.id, self.name, reason)

    def apply_cleanup(self) -> None:
        """Act on nodes nobody holds: delete finished ones, release orphans, resume launches."""
        busy = set(self.launches) | set(self.deletes) | self.handler_node_ids()
        pnodes = [n for n in self.ctx.cache.nodes() if n.provider == self.name]
        actions = cleanup.plan(pnodes, self.ctx.cache.is_node_locked, busy,
                               self._request_exists, self.ctx.config.labels,
                               self.ctx.config.max_hold_age, self.ctx.clock(),
                               can_resume=self.adapter.launches)
        for act in actions:
            try:
                if act.action == cleanup.Action.RESUME:
                    self.resume_launch(act.node_id)
                elif act.action == cleanup.Action.RELEASE:
                    self.release_node(act.node_id, expected_request=None)
                elif act.action == cleanup.Action.REMOVE:
                    self._remove_record(act.node_id)
                else:
                    self._delete_unlocked(act.node_id, act.reason)
            except (errors.LockFailed, errors.NotFound, errors.VersionConflict):
                continue  # someone got there first; the cache will tell us what changed

    def _remove_record(self, node_id: str) -> None:
        lock = locks.lock_node(self.ctx.kazoo, node_id, identifier=self._lock_id())
        node = nodes.get_node(self.ctx.kazoo, node_id)
        if node is not None and node.state == NodeState.DELETED:
            nodes.delete_node(self.ctx.kazoo, node_id)
        locks.release(lock)

    def _request_exists(self, request_id: str) -> bool:
        if self.ctx.cache.get_request(request_id) is not None:
            return True
        # The cache may lag behind a brand-new request: ask ZooKeeper before releasing.
        from nodepool.zk import paths
        return self.ctx.kazoo.exists(paths.request(request_id)) is not None

    def _delete_unlocked(self, node_id: str, reason: str) -> None:
        lock = locks.lock_node(self.ctx.kazoo, node_id, identifier=self._lock_id())
        node = nodes.get_node(self.ctx.kazoo, node_id)
        # The cache may be a step behind (a requestor that set `hold` and unlocked):
        # decide again on what ZooKeeper says now.
        fresh = cleanup.plan([node], lambda _: False, set(), lambda _: True,
                             self.ctx.config.labels, self.ctx.config.max_hold_age,
                             self.ctx.clock(), can_resume=False) if node else []
        if not any(a.action == cleanup.Action.DELETE for a in fresh):
            locks.release(lock)
            return
        self.start_delete(node, lock, reason)

    def release_node(self, node_id: str, expected_request: str | None) -> None:
        """Clear `allocated_to` of a ready node (lock, re-check, write, unlock)."""
        lock = locks.lock_node(self.ctx.kazoo, node_id, identifier=self._lock_id())
        try:
            node = nodes.get_node(self.ctx.kazoo, node_id)
            if node is None or node.allocated_to is None:
                return
            if expected_request is not None and node.allocated_to != expected_request:
                return
            if expected_request is None and self._request_exists(node.allocated_to):
                return
            self.log.info("node=%s Released from request %s", node_id, node.allocated_to)
            node.allocated_to = None
            nodes.update_node(self.ctx.kazoo, node)
        finally:
            locks.release(lock)

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

    # -- driving machines -----------------------------------------------------

    def task_timers(self) -> list[float]:
        out = [t.next_at for t in self.launches.values() if t.next_at]
        out += [t.next_at for t in self.deletes.values() if t.next_at]
        for t in self.launches.values():
            if t.phase == Phase.CLOUD:
                out.append(t.attempt_started + self.provider.launch_timeout)
        out += [t.started + self._delete_timeout() for t in self.deletes.values()]
        return out

    def advance_tasks(self, now: float) -> None:
        for task in list(self.launches.values()):
            if task.phase == Phase.CLOUD and task.future is None and \
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

    def _delete_timeout(self) -> float:
        return min(DELETE_ATTEMPT_MAX, float(self.provider.launch_timeout))

    def _submit(self, task, machine) -> None:
        listing = self.listing
        task.step_listing = listing
        task.future = self._call(machine.advance, listing)
        if task.waits_for_listing:
            self.listing_wanted = True

    def collect_finished(self, now: float) -> None:
        for task in list(self.launches.values()):
            if task.future is not None and task.future.done():
                self._collect_launch(task, now)
            elif task.phase == Phase.SCAN and task.scan is not None and task.scan.done:
                self._collect_scan(task)
        for task in list(self.deletes.values()):
            if task.future is not None and task.future.done():
                self._collect_delete(task, now)

    def _collect_launch(self, task: LaunchTask, now: float) -> None:
        future, task.future = task.future, None
        error = future.exception()
        if task.phase == Phase.CLEANUP:
            if error is not None:
                self._transient(task, error, now)
                return
            self.progressed |= task.stepped(task.cleanup_sm.state, task.step_listing)
            if task.cleanup_sm.complete:
                self._new_attempt(task)
            elif task.waits_for_listing:
                self.listing_wanted = True
            return
        if error is not None:
            if isinstance(error, errors.TransientError):
                self._transient(task, error, now)
            elif isinstance(error, errors.QuotaError):
                self._quota_hit(task, error)
            else:
                self._attempt_failed(task, error)
            return
        sm = task.sm
        self.progressed |= task.stepped(sm.state, task.step_listing)
        data = sm.driver_data()
        if data != task.node.driver_data or sm.external_id != task.node.external_id:
            task.node.driver_data = data
            task.node.external_id = sm.external_id
            nodes.update_node(self.ctx.kazoo, task.node)
        if sm.complete:
            self._booted(task, sm.instance)
        elif task.waits_for_listing:
            self.listing_wanted = True

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
        ext = task.sm.external_id if task.sm else task.node.external_id
        if ext or task.node.external_id:
            gone = Node.from_dict(task.node.id, task.node.to_dict())
            gone.external_id = ext or task.node.external_id
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
        nodes.update_node(self.ctx.kazoo, task.node)

    def _finish_launch(self, task: LaunchTask, state: NodeState, reason: str) -> None:
        del self.launches[task.node.id]
        task.node.set_state(state)
        nodes.update_node(self.ctx.kazoo, task.node)
        self.start_delete(task.node, task.lock, reason)

    def _booted(self, task: LaunchTask, inst: Instance) -> None:
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
                self.standing_retry[ext] = time.monotonic() + STANDING_RETRY
                self.log.warning("node=%s Static host %s unreachable, retrying in %ss: %s",
                                 task.node.id, task.node.interface_ip, STANDING_RETRY, scan.error)
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
        nodes.update_node(self.ctx.kazoo, task.node)
        self.log.info("node=%s provider=%s Ready at %s", task.node.id, self.name,
                      task.node.interface_ip)
        if not self.launch_ready(task):
            locks.release(task.lock)   # a spare: nobody waits for it

    def _collect_delete(self, task: DeleteTask, now: float) -> None:
        future, task.future = task.future, None
        error = future.exception()
        if error is not None:
            # Never drop the record while the server may exist: retry with backoff.
            self._transient(task, error, now)
            return
        self.progressed |= task.stepped(task.sm.state, task.step_listing)
        if not task.sm.complete:
            if task.waits_for_listing:
                self.listing_wanted = True
            return
        del self.deletes[task.node.id]
        try:
            task.node.set_state(NodeState.DELETED)
            nodes.update_node(self.ctx.kazoo, task.node, check_version=False)
        except errors.NotFound:
            pass
        nodes.delete_node(self.ctx.kazoo, task.node.id)
        locks.release(task.lock)
        self.log.info("node=%s provider=%s Deleted", task.node.id, self.name)
        if any(p.paused for p in self.pools.values()):
            self.refresh_quota()
