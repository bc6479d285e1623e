"""The Adapter contract: what a driver gives the launcher core, in plain dataclasses.

A driver implements `Adapter` (seven methods) and two small state machines.
The core owns every decision (what to launch, when to retry, quota, locks,
ZooKeeper writes); a driver only talks to its cloud and maps that cloud's
errors onto `nodepool.errors` (QuotaError, CapacityError, TransientError,
LaunchFailure, ConfigurationError) once, in its own `classify()`.

Threading: `advance()`, `list_instances()` and the other calls are made on
the provider's small executor, never on the provider loop's thread, and each
makes at most one blocking cloud call per invocation, so the loop stays
responsive and the provider's `rate` limit applies per call.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, Callable, Mapping

from nodepool.model import Node


@dataclasses.dataclass(frozen=True)
class Resources:
    """Quota-relevant amounts: what a label costs, what a cloud allows or uses."""

    instances: float = 0
    cores: float = 0
    ram: float = 0  # MiB
    volumes: float = 0
    volume_gb: float = 0

    # Plain field arithmetic: dataclasses.astuple deep-copies, and the launcher
    # adds and subtracts these on every node change.
    def __add__(self, other: Resources) -> Resources:
        return Resources(self.instances + other.instances, self.cores + other.cores,
                         self.ram + other.ram, self.volumes + other.volumes,
                         self.volume_gb + other.volume_gb)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.instances - other.instances, self.cores - other.cores,
                         self.ram - other.ram, self.volumes - other.volumes,
                         self.volume_gb - other.volume_gb)

    def scaled(self, n: float) -> Resources:
        return Resources(self.instances * n, self.cores * n, self.ram * n, self.volumes * n,
                         self.volume_gb * n)

    def fits_in(self, limit: Resources) -> bool:
        """True when every amount is within `limit` (limits use math.inf for none)."""
        return (self.instances <= limit.instances and self.cores <= limit.cores
                and self.ram <= limit.ram and self.volumes <= limit.volumes
                and self.volume_gb <= limit.volume_gb)

    def over(self, limit: Resources) -> str:
        """The amounts past `limit`, in words ("12 cores (limit 10)"); empty if none."""
        past = [f"{getattr(self, k):g} {k.replace('_', '-')} (limit {getattr(limit, k):g})"
                for k in ("instances", "cores", "ram", "volumes", "volume_gb")
                if getattr(self, k) > getattr(limit, k)]
        return ", ".join(past)

    def to_dict(self) -> dict[str, float]:
        """The node's `resources` JSON with Nodepool's keys (`cores`, `ram`, `instances`,
        `volumes`, `volume-gb`; zero amounts left out)."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items() if v}


class InstanceStatus(str, enum.Enum):
    """A server's status as the launcher needs it, whatever the cloud calls it."""

    BUILDING = "building"
    READY = "ready"      # booted (ACTIVE): the core keyscans it next
    ERROR = "error"      # the cloud gave up on it (launch failure)
    DELETING = "deleting"


@dataclasses.dataclass
class Instance:
    """One server from the batched listing, with the tags we put on it."""

    external_id: str
    status: InstanceStatus
    # Tags every server of ours carries (ARCHITECTURE.md section 6).
    provider: str | None = None
    pool: str | None = None
    node_id: str | None = None
    interface_ip: str | None = None
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    public_ipv6: str | None = None
    private_ipv6: str | None = None
    az: str | None = None
    region: str | None = None
    host_id: str | None = None
    hostname: str | None = None
    fault: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Connection facts a driver may know better than the label (static hosts).
    username: str | None = None
    connection_port: int | None = None
    connection_type: str | None = None
    shell_type: str | None = None
    python_path: str | None = None
    host_keys: list[str] | None = None
    slot: int | None = None


@dataclasses.dataclass
class Listing:
    """The latest batched listing of a provider's servers, shared by all state machines."""

    instances: dict[str, Instance]  # by external_id
    taken_at: float                 # monotonic time of the call

    def by_node_id(self, node_id: str) -> Instance | None:
        for instance in self.instances.values():
            if instance.node_id == node_id:
                return instance
        return None


@dataclasses.dataclass
class LaunchContext:
    """What a create state machine needs: the node being built and its configuration."""

    node: Node
    provider: Any       # the provider's frozen config value
    pool: Any           # the pool's frozen config value
    label: Any          # the pool label's frozen config value
    image: Any = None   # a resolved image (driver-specific: e.g. an upload's external id)
    az: str | None = None  # an availability zone the request is constrained to
    request: Any = None    # the NodeRequest the node is launched for, if any (as cached)


class CreateStateMachine(abc.ABC):
    """Creates one server in small, resumable steps.

    `state` is saved in the node's `driver_data` (with `external_id`) when
    the machine stops to wait, not after every `advance()`; a step that makes
    an irreversible cloud call must first move to a state naming it, so a
    launcher that takes over from that saved state knows the call may have
    happened and looks the server up by its node-id tag instead of creating a
    second one.
    """

    START = "start"

    def __init__(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None):
        self.ctx = ctx
        data = dict(driver_data or {})
        self.state: str = data.get("state", self.START)
        self.external_id: str | None = data.get("external_id")
        self.instance: Instance | None = None
        self.complete = False

    def driver_data(self) -> dict[str, Any]:
        return {"state": self.state, "external_id": self.external_id}

    # monotonic time of this machine's last cloud call (set by the driver)
    called_at: float = 0.0

    def observe(self, listing: Listing | None, fetch) -> tuple[bool, Instance | None]:
        """(seen, instance): our server as the shared listing shows it, or as
        `fetch()` returns it when there is no listing. `seen` is False while the
        listing is older than our last call: absence from it proves nothing yet."""
        if listing is None:
            return True, fetch()
        instance = listing.instances.get(self.external_id or "")
        if instance is None and listing.taken_at < self.called_at:
            return False, None
        return True, instance

    @abc.abstractmethod
    def advance(self, listing: Listing | None) -> None:
        """Take the next step; set `complete` and `instance` once the server is READY.

        Raises a `nodepool.errors.DriverError` subclass on failure.
        """


