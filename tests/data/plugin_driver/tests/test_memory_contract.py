"""np_memdriver's own tests: the Adapter contract suite that nodepool installs, run on
the memory driver, from the driver's package (doc/drivers.md shows this file)."""

from __future__ import annotations

from typing import Callable

import pytest
from np_memdriver import PLUGIN
from np_memdriver.adapter import MemoryAdapter

from nodepool.config import parse_config
from nodepool.testing.adapter_contract import LaunchingAdapterContract, context_factory
from nodepool.testing.fake_adapter import FakeClock, FakeCloud, FakeFaults

CONFIG = """
zookeeper-servers:
  - host: localhost
labels:
  - name: small
providers:
  - name: mem1
    driver: memory
    pools:
      - name: main
        labels:
          - name: small
"""

PROVIDER = parse_config(CONFIG).providers["mem1"]


class TestMemoryDriverContract(LaunchingAdapterContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def cloud(self, clock: FakeClock) -> FakeCloud:
        return FakeCloud(boot_delay=2.0, clock=clock)

    @pytest.fixture
    def adapter_factory(self, cloud: FakeCloud) -> Callable[[], MemoryAdapter]:
        return lambda: MemoryAdapter(PROVIDER, cloud)

    @pytest.fixture
    def faults(self, cloud: FakeCloud, clock: FakeClock) -> FakeFaults:
        return FakeFaults(cloud, PROVIDER.name, clock)

    @pytest.fixture
    def make_context(self) -> Callable:
        return context_factory(PROVIDER)


def test_the_installed_driver_is_this_one() -> None:
    from nodepool.drivers.plugins import installed
    assert installed().get("memory") is PLUGIN
