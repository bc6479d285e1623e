"""StaticAdapter: one standing Instance per max-parallel-jobs slot of each configured host."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from typing import Any, Mapping

from nodepool.config.model import DEFAULT_PORTS
from nodepool.config.static import StaticNode, StaticPool, StaticProvider
from nodepool.drivers.adapter import (
    Adapter,
    CreateStateMachine,
    DeleteStateMachine,
    Instance,
    InstanceStatus,
    LaunchContext,
    Listing,
    Resources,
)
from nodepool.drivers.static.standing import occupied_slot, outdated, place
from nodepool.errors import LaunchFailure
from nodepool.model import Node

# Connection types that have ssh host keys; Nodepool gathers keys only for these.
KEYED_CONNECTIONS = frozenset({"ssh", "network_cli"})

COMPLETE = "complete"


def slot_id(host: StaticNode, slot: int) -> str:
    """The id of one slot: `[<user>@]<name>[:<port>]-<slot>`, the user only when it is not
    `zuul` and the port only when it is not the connection type's default.

    Nodepool tells hosts apart by (name, username, port). Ids of hosts with the
    default user are those written before the user was part of the key, so an
    upgrade keeps them; a host with another user gets a new id (its old ready
    nodes are unregistered and the slot registered again; see standing.py).
    """
    default = DEFAULT_PORTS.get(host.connection_type, 22)
    where = host.name if host.connection_port == default else f"{host.name}:{host.connection_port}"
    if host.username != "zuul":
        where = f"{host.username}@{where}"
    return f"{where}-{slot}"


def host_keys(host: StaticNode) -> list[str] | None:
    """The keys to hand out: the configured `host-key`s; None when the core should keyscan.

    Hosts without ssh (winrm...) have none to check; with host-key-checking
    off, the configured keys (maybe none) are used as they are, as Nodepool does.
    """
    if host.connection_type not in KEYED_CONNECTIONS:
        return []
    if host.host_keys or not host.host_key_checking:
        return list(host.host_keys)
    return None


def _addresses(name: str) -> dict[str, str]:
    """public_ipv4/public_ipv6 when the host is named by an address literal (no DNS lookup)."""
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return {}
    return {"public_ipv4" if address.version == 4 else "public_ipv6": str(address)}


def standing_instance(provider: StaticProvider, pool: StaticPool, host: StaticNode,
                      slot: int) -> Instance:
    return Instance(
        external_id=slot_id(host, slot),
        status=InstanceStatus.READY,
        provider=provider.name,
        pool=pool.name,
        interface_ip=host.name,
        hostname=host.name,
        username=host.username,
        connection_port=host.connection_port,
        connection_type=host.connection_type,
        shell_type=host.shell_type,
        python_path=host.python_path,
        host_keys=host_keys(host),
        slot=slot,
        # What the core needs besides the Instance fields: the node's labels,
        # and whether/how long to check that the host answers.
        metadata={"labels": list(host.labels), "host_key_checking": host.host_key_checking,
                  "timeout": host.timeout},
        **_addresses(host.name),
    )


class StaticAdapter(Adapter):
    """The static driver: nothing is launched; each host slot is a standing ready node."""

    launches = False

    def __init__(self, provider: StaticProvider):
        super().__init__(provider)
        self._standing: dict[str, Instance] = {}
        for pool in provider.pools.values():
            if not isinstance(pool, StaticPool):
                continue
            for host in pool.nodes:
                for slot in range(host.max_parallel_jobs):
                    instance = standing_instance(provider, pool, host, slot)
                    self._standing[instance.external_id] = instance
        self._by_place = {place(i): key for key, i in self._standing.items()}

    def standing_instances(self) -> list[Instance]:
        return [_copy(i) for i in self._standing.values()]

    def standing_slot(self, node: Node) -> str | None:
        return occupied_slot(node, self._standing, self._by_place)

    def standing_outdated(self, node: Node) -> str | None:
        return outdated(node, self._standing)

    def list_instances(self) -> list[Instance]:
        return self.standing_instances()

    def create(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None
               ) -> CreateStateMachine:
        return StaticCreate(self, ctx, driver_data)

    def delete(self, node: Node) -> DeleteStateMachine:
        return StaticDelete(node)

    def quota_limits(self) -> Resources | None:
        return None  # the hosts and their slots are the limit

    def label_cost(self, pool: Any, label: Any) -> Resources:
        return Resources(instances=1)

    def find_slot(self, node: Node, external_id: str | None) -> Instance | None:
        """The standing instance a node stands for: by our external_id, else by
        (host name, username, port, slot) as Nodepool recorded static nodes
        (external_id = host name)."""
        if external_id in self._standing:
            return _copy(self._standing[external_id])
        name = node.hostname or external_id
        for instance in self._standing.values():
            if ((instance.hostname, instance.username, instance.connection_port, instance.slot)
                    == (name, node.username, node.connection_port, node.slot)):
                return _copy(instance)
        return None


def _copy(instance: Instance) -> Instance:
    """A copy callers may change without changing the config's standing instances."""
    return copy.deepcopy(instance)


class StaticCreate(CreateStateMachine):
    """start -> complete in one advance: the host is there already; no call is made."""

    def __init__(self, adapter: StaticAdapter, ctx: LaunchContext,
                 driver_data: Mapping[str, Any] | None = None):
        super().__init__(ctx, driver_data)
        self.adapter = adapter
        # The launcher core records a registered slot as {"standing": <external_id>}.
        self.external_id = self.external_id or (driver_data or {}).get("standing")

    def advance(self, listing: Listing | None) -> None:
        node = self.ctx.node
        wanted = self.external_id or node.external_id
        instance = self.adapter.find_slot(node, wanted)
        where = f"node {node.id}: provider {self.adapter.provider.name}"
        if instance is None:
            raise LaunchFailure(f"{where}: no configured host slot matches external_id {wanted!r} "
                                f"(hostname {node.hostname!r}, port {node.connection_port}, "
                                f"slot {node.slot}); was the host removed from the config?")
        if self.ctx.label.name not in instance.metadata["labels"]:
            raise LaunchFailure(f"{where}: host slot {instance.external_id} does not offer label "
                                f"{self.ctx.label.name!r} (it offers "
                                f"{', '.join(instance.metadata['labels'])})")
        self.external_id = instance.external_id
        self.instance = dataclasses.replace(instance, node_id=node.id)
        self.state = COMPLETE
        self.complete = True


class StaticDelete(DeleteStateMachine):
    """Completes at once: the host stays; its slot becomes free for a new node."""

    def advance(self, listing: Listing | None) -> None:
        self.state = COMPLETE
        self.complete = True
