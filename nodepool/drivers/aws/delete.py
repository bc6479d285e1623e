"""The delete state machine: start -> [terminate] -> wait-gone -> [release-host ->
wait-host-gone] -> deleted."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from nodepool.drivers.adapter import DeleteStateMachine, InstanceStatus, Listing
from nodepool.drivers.aws import hosts
from nodepool.model import Node

if TYPE_CHECKING:
    from nodepool.drivers.aws.adapter import AwsAdapter

log = logging.getLogger("nodepool.drivers.aws")

# An instance still listed, not shutting down, this long after our terminate call gets it again.
REISSUE_AFTER = 10.0


class AwsDelete(DeleteStateMachine):
    """Terminates a node's instance (its volumes and ENI go with it: DeleteOnTermination).

    The instance is found by external_id, else by its node-id tag; a terminated or
    unknown instance is success. A node of a dedicated-host label then has its host
    released (found by driver_data `host`, else by its node-id tag), never before.
    """

    TERMINATE = "terminate"
    WAIT = "wait-gone"
    RELEASE = "release-host"
    HOST_WAIT = "wait-host-gone"
    DONE = "deleted"

    def __init__(self, adapter: AwsAdapter, node: Node):
        super().__init__(node)
        self.adapter = adapter
        saved = node.driver_data if isinstance(node.driver_data, dict) else {}
        self.external_id: str | None = node.external_id or saved.get("external_id")
        self.host_id: str | None = saved.get("host")
        self._has_host = self.host_id is not None or hosts.is_dedicated(
            adapter.provider, node.pool, list(node.type))
        self._born = time.monotonic()
        self._called_at = self._born
        self.where = f"node={node.id} provider={adapter.provider.name}"
        self._steps = {self.START: self._start, self.TERMINATE: self._terminate,
                       self.WAIT: self._wait_gone, self.RELEASE: self._release_host,
                       self.HOST_WAIT: self._wait_host_gone, self.DONE: lambda _: None}

    def advance(self, listing: Listing | None) -> None:
        self._steps[self.state](listing)

    def _start(self, listing: Listing | None) -> None:
        if self.external_id is None:
            if not self.node.id:
                self._instance_gone()
                return
            if listing is None:
                found = self.adapter.find_instances(self.node.id)
                self.external_id = found[0].external_id if found else None
                if self.external_id:
                    self.state = self.TERMINATE
                else:
                    self._instance_gone()
                return
            if listing.taken_at < self._born:
                return
            instance = listing.by_node_id(self.node.id)
            if instance is None:
                self._instance_gone()
                return
            self.external_id = instance.external_id
        else:
            # Terminated already (reclaimed, deleted behind our back) or never ours:
            # nothing to terminate (and terminating a terminated instance may err).
            if listing is None:
                gone = self.adapter.get_instance(self.external_id) is None
            elif self.external_id in listing.instances:
                gone = False   # listed lately: terminate
            elif listing.taken_at < self._born:
                return         # not in an older listing: wait for a newer one
            else:
                gone = True
            if gone:
                self._instance_gone()
                return
        self._terminate(listing)

    def _terminate(self, listing: Listing | None) -> None:
        instance_id = self.external_id
        assert instance_id is not None
        gone = self.adapter.ec2.call(
            f"terminate instance {instance_id} of node {self.node.id}",
            lambda c: c.terminate_instances(InstanceIds=[instance_id]), not_found=None)
        self._called_at = time.monotonic()
        if gone is None:
            self._instance_gone()
            return
        self.state = self.WAIT
        log.info("%s Terminating instance %s", self.where, instance_id)

    def _wait_gone(self, listing: Listing | None) -> None:
        assert self.external_id is not None
        if listing is None:
            instance = self.adapter.get_instance(self.external_id)
        elif listing.taken_at < self._called_at:
            return
        else:
            instance = listing.instances.get(self.external_id)
        if instance is None:
            self._instance_gone()
            return
        if (instance.status != InstanceStatus.DELETING
                and time.monotonic() - self._called_at > REISSUE_AFTER):
            log.warning("%s Instance %s is %s, not shutting down; terminating it again",
                        self.where, self.external_id, instance.status.value)
            self._terminate(listing)

    def _instance_gone(self) -> None:
        if self._has_host:
            self.state = self.RELEASE
            return
        self._done()

    # -- the dedicated host, once its instance is gone -------------------------

    def _release_host(self, listing: Listing | None) -> None:
        ec2, what = self.adapter.ec2, f"node {self.node.id}"
        if self.host_id is None:
            self.host_id = hosts.find(ec2, self.adapter.provider.name, self.node.id or "")
            if self.host_id is None:
                self._done()
            return   # that lookup was this advance's call
        if hosts.state(ec2, self.host_id) in (None, *hosts.GONE_STATES):
            self._done()
            return
        hosts.release(ec2, self.host_id, what)
        self._called_at = time.monotonic()
        self.state = self.HOST_WAIT
        log.info("%s Releasing dedicated host %s", self.where, self.host_id)

    def _wait_host_gone(self, listing: Listing | None) -> None:
        assert self.host_id is not None
        if hosts.state(self.adapter.ec2, self.host_id) in (None, *hosts.GONE_STATES):
            self._done()
        elif time.monotonic() - self._called_at > REISSUE_AFTER:
            self.state = self.RELEASE   # still held: release it again

    def _done(self) -> None:
        self.state = self.DONE
        self.complete = True
