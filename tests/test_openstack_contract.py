"""OpenStackAdapter passes the Adapter contract suite on the simulator, with and without FIPs."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from adapter_contract import LaunchingAdapterContract, context_factory
from plugins.ossim import SimFaults

from nodepool.config import OpenStackProvider
from nodepool.drivers.adapter import Adapter

# openstacksdk warns about its own internals (deprecated helpers it still calls).
pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

class TestOpenStackContract(LaunchingAdapterContract):
    """sim-fip attaches a floating IP to every node; sim-fixed boots on the private network only."""

    @pytest.fixture(params=["sim-fip", "sim-fixed"])
    def provider(self, request: pytest.FixtureRequest,
                 providers: dict[str, OpenStackProvider]) -> OpenStackProvider:
        return providers[request.param]

    @pytest.fixture
    def adapter_factory(self, provider: OpenStackProvider,
                        make_adapter: Callable) -> Callable[[], Adapter]:
        return lambda: make_adapter(provider.name)

    @pytest.fixture
    def faults(self, ctl: Any, conn: Any, provider: OpenStackProvider) -> SimFaults:
        return SimFaults(ctl, conn, provider.name, self.HANG_TICKS)

    @pytest.fixture
    def make_context(self, provider: OpenStackProvider) -> Callable:
        return context_factory(provider)
