"""Costs and limits on AWS when parts of them cannot be read: Service Quotas unavailable
(moto does not serve it for ec2), DescribeInstanceTypes failing for a while, and an
instance type EC2 does not know."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from adapter_contract import context_factory
from plugins.motoaws import FaultProxy, Rule, provider_config
from requestor import Requestor, wait_for
from test_aws_launcher import launcher_config, live, start_launcher  # noqa: F401

from nodepool.config import ConfigError, parse_config
from nodepool.drivers import adapter_for
from nodepool.errors import ConfigurationError
from nodepool.explain import current_reasons

HUGE = """          - name: huge
            cloud-image: debian
            instance-type: zz9.huge
            key-name: zuul
"""


def with_huge(text: str) -> str:
    return text.replace("  - name: spot\n", "  - name: spot\n  - name: huge\n", 1) + HUGE


def with_max_resources(text: str, where: str, indent: str, value: str) -> str:
    at = text.index(where)
    return text[:at] + f"{indent}max-resources: {value}\n" + text[at:]


def test_max_resources_caps_the_vcpus_of_the_quota_codes_the_labels_use(
        aws_network: dict) -> None:
    """t3 (standard on-demand: L-1216C47A) capped at 6 vCPUs on the provider (and so its
    pool); a code no label uses (u-: L-43DA4232) caps nothing."""
    text = with_max_resources(provider_config(aws_network), "    region-name:", "    ",
                              "{L-1216C47A: 6, L-43DA4232: 448}")
    provider = parse_config(text).providers["ec2-test"]
    assert provider.max_cores == 6 and provider.pools["main"].max_cores == 6
    text = with_max_resources(provider_config(aws_network), "        max-servers: 10\n",
                              "        ", "{L-43DA4232: 448}")
    provider = parse_config(text).providers["ec2-test"]
    assert math.isinf(provider.max_cores) and math.isinf(provider.pools["main"].max_cores)


def test_max_resources_values_are_checked_at_their_key_path(aws_network: dict) -> None:
    text = with_max_resources(provider_config(aws_network), "        max-servers: 10\n",
                              "        ", "{L-1216C47A: lots}")
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert "providers[0].pools[0].max-resources" in str(raised.value), str(raised.value)


def test_without_service_quotas_the_limits_are_unlimited_and_costs_known(
        aws_provider: Any) -> None:
    adapter = adapter_for(aws_provider)
    limits = adapter.quota_limits()     # moto: GetServiceQuota answers NoSuchResource
    assert math.isinf(limits.cores) and math.isinf(limits.instances)
    pool = aws_provider.pools["main"]
    assert adapter.label_cost(pool, pool.labels["small"]).cores == 2


def test_an_instance_type_ec2_does_not_know_fails_its_launches_not_the_others_costs(
        aws_network: dict) -> None:
    value = parse_config(with_huge(provider_config(aws_network))).providers["ec2-test"]
    adapter = adapter_for(value)
    adapter.quota_limits()
    pool = value.pools["main"]
    assert adapter.label_cost(pool, pool.labels["small"]).cores == 2
    assert adapter.label_cost(pool, pool.labels["huge"]).instances == 1
    machine = adapter.create(context_factory(value)(label="huge"))
    with pytest.raises(ConfigurationError, match="label huge: instance type zz9.huge"):
        machine.advance(None)


def test_without_service_quotas_launches_stay_within_the_pools_max_cores(
        start_launcher: Callable, aws_network: dict, ec2: Any,  # noqa: F811
        zk_client: Any) -> None:
    config = launcher_config(aws_network).replace("max-servers: 10", "max-cores: 4")
    start_launcher(config)
    rq = Requestor(zk_client)
    first, second, third = (rq.submit(["small"]) for _ in range(3))   # 2 vCPUs each
    served = [rq.wait(rid) for rid in (first, second)]
    assert all(r["state"] == "fulfilled" for r in served), served
    wait_for(lambda: "at quota" in current_reasons(zk_client, [third]).get(third, ""),
             timeout=15, what="the third request waits for the pool's max-cores")
    assert rq.get(third)["state"] != "fulfilled" and len(live(ec2)) == 2
    rq.finish(rq.accept(first, served[0]))
    assert rq.wait(third, timeout=30)["state"] == "fulfilled"


def test_instance_types_unreadable_for_a_while_the_request_waits_then_is_served(
        start_launcher: Callable, aws_network: dict, aws_proxy: FaultProxy,  # noqa: F811
        ec2: Any, zk_client: Any) -> None:
    aws_proxy.add(Rule("DescribeInstanceTypes", "throttle", count=3, retry_after=0.2))
    start_launcher(launcher_config(aws_network))
    rq = Requestor(zk_client)
    request = rq.wait(rq.submit(["small"]), timeout=60)
    assert request["state"] == "fulfilled", request
    assert aws_proxy.calls["DescribeInstanceTypes"] >= 4
    assert rq.node(request["nodes"][0])["resources"]["cores"] == 2


def test_a_label_of_an_unknown_instance_type_fails_its_request_others_are_served(
        start_launcher: Callable, aws_network: dict, ec2: Any,  # noqa: F811
        zk_client: Any) -> None:
    start_launcher(with_huge(launcher_config(aws_network)))
    rq = Requestor(zk_client)
    bad, good = rq.submit(["huge"]), rq.submit(["small"])
    assert rq.wait(good)["state"] == "fulfilled"
    assert rq.wait(bad, timeout=30)["state"] == "failed"
    assert all(i["InstanceType"] == "t3.medium" for i in live(ec2))