class DeleteStateMachine(abc.ABC):
    """Deletes one server (and what hangs off it); a server already gone is success."""

    START = "start"

    def __init__(self, node: Node):
        self.node = node
        self.state: str = self.START
        self.complete = False

    @abc.abstractmethod
    def advance(self, listing: Listing | None) -> None:
        """Take the next step; set `complete` when nothing of the server is left."""


@dataclasses.dataclass(frozen=True)
class CloudResource:
    """A non-server object that leak cleanup may delete (floating IP, port, volume)."""

    kind: str
    id: str
    provider: str | None = None
    node_id: str | None = None
    created_at: float | None = None
    detail: str = ""


# Where a standing instance may carry its slot's key, when slots share an external_id
# (a static host's slots all show the host name); the core records the key in the
# node's driver_data under the same name.
STANDING = "standing"
# metadata of a standing instance to register again: the host keys its slot's last
# node was registered with (scanned); the core then only checks the host still has them.
KNOWN_KEYS = "known_host_keys"


def standing_key(instance: Instance) -> str:
    """A standing instance's slot key, unique in its provider: `metadata["standing"]`,
    else its external_id."""
    return (instance.metadata or {}).get(STANDING) or instance.external_id


class Adapter(abc.ABC):
    """One provider's connection to its cloud. Built from the provider's frozen config."""

    def __init__(self, provider: Any):
        self.provider = provider
        # Called by the driver right before each cloud call (after its rate limiter):
        # raises errors.TransientError (the launcher's LeaseUnsure) when the provider's
        # lease may be lost. The launcher sets it; it does nothing elsewhere.
        self.fence: Callable[[], None] = lambda: None
        # Called by the driver after each cloud call with (call, seconds, error class or
        # None): a bounded call name ("list servers"), and quota, capacity, transient or
        # failure as its classify() said. The launcher sets it (metrics).
        self.observe_call: Callable[[str, float, str | None], None] = lambda *_: None
        # For an SDK that reports its own calls to statsd (openstacksdk): host, port,
        # prefix; None when statsd is off. The launcher sets it before the first call.
        self.statsd: dict | None = None

    # Drivers whose nodes are not launched (static hosts) say so: the core
    # then registers `standing_instances()` as ready nodes instead of launching.
    launches: bool = True

    @abc.abstractmethod
    def create(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None
               ) -> CreateStateMachine:
        """A state machine for a new node, or resuming one from its saved driver_data."""

    @abc.abstractmethod
    def delete(self, node: Node) -> DeleteStateMachine:
        """A state machine that deletes the node's server (by external_id or node-id tag)."""

    @abc.abstractmethod
    def list_instances(self) -> list[Instance]:
        """Every server of this provider, in one batched call."""

    def list_resources(self) -> list[CloudResource]:
        """Non-server objects tagged with or attributable to this provider.

        One with a `node_id` is leaked when ZooKeeper has no such node; one
        without is leaked by the driver's own judgement (list only those).
        Either is deleted after being seen on two scans in a row.
        """
        return []

    def delete_resource(self, resource: CloudResource) -> None:
        """Delete a leaked object; deleting what is gone is success."""

    @abc.abstractmethod
    def quota_limits(self) -> Resources | None:
        """The provider's own limits minus what others use there; None = unlimited."""

    @abc.abstractmethod
    def label_cost(self, pool: Any, label: Any) -> Resources:
        """What one node of `label` in `pool` costs against quota.

        Called on the provider loop: it must not call the cloud. When the answer
        needs something not read yet (OpenStack's flavors, read with the limits),
        raise `errors.CostUnknown`; the launcher then waits for `quota_limits`.
        """

    def standing_instances(self) -> list[Instance]:
        """For drivers that do not launch: the slots that should exist as ready nodes."""
        return []

    def standing_slot(self, node: Node) -> str | None:
        """For drivers that do not launch: the `standing_key()` of the standing instance
        whose slot `node` occupies, or None (the core may then register that slot again).
        The core records the slot a node was registered for as driver_data
        {"standing": <slot key>}; by default that slot, while it is configured.
        Called on the provider loop for every node of a pass: it must not call the
        cloud (drivers with many slots override it with an index)."""
        slot = (node.driver_data or {}).get("standing")
        return slot if slot in self._standing_ids() else None

    def standing_outdated(self, node: Node) -> str | None:
        """For drivers that do not launch: why a node registered for a slot no longer
        matches it (removed or changed in the config), or None while it does or the node
        is not a registered one. The core hands none of those out and unregisters the
        idle ones (the slot is registered again if still configured). By default: its
        slot is gone; a driver that can tell a changed slot says so. Called on the
        provider loop, like `standing_slot`: no cloud call."""
        slot = (node.driver_data or {}).get("standing")
        if slot is None or slot in self._standing_ids():
            return None
        return f"slot {slot} is no longer configured"

    def _standing_ids(self) -> set[str]:
        return {standing_key(i) for i in self.standing_instances()}

    def stop(self) -> None:
        """Release connections when the provider stops."""
