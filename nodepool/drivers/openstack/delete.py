"""The delete state machine: start -> [delete-server] -> wait-gone -> delete-ips -> deleted."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from nodepool.drivers.adapter import DeleteStateMachine, InstanceStatus, Listing
from nodepool.drivers.openstack.resources import tagged_floating_ips
from nodepool.model import Node

if TYPE_CHECKING:
    from nodepool.drivers.openstack.adapter import OpenStackAdapter

log = logging.getLogger("nodepool.drivers.openstack")

# A server still listed, not deleting, this long after our delete call (Nova
# lost the request, or the delete failed into ERROR) gets the call again.
REISSUE_AFTER = 10.0


class OpenStackDelete(DeleteStateMachine):
    """Deletes a node's server, then the floating IPs tagged with its node id.

    The first advance issues the delete when the server's id is known (the
    core's leak cleanup advances a machine once per scan); otherwise it finds
    the server by its node-id tag in a listing taken after the machine was
    made, or with one listing call. A server already gone is success; a
    delete that hangs keeps the machine in wait-gone, and the node record
    with it, until the server is gone.
    """

    DELETE = "delete-server"
    WAIT = "wait-gone"
    IPS = "delete-ips"
    DONE = "deleted"

    def __init__(self, adapter: OpenStackAdapter, node: Node):
        super().__init__(node)
        self.adapter = adapter
        self.cloud = adapter.cloud
        saved = node.driver_data if isinstance(node.driver_data, dict) else {}
        self.external_id: str | None = node.external_id or saved.get("external_id")
        self._born = time.monotonic()
        self._called_at = self._born
        self._fips: list[str] | None = None
        self.where = f"node={node.id} provider={adapter.provider.name}"
        self._steps = {self.START: self._start, self.DELETE: self._delete_server,
                       self.WAIT: self._wait_gone, self.IPS: self._delete_ips,
                       self.DONE: lambda _: None}

    def advance(self, listing: Listing | None) -> None:
        self._steps[self.state](listing)

    def _start(self, listing: Listing | None) -> None:
        if self.external_id is None:
            if not self.node.id:
                self.state = self.IPS
                return
            if listing is None:
                found = self.adapter.find_instance(self.node.id)
                self.external_id = found.external_id if found else None
                self.state = self.DELETE if self.external_id else self.IPS
                return  # that was this advance's call
            if listing.taken_at < self._born:
                return  # a server made just before we started may be missing from it
            instance = listing.by_node_id(self.node.id)
            if instance is None:
                self.state = self.IPS
                return
            self.external_id = instance.external_id
        self._delete_server(listing)

    def _delete_server(self, listing: Listing | None) -> None:
        server_id = self.external_id
        assert server_id is not None
        self.cloud.delete_server(f"delete server {server_id} of node {self.node.id}", server_id)
        self._called_at = time.monotonic()
        self.state = self.WAIT
        log.info("%s Deleting server %s", self.where, server_id)

    def _wait_gone(self, listing: Listing | None) -> None:
        assert self.external_id is not None
        if listing is None:
            server = self.cloud.get_server(self.external_id)
            instance = self.adapter.instance(server) if server else None
        elif listing.taken_at < self._called_at:
            return
        else:
            instance = listing.instances.get(self.external_id)
        if instance is None:
            self.state = self.IPS
            return
        if (instance.status != InstanceStatus.DELETING
                and time.monotonic() - self._called_at > REISSUE_AFTER):
            log.warning("%s Server %s is %s, not deleting; deleting it again", self.where,
                        self.external_id, instance.status.value)
            self._delete_server(listing)

    def _delete_ips(self, listing: Listing | None) -> None:
        if not self.adapter.makes_floating_ips or not self.node.id:
            self._done()
            return
        if self._fips is None:
            node_id = self.node.id
            found = self.cloud.call(f"list floating IPs of node {node_id}",
                                    lambda conn: tagged_floating_ips(
                                        conn, self.adapter.provider.name, node_id))
            self._fips = [f.id for f in found]
        elif self._fips:
            fip_id = self._fips[0]
            self.cloud.call(f"delete floating IP {fip_id}",
                            lambda conn: conn.network.delete_ip(fip_id, ignore_missing=True),
                            not_found=None)
            self._fips.pop(0)
            log.info("%s Deleted floating IP %s", self.where, fip_id)
        if not self._fips:
            self._done()

    def _done(self) -> None:
        self.state = self.DONE
        self.complete = True
