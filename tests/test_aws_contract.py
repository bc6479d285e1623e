"""AwsAdapter passes the Adapter contract suite against moto's server over HTTP (through
the fault proxy of tests/plugins/motoaws.py)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from adapter_contract import LaunchingAdapterContract, context_factory
from plugins.motoaws import AwsFaults, FaultProxy

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
