"""StaticAdapter: one standing Instance per max-parallel-jobs slot of each configured host."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from typing import Any, Mapping

from nodepool.config.static import DEFAULT_PORT, StaticNode, StaticPool, StaticProvider
from nodepool.drivers.adapter import (
    STANDING,
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

def slot_key(host: StaticNode, slot: int) -> str:
    """The unique key of one slot: `[<user>@]<name>[:<port>]-<slot>`, the user only when
    it is not `zuul` and the port only when it is not 22.

    Nodepool tells hosts apart by (name, username, port). Keys of hosts with the
    default user are those written before the user was part of the key, so an
    upgrade keeps them; a host with another user gets a new key (its old ready
    nodes are unregistered and the slot registered again; see standing.py).
    The node's `external_id` is the host name, as Nodepool writes it; the key
    lives in its `driver_data`.
    """
    port = host.connection_port
    where = host.name if port == DEFAULT_PORT else f"{host.name}:{port}"
    if host.username != "zuul":
        where = f"{host.username}@{where}"
    return f"{where}-{slot}"


def host_keys(host: StaticNode) -> list[str] | None:
    """The keys to hand out: the configured `host-key`s; None when the core should keyscan.

    Hosts without ssh (winrm...) have none to check (their port is checked, see
    `metadata["check_port"]`); with host-key-checking off, the configured keys
    (maybe none) are used as they are, as Nodepool does.
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
        external_id=host.name,
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
        # What the core needs besides the Instance fields: the slot's key, the node's
        # labels, and whether/how long to check that the host answers. A host without
        # ssh keys has its port checked before it is registered, whatever
        # host-key-checking says, as Nodepool's checkHost does.
        metadata={STANDING: slot_key(host, slot), "labels": list(host.labels),
                  "host_key_checking": host.host_key_checking, "timeout": host.timeout,
                  "check_port": host.connection_type not in KEYED_CONNECTIONS},
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
                    self._standing[instance.metadata[STANDING]] = instance
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

    def find_slot(self, node: Node, key: str | None) -> Instance | None:
        """The standing instance a node stands for: by its slot key (also the
        external_id of nodes written before external_id was the host name), else by
        (host name, username, port, slot) as Nodepool records static nodes."""
        for wanted in (key, node.external_id):
            if wanted in self._standing:
                return _copy(self._standing[wanted])
        name = node.hostname or node.external_id
        for instance in self._standing.values():
            if ((instance.hostname, instance.username, instance.connection_port, instance.slot)
                    == (name, node.username, node.connection_port, node.slot)):
                return _copy(instance)
        return None


def _copy(instance: Instance) -> Instance:
    """A copy callers may change without changing the config's standing instances."""
    return copy.deepcopy(instance)


class StaticCreate(CreateStateMachine):
    """start -> complete in one advance: the host is there already; no call is made.

    Its saved driver_data keeps the slot key under "standing", as the core
    records a registered slot, so a resumed record still names its slot.
    """

    def __init__(self, adapter: StaticAdapter, ctx: LaunchContext,
                 driver_data: Mapping[str, Any] | None = None):
        super().__init__(ctx, driver_data)
        self.adapter = adapter
        self.key: str | None = (driver_data or {}).get(STANDING)

    def driver_data(self) -> dict[str, Any]:
        data = super().driver_data()
        if self.key is not None:
            data[STANDING] = self.key
        return data

    def advance(self, listing: Listing | None) -> None:
        node = self.ctx.node
        instance = self.adapter.find_slot(node, self.key)
        where = f"node {node.id}: provider {self.adapter.provider.name}"
        if instance is None:
            wanted = self.key or node.external_id
            raise LaunchFailure(f"{where}: no configured host slot matches {wanted!r} "
                                f"(hostname {node.hostname!r}, port {node.connection_port}, "
                                f"slot {node.slot}); was the host removed from the config?")
        key = instance.metadata[STANDING]
        if self.ctx.label.name not in instance.metadata["labels"]:
            raise LaunchFailure(f"{where}: host slot {key} does not offer label "
                                f"{self.ctx.label.name!r} (it offers "
                                f"{', '.join(instance.metadata['labels'])})")
        self.key = key
        self.external_id = instance.external_id
        self.instance = dataclasses.replace(instance, node_id=node.id)
        self.state = COMPLETE
        self.complete = True


class StaticDelete(DeleteStateMachine):
    """Completes at once: the host stays; its slot becomes free for a new node."""

    def advance(self, listing: Listing | None) -> None:
        self.state = COMPLETE
        self.complete = True
