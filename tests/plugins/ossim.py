"""The OpenStack driver's test rig, a pytest plugin (tests/conftest.py names it in pytest_plugins).

Fixtures: `sim` (an in-process simulator per module; OS_CLIENT_CONFIG_FILE names it), `conn`
(the test's own SDK connection), `ctl` (its control API, reset before and after each test),
`images`, `providers` (from CONFIG) and `make_adapter`. A module that needs a simulator of its
own (other timings) defines its own `sim`; `conn` and `ctl` then use that one.

Helpers to import: CONFIG, LAUNCHER_CONFIG, PUBLIC_KEY, SimFaults, upload, with_image.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from ossim import (  # tools/ossim: tests/conftest.py puts tools/ on sys.path
    ControlClient,
    Simulator,
    Timings,
)
from ossim.testing import connect
from zkhelpers import ZK_HEADER

from nodepool.config import OpenStackProvider, parse_config
from nodepool.drivers import adapter_for
from nodepool.drivers.adapter import LaunchContext
from nodepool.drivers.openstack import OpenStackAdapter
from nodepool.drivers.openstack.resources import fip_description
from nodepool.drivers.openstack.servers import TAG_NODE, TAG_PROVIDER

CLOUD = "simcloud"
BOOT_DELAY = 0.02
DELETE_DELAY = 0.02
HANG_TICKS = 10  # LaunchingAdapterContract.HANG_TICKS

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq8lqkmsHnsAzAyE0jAs5nZQd/4qh2SAbxsC7Ib+pUt"

CONFIG = """
zookeeper-servers:
  - host: zk.example.org
labels:
  - name: small
  - name: roomy
  - name: by-id
  - name: debian
  - name: volume
  - name: built
  - name: console
  - name: dressed
diskimages:
  - name: debian-built
    username: debian
providers:
  - name: sim-fip
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    clean-floating-ips: true
    port-cleanup-interval: 60
    cloud-images:
      - name: cirros
        image-name: cirros-0.6.2
        username: cirros
      - name: cirros-by-id
        image-id: "{cirros_id}"
      - name: debian-12
        python-path: /usr/bin/python3
    diskimages:
      - name: debian-built
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
          - name: roomy
            cloud-image: cirros
            min-ram: 1000
          - name: by-id
            cloud-image: cirros-by-id
            flavor-name: m1.tiny
          - name: debian
            cloud-image: debian-12
            flavor-name: m1.tiny
          - name: volume
            cloud-image: cirros
            flavor-name: m1.small
            boot-from-volume: true
            volume-size: 30
          - name: built
            diskimage: debian-built
            flavor-name: m1.tiny
          - name: console
            cloud-image: cirros
            flavor-name: m1.tiny
            console-log: true
      - name: dressed
        networks: [private]
        security-groups: [default, ssh-only]
        availability-zones: [az2]
        labels:
          - name: dressed
            cloud-image: cirros
            flavor-name: m1.tiny
            key-name: nodepool
            userdata: "#cloud-config\\nruncmd: [true]"
            instance-properties:
              team: infra
              cost-center: 42
            dynamic-instance-properties:
              tenant: "{{request.tenant_name}}"
              who: "{{request.requestor}}"
              broken: "{{request.nope}}"
  - name: sim-fixed
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    hostname-format: "np-{{node.id}}"
    cloud-images:
      - name: cirros
        image-name: cirros-0.6.2
    pools:
      - name: fixed
        auto-floating-ip: false
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
"""


# A launcher's nodepool.yaml (less its zookeeper section) for one pool on the simulator.
LAUNCHER_CONFIG = ZK_HEADER + """
labels:
  - name: small
providers:
  - name: sim-cloud
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: cirros
        image-name: cirros-0.6.2
        username: cirros
    pools:
      - name: main
        max-servers: 4
        host-key-checking: false
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
"""


def load_providers(cirros_id: str) -> dict[str, OpenStackProvider]:
    config = parse_config(CONFIG.format(cirros_id=cirros_id), "openstack-test.yaml")
    return dict(config.providers)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One simulator per module on an ephemeral loopback port; OS_CLIENT_CONFIG_FILE names it."""
    timings = Timings(boot_delay=BOOT_DELAY, delete_delay=DELETE_DELAY)
    with Simulator(timings=timings, availability_zones=("nova", "az2")) as simulator:
        path = simulator.write_clouds_yaml(str(tmp_path_factory.mktemp("clouds") / "clouds.yaml"),
                                           CLOUD)
        old = os.environ.get("OS_CLIENT_CONFIG_FILE")
        os.environ["OS_CLIENT_CONFIG_FILE"] = path
        try:
            yield simulator
        finally:
            if old is None:
                os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
            else:
                os.environ["OS_CLIENT_CONFIG_FILE"] = old


