"""Plain records for the fake cloud's objects: servers, images, keypairs, networks, ports, FIPs."""

from __future__ import annotations

import datetime
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_id() -> str:
    return str(uuid.uuid4())


def iso(ts: float) -> str:
    """UTC timestamp the way Nova and Neutron print it (second precision, Z suffix)."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_mac() -> str:
    # fa:16:3e is the prefix Neutron's default base_mac gives every port.
    return "fa:16:3e:%02x:%02x:%02x" % (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))


@dataclass
class Image:
    id: str
    name: str
    status: str = "queued"
    disk_format: str | None = None
    container_format: str | None = None
    visibility: str = "shared"
    size: int | None = None
    checksum: str | None = None
    os_hash_value: str | None = None
    min_disk: int = 0
    min_ram: int = 0
    protected: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    active_at: float | None = None  # monotonic time a 'saving' image turns active
    staged: bytes | None = None  # glance-direct data waiting for its import call
    builtin: bool = False  # configured images survive a reset


@dataclass
class Keypair:
    name: str
    public_key: str
    fingerprint: str
    type: str = "ssh"
    created: float = field(default_factory=time.time)
    id: int = 0


@dataclass
class Network:
    id: str
    name: str
    external: bool = False
    subnet_ids: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)


@dataclass
class Subnet:
    id: str
    name: str
    network_id: str
    cidr: str
    gateway_ip: str | None
    created: float = field(default_factory=time.time)


@dataclass
class Port:
    id: str
    network_id: str
    mac: str
    fixed_ips: list[dict[str, str]]
    device_id: str = ""
    device_owner: str = ""
    status: str = "DOWN"
    name: str = ""
    description: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    tags: list[str] = field(default_factory=list)
    revision: int = 1

    @property
    def ip(self) -> str:
        return self.fixed_ips[0]["ip_address"] if self.fixed_ips else ""


@dataclass
class FloatingIP:
    id: str
    address: str
    network_id: str
    port_id: str | None = None
    fixed_ip: str | None = None
    description: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    tags: list[str] = field(default_factory=list)
    revision: int = 1

    @property
    def status(self) -> str:
        return "ACTIVE" if self.port_id else "DOWN"


@dataclass
class Server:
    id: str
    name: str
    flavor_id: str
    image_id: str  # "" when booted from volume, as Nova shows it
    az: str
    pinned_az: str | None = None  # the zone the user asked for; Nova shows it from 2.96
    metadata: dict[str, str] = field(default_factory=dict)
    key_name: str | None = None
    port_ids: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=lambda: ["default"])
    block_devices: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    user_data: str | None = None
    config_drive: bool = False
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    admin_pass: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    launched: float | None = None
    status: str = "BUILD"
    task_state: str | None = "scheduling"
    power_state: int = 0  # NOSTATE; 1 = RUNNING
    fault: dict[str, Any] | None = None
    # What the boot will end in, decided at create time from the fault queue.
    plan: str = "active"  # active | error | stuck
    plan_message: str = ""
    ready_at: float = 0.0  # monotonic time BUILD may end
    deleting_at: float | None = None  # monotonic time DELETE was accepted
    delete_plan: str = "gone"  # gone | hang | error
    delete_delay: float = 0.0
    deleted_window: float = 0.0
    public_keys: list[str] = field(default_factory=list)  # for real nodes
    node: Any = None  # realnodes.Node when running real nodes

    @property
    def vm_state(self) -> str:
        return {"BUILD": "building", "ACTIVE": "active", "ERROR": "error", "DELETED": "deleted",
                "SHUTOFF": "stopped"}.get(self.status, self.status.lower())


@dataclass
class Fault:
    """One injected fault; count None means until cleared."""

    kind: str
    count: int | None = 1
    message: str = ""
    status: int = 500
    method: str | None = None
    path: str | None = None  # regex searched in the request path
    retry_after: float = 1.0
    seconds: float = 0.0  # latency faults
    rate: float = 0.0  # rate_limit by rate: requests per second allowed
    burst: float = 0.0
    id: str = field(default_factory=new_id)
    tokens: float = 0.0
    last_refill: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        keys = ("id", "kind", "count", "message", "status", "method", "path", "retry_after",
                "seconds", "rate", "burst")
        return {k: getattr(self, k) for k in keys}
