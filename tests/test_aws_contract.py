"""AwsAdapter passes the Adapter contract suite against moto's server over HTTP (through
the fault proxy of tests/plugins/motoaws.py)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from adapter_contract import LaunchingAdapterContract, context_factory
from plugins.motoaws import AwsFaults, FaultProxy, provider_config

from nodepool.config import parse_config
from nodepool.drivers import adapter_for
from nodepool.drivers.adapter import Adapter


class TestAwsContract(LaunchingAdapterContract):

    @pytest.fixture
    def provider(self, aws_provider: Any) -> Any:
        return aws_provider

    @pytest.fixture
    def adapter_factory(self, provider: Any) -> Callable[[], Adapter]:
        return lambda: adapter_for(provider)

    @pytest.fixture
    def faults(self, aws_proxy: FaultProxy, ec2: Any, provider: Any,
               aws_network: dict[str, Any]) -> AwsFaults:
        return AwsFaults(aws_proxy, ec2, provider.name, aws_network)

    @pytest.fixture
    def make_context(self, provider: Any) -> Callable:
        return context_factory(provider)


def dedicated_host_config(network: dict[str, Any]) -> str:
    """The contract provider with its first label on dedicated hosts (in subnet 0's zone)."""
    return provider_config(network, extra_pool="        availability-zone: us-east-1a\n").replace(
        "            instance-type: t3.medium\n",
        "            instance-type: t3.medium\n            dedicated-host: true\n", 1)


class TestAwsDedicatedHostContract(TestAwsContract):
    """The same suite with each node on a dedicated host of its own: resumed at every step
    (host allocation included) it makes one host and one instance, and deleting the node
    releases its host (assert_gone: no resource of the node is left)."""

    @pytest.fixture
    def provider(self, aws_network: dict[str, Any]) -> Any:
        value = parse_config(dedicated_host_config(aws_network)).providers["ec2-test"]
        assert value.pools["main"].labels["small"].dedicated_host
        return value


FLEET = ("            fleet:\n              instance-types: [t3.small, t3.xlarge]\n"
         "              allocation-strategy: prioritized\n")


def fleet_config(network: dict[str, Any]) -> str:
    """The contract provider with its first label launched by CreateFleet."""
    return provider_config(network).replace("            instance-type: t3.medium\n", FLEET, 1)


class TestAwsFleetContract(TestAwsContract):
    """The whole suite with CreateFleet launches (faults injected on CreateFleet)."""

    @pytest.fixture
    def provider(self, aws_network: dict[str, Any]) -> Any:
        return parse_config(fleet_config(aws_network)).providers["ec2-test"]

    @pytest.fixture
    def faults(self, aws_proxy: FaultProxy, ec2: Any, provider: Any,
               aws_network: dict[str, Any]) -> AwsFaults:
        return AwsFaults(aws_proxy, ec2, provider.name, aws_network, "CreateFleet")
