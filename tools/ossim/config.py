"""The simulator's settings: identity, flavors, images, quotas, delays and address ranges."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PORT = 8775  # the fixed port etc/clouds.yaml points at; tests use an ephemeral one


@dataclass(frozen=True)
class FlavorSpec:
    id: str
    name: str
    ram: int  # MiB
    vcpus: int
    disk: int  # GiB


DEFAULT_FLAVORS = (
    FlavorSpec("1", "m1.tiny", 512, 1, 1),
    FlavorSpec("2", "m1.small", 2048, 1, 20),
    FlavorSpec("3", "m1.medium", 4096, 2, 40),
    FlavorSpec("4", "m1.large", 8192, 4, 80),
)


@dataclass
class Quotas:
    """Project limits; -1 means unlimited, as in Nova, Neutron and Cinder."""

    instances: int = 10  # Nova's defaults
    cores: int = 20
    ram: int = 51200
    floating_ips: int = 50  # Neutron's default
    ports: int = 500
    volumes: int = 10  # Cinder's defaults (maxTotalVolumes, maxTotalVolumeGigabytes)
    gigabytes: int = 1000

    def update(self, values: dict[str, int]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown quota {key!r}; known: instances, cores, ram, floating_ips, "
                                 "ports, volumes, gigabytes")
            setattr(self, key, int(value))


@dataclass
class Timings:
    """Delays the fake cloud takes; changeable at run time through the control API."""

    boot_delay: float = 0.1  # seconds from create to ACTIVE (or ERROR)
    delete_delay: float = 0.1  # seconds a deleted server stays visible with task_state deleting
    deleted_window: float = 0.0  # then seconds it shows status DELETED before it 404s
    image_delay: float = 0.0  # seconds an uploaded image stays 'saving' before 'active'

    def update(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown timing {key!r}; known: boot_delay, delete_delay, "
                                 "deleted_window, image_delay")
            if float(value) < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
            setattr(self, key, float(value))


@dataclass
class SimConfig:
    """Everything a Simulator is built from; the CLI and tests fill it."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = ephemeral
    region: str = "RegionOne"
    username: str = "demo"
    password: str = "secret"
    # More user names Keystone accepts (same password and project): one per client
    # tells calls apart in the request log's `user` (a launcher each, in a test).
    extra_users: tuple[str, ...] = ()
    project_name: str = "demo"
    domain_name: str = "Default"
    max_microversion: str = "2.96"
    flavors: tuple[FlavorSpec, ...] = DEFAULT_FLAVORS
    images: tuple[str, ...] = ("cirros-0.6.2", "debian-12")
    availability_zones: tuple[str, ...] = ("nova",)
    quotas: Quotas = field(default_factory=Quotas)
    timings: Timings = field(default_factory=Timings)
    # Fake-mode addresses come from 198.18.0.0/15, reserved for benchmarking (RFC 2544) and never routed
    # on the internet: nothing answers on them and the simulator never contacts them. A /16 each leaves
    # room for benchmarks with thousands of servers (a TEST-NET /24 runs out at 253).
    fixed_cidr: str = "198.18.0.0/16"
    floating_cidr: str = "198.19.0.0/16"
    # A block-storage (Cinder v3) service in the catalog; off: a cloud without one.
    block_storage: bool = True
    real_nodes: bool = False
    # A private /16 that exists only on this machine; None picks a free 10.x.0.0/16.
    real_cidr: str | None = None
    authorized_keys: tuple[str, ...] = ()
