"""Frozen configuration values shared by every driver."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

# math.inf stands for "no limit" so that callers can compare counts against a
# limit without special-casing None (Nodepool does the same).
UNLIMITED = math.inf

# Nodepool picks the port from the connection type when none is given.
DEFAULT_PORTS = {"ssh": 22, "winrm": 5986}

T = TypeVar("T")


def empty_map() -> Mapping[str, Any]:
    """A fresh read-only empty mapping (dataclass default factory)."""
    return MappingProxyType({})


def freeze(value: Any) -> Any:
    """Deep-convert YAML data into read-only values: dict -> MappingProxyType, list -> tuple."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def by_name(items: Iterable[T]) -> Mapping[str, T]:
    """Key values by their ``name`` attribute, keeping file order."""
    return MappingProxyType({item.name: item for item in items})  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class ZooKeeperServer:
    """One ``zookeeper-servers`` entry."""

    host: str
    # Nodepool's loader defaults to 2281 (its TLS port), not ZooKeeper's 2181.
    port: int = 2281
    chroot: str | None = None

    def address(self) -> str:
        """host:port, with IPv6 literals bracketed as kazoo expects."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class ZooKeeperTLS:
    """``zookeeper-tls``: client certificate, its key and the CA bundle (paths)."""

    cert: str
    key: str
    ca: str
    # The file these paths were written in (nodepool.yaml or the secure file), for messages.
    source: str = field(default="", compare=False)


@dataclass(frozen=True, kw_only=True)
class Label:
    """A top-level ``labels`` entry: a node type that requests can ask for."""

    name: str
    min_ready: int = 0
    # Seconds a ready node may stay unused before it is replaced; 0 = forever.
    max_ready_age: int = 0


@dataclass(frozen=True, kw_only=True)
class WebApp:
    """``webapp``: where the status endpoint listens."""

    port: int = 8005
    listen_address: str = "0.0.0.0"


@dataclass(frozen=True, kw_only=True)
class TenantLimits:
    """A ``tenant-resource-limits`` entry; unset limits are UNLIMITED."""

    tenant_name: str
    max_servers: int | float = UNLIMITED
    max_cores: int | float = UNLIMITED
    max_ram: int | float = UNLIMITED
    # Any other resource key (e.g. a custom quota name) with its integer limit.
    extra: Mapping[str, int] = field(default_factory=empty_map)


@dataclass(frozen=True, kw_only=True)
class DiskImage:
    """A top-level ``diskimages`` entry with its ``parent`` chain already applied.

    ``elements`` are the parent's followed by this image's own, ``env_vars``
    are the parent's updated with this image's; every other unset key takes
    the parent's value, then the Nodepool default.
    """

    name: str
    abstract: bool = False
    parent: str | None = None
    elements: tuple[str, ...] = ()
    env_vars: Mapping[str, str] = field(default_factory=empty_map)
    release: str | None = None
    rebuild_age: int = 86400
    formats: tuple[str, ...] = ()
    pause: bool = False
    python_path: str = "auto"
    shell_type: str | None = None
    username: str = "zuul"
    build_timeout: int = 8 * 3600
    dib_cmd: str = "disk-image-create"
    delete_after_upload: bool = False
    keep_formats: tuple[str, ...] = ()
    # Free-form block-device description, kept as given (frozen).
    block_device: Any = None
    # Default metadata of this image's uploads (builder); the image's own, as in
    # Nodepool (a child does not take its parent's).
    metadata: Mapping[str, Any] = field(default_factory=empty_map)


@dataclass(frozen=True, kw_only=True)
class PoolLabel:
    """A label offered by a pool; drivers subclass it with their own keys."""

    name: str
    # The provider diskimage (builder upload) a label boots, for drivers that boot
    # built images; None for every other label, so the launcher reads it from any.
    diskimage: str | None = None
    # Scan the node's ssh host keys once it is up (drivers may default it to the pool's).
    host_key_checking: bool = True


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A pool of a provider; drivers subclass it with their own keys."""

    name: str
    max_servers: int | float = UNLIMITED
    # Resource limits: set by drivers whose pools take them (openstack's max-cores,
    # max-ram, max-volumes, max-volume-gb); UNLIMITED for every other pool, so the
    # quota code reads them from any pool.
    max_cores: int | float = UNLIMITED
    max_ram: int | float = UNLIMITED
    max_volumes: int | float = UNLIMITED
    max_volume_gb: int | float = UNLIMITED
    # Launch past the cloud's own quota (only the pool's limits apply).
    ignore_provider_quota: bool = False
    # Its labels' default for scanning host keys.
    host_key_checking: bool = True
    # Inherited from the provider when the pool does not set it.
    priority: int = 100
    node_attributes: Mapping[str, Any] = field(default_factory=empty_map)
    labels: Mapping[str, PoolLabel] = field(default_factory=empty_map)


@dataclass(frozen=True, kw_only=True)
class Provider:
    """Keys every provider has; drivers subclass it with their own keys.

    Two loads of an unchanged provider compare equal, so the launcher can
    restart only the providers whose value changed.
    """

    name: str
    driver: str
    # As Nodepool: most requests handled at once; negative: no limit; 0: handles none.
    max_concurrency: int = -1
    priority: int = 100
    # Seconds between cloud API calls.
    rate: float = 1.0
    boot_timeout: int = 60
    launch_timeout: int = 3600
    launch_retries: int = 3
    pools: Mapping[str, Pool] = field(default_factory=empty_map)


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole, validated nodepool.yaml."""

    zookeeper_servers: tuple[ZooKeeperServer, ...]
    zookeeper_tls: ZooKeeperTLS | None = None
    zookeeper_timeout: float = 10.0
    labels: Mapping[str, Label] = field(default_factory=empty_map)
    providers: Mapping[str, Provider] = field(default_factory=empty_map)
    diskimages: Mapping[str, DiskImage] = field(default_factory=empty_map)
    webapp: WebApp = field(default_factory=WebApp)
    # Seconds a held node is kept; UNLIMITED when unset or <= 0 (as Nodepool).
    max_hold_age: int | float = UNLIMITED
    tenant_resource_limits: Mapping[str, TenantLimits] = field(default_factory=empty_map)
    elements_dir: str | None = None
    images_dir: str | None = None
    # MiB that must stay free in images_dir before a build starts.
    images_dir_required_free: int = 1024
    build_log_dir: str = "/var/log/nodepool/builds"
    build_log_retention: int = 7
    # The file this was loaded from; excluded from equality so that the same
    # content at another path compares equal.
    source_path: str = field(default="", compare=False)
    # The secure file merged in, if any (nodepool/config/secure.py).
    secure_path: str = field(default="", compare=False)

    def zookeeper_hosts(self) -> str:
        """The servers as a kazoo hosts string: "host:port,host:port"."""
        return ",".join(s.address() for s in self.zookeeper_servers)

    def zookeeper_chroot(self) -> str | None:
        """The ensemble's one chroot: written on any of the servers (the checks
        refuse two different ones), as ZooKeeper's "h1,h2,h3/chroot" has one."""
        return next((s.chroot for s in self.zookeeper_servers if s.chroot), None)