@pytest.fixture(scope="module")
def conn(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The test's own SDK connection: it plays the cloud's other users."""
    return connect(sim, str(tmp_path_factory.mktemp("own")), CLOUD)


@pytest.fixture(scope="module")
def images(conn: Any) -> dict[str, str]:
    return {i.name: i.id for i in conn.image.images()}


@pytest.fixture(scope="module")
def providers(images: dict[str, str]) -> dict[str, OpenStackProvider]:
    return load_providers(images["cirros-0.6.2"])


@pytest.fixture
def ctl(sim: Simulator) -> Iterator[ControlClient]:
    client = sim.client()
    client.reset()
    yield client
    client.reset()


@pytest.fixture
def make_adapter(ctl: ControlClient, providers: dict[str, OpenStackProvider]
                 ) -> Iterator[Callable[..., OpenStackAdapter]]:
    """make_adapter(name='sim-fip', **provider_overrides): built through the driver table."""
    made: list[OpenStackAdapter] = []

    def make(name: str = "sim-fip", **overrides: Any) -> OpenStackAdapter:
        provider = providers[name]
        if overrides:
            provider = dataclasses.replace(provider, **overrides)
        adapter = adapter_for(provider)
        assert isinstance(adapter, OpenStackAdapter)
        made.append(adapter)
        return adapter
    yield make
    for adapter in made:
        adapter.stop()


def upload(external_id: str, **fields: Any) -> Any:
    """What the core passes as LaunchContext.image for a diskimage label: a ready upload."""
    values = {"username": None, "python_path": None, "shell_type": None, "path": None, **fields}
    return types.SimpleNamespace(external_id=external_id, **values)


def with_image(ctx: LaunchContext, image: Any) -> LaunchContext:
    ctx.image = image
    return ctx


class SimFaults:
    """The contract suite's `Faults` over the simulator's control API and an SDK connection."""

    def __init__(self, ctl: ControlClient, conn: Any, provider_name: str,
                 hang_ticks: int = HANG_TICKS):
        self.ctl = ctl
        self.conn = conn
        self.provider_name = provider_name
        self.hang_ticks = hang_ticks
        self._hung_ticks: int | None = None

    def fail_next_create(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        if kind == "quota":
            self.ctl.inject("create_quota", count=count)
        elif kind == "capacity":  # Nova accepts, the scheduler finds no host: ERROR + fault
            self.ctl.inject("create_error", count=count)
        elif kind == "transient":
            self.ctl.inject("http_error", status=503, count=count, method="POST",
                            path=r"/compute/v2\.1/servers$", retry_after=retry_after or 1)
        elif kind == "error":
            self.ctl.inject("create_error", count=count,
                            message="Build of instance aborted: simulated hypervisor failure")
        elif kind == "hang":
            self.ctl.inject("create_timeout", count=count)
        else:
            raise ValueError(f"unknown create fault {kind!r}")

    def fail_next_delete(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        if kind == "transient" and retry_after is None:
            self.ctl.inject("delete_500", count=count)
        elif kind == "transient":
            self.ctl.inject("http_error", status=503, count=count, method="DELETE",
                            path=r"/compute/v2\.1/servers/[^/]+$", retry_after=retry_after)
        elif kind == "hang":
            self.ctl.inject("delete_hang", count=count)
            self._hung_ticks = 0
        else:
            raise ValueError(f"unknown delete fault {kind!r}")

    def hang_next_create(self) -> None:
        self.fail_next_create("hang")

    def hang_next_delete(self) -> None:
        self.fail_next_delete("hang")

    def _server(self, metadata: dict[str, str]) -> str:
        server = self.conn.compute.create_server(
            name=f"outside-{len(metadata)}", flavor_id="1", networks="auto",
            image_id=self.conn.image.find_image("cirros-0.6.2").id, metadata=metadata)
        return server.id

    def create_leaked_server(self, node_id: str) -> str:
        return self._server({TAG_PROVIDER: self.provider_name, TAG_NODE: node_id})

    def create_untagged_server(self) -> str:
        return self._server({})

    def create_leaked_resource(self, node_id: str) -> str | None:
        public = self.conn.network.find_network("public")
        fip = self.conn.network.create_ip(floating_network_id=public.id,
                                          description=fip_description(self.provider_name, node_id))
        return fip.id

    def tick(self) -> None:
        """A hung delete is let go after `hang_ticks` ticks, as an operator resetting it would."""
        if self._hung_ticks is None:
            return
        self._hung_ticks += 1
        if self._hung_ticks > self.hang_ticks:
            for server in self.ctl.servers():
                if server["deleting"]:
                    self.ctl.finish_delete(server["id"])
            self._hung_ticks = None
