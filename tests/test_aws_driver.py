"""The AWS driver against moto's server: Nodepool's keys, tags, capacity fallback to the next
subnet, the error table, instance-type costs and leaked volumes."""

from __future__ import annotations

from typing import Any

import pytest
from adapter_contract import Loop, context_factory
from plugins.motoaws import AMI, AwsFaults, FaultProxy, Rule, provider_config

from nodepool.config import ConfigError, parse_config
from nodepool.drivers import adapter_for
from nodepool.drivers.aws.instances import tags_of
from nodepool.errors import CapacityError, CostUnknown, QuotaError, TransientError


def provider(network: dict[str, Any], subnets: str | None = None) -> Any:
    return parse_config(provider_config(network, subnets)).providers["ec2-test"]


def test_nodepool_aws_keys_load_with_nodepools_defaults(aws_network: dict[str, Any]) -> None:
    value = provider(aws_network)
    assert value.driver == "aws" and value.region_name == "us-east-1"
    assert value.rate == pytest.approx(0.001)     # rate: 1000 operations per second
    assert value.boot_timeout == 180
    pool = value.pools["main"]
    assert pool.subnet_ids == (aws_network["subnets"][0],) and pool.public_ipv4
    assert pool.labels["small"].instance_type == "t3.medium"
    assert value.cloud_images["debian"].image_id == AMI


@pytest.mark.parametrize("key, value, expected", [
    ("fleet", "{instance-types: [t3.small], allocation-strategy: lowest-price}",
     "providers[0].pools[0].labels[0]: set exactly one of instance-type or fleet"),
    ("flavor-name", "x", "providers[0].pools[0].labels[0].flavor-name: extra key not allowed"),
])
def test_unknown_or_conflicting_label_keys_are_refused_by_path(aws_network: dict[str, Any], key: str,
                                                  value: str, expected: str) -> None:
    text = provider_config(aws_network).replace(
        "            instance-type: t3.medium\n",
        f"            instance-type: t3.medium\n            {key}: {value}\n", 1)
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert expected in str(raised.value), str(raised.value)


def test_instance_and_volume_carry_nodepools_tags(aws_provider: Any, aws_proxy: FaultProxy,
                                                  ec2: Any, aws_network: dict) -> None:
    adapter = adapter_for(aws_provider)
    ctx = context_factory(aws_provider)()
    run = Loop(adapter, AwsFaults(aws_proxy, ec2, aws_provider.name, aws_network)).create(ctx)
    assert run.complete, run.describe()
    (reservation,) = ec2.describe_instances(InstanceIds=[run.external_id])["Reservations"]
    tags = {t["Key"]: t["Value"] for t in reservation["Instances"][0]["Tags"]}
    assert tags["nodepool_node_id"] == ctx.node.id
    assert tags["nodepool_provider_name"] == "ec2-test" and tags["nodepool_pool_name"] == "main"
    volumes = ec2.describe_volumes(Filters=[{"Name": "tag:nodepool_node_id",
                                             "Values": [ctx.node.id]}])["Volumes"]
    assert volumes and all(v["Attachments"] for v in volumes)
    assert adapter.list_resources() == []   # attached volumes go with their instance
    assert tags_of(volumes[0]) == tags


def test_network_interfaces_are_tagged_at_launch_like_instances(
        aws_provider: Any, aws_proxy: FaultProxy, ec2: Any, aws_network: dict) -> None:
    adapter = adapter_for(aws_provider)
    ctx = context_factory(aws_provider)()
    run = Loop(adapter, AwsFaults(aws_proxy, ec2, aws_provider.name, aws_network)).create(ctx)
    assert run.complete, run.describe()
    # moto applies a RunInstances tag specification to instances and volumes only, so the
    # interfaces' one is read off the request EC2 got (AWS tags the ENI at creation)
    sent = aws_proxy.params["RunInstances"]
    specs = {sent[k]: k[:-len("ResourceType")] for k in sent
             if k.startswith("TagSpecification.") and k.endswith(".ResourceType")}
    assert set(specs) == {"instance", "volume", "network-interface"}

    def spec_tags(prefix: str) -> dict[str, str]:
        keys = [k for k in sent if k.startswith(prefix + "Tag.") and k.endswith(".Key")]
        return {sent[k]: sent[k[:-len("Key")] + "Value"] for k in keys}
    eni = spec_tags(specs["network-interface"])
    assert eni == spec_tags(specs["instance"])
    assert (eni["nodepool_node_id"], eni["nodepool_provider_name"],
            eni["nodepool_pool_name"]) == (ctx.node.id, "ec2-test", "main")


def test_no_capacity_in_one_subnet_launches_in_the_next(aws_network: dict, aws_proxy: FaultProxy,
                                                        ec2: Any) -> None:
    first, second = aws_network["subnets"]
    value = provider(aws_network, f"{first},{second}")
    aws_proxy.add(Rule("RunInstances", "capacity", count=5,
                       match={"NetworkInterface.1.SubnetId": first}))
    run = Loop(adapter_for(value), AwsFaults(aws_proxy, ec2, value.name, aws_network)).create(
        context_factory(value)())
    assert run.complete, run.describe()
    (reservation,) = ec2.describe_instances(InstanceIds=[run.external_id])["Reservations"]
    assert reservation["Instances"][0]["SubnetId"] == second
    assert run.machine.driver_data()["subnet"] == 1


def test_no_capacity_in_any_subnet_is_a_capacity_error(aws_network: dict, aws_proxy: FaultProxy,
                                                       ec2: Any) -> None:
    value = provider(aws_network, ",".join(aws_network["subnets"]))
    aws_proxy.add(Rule("RunInstances", "capacity", count=2))
    run = Loop(adapter_for(value), AwsFaults(aws_proxy, ec2, value.name, aws_network)).create(
        context_factory(value)())
    assert isinstance(run.error, CapacityError), run.describe()
    assert aws_proxy.calls["RunInstances"] == 2


@pytest.mark.parametrize("kind, error", [("instances", QuotaError), ("quota", QuotaError),
                                         ("throttle", TransientError),
                                         ("transient", TransientError)])
def test_refusals_are_classified_from_the_code_table(aws_provider: Any, aws_proxy: FaultProxy,
                                                     ec2: Any, aws_network: dict, kind: str,
                                                     error: type) -> None:
    aws_proxy.add(Rule("RunInstances", kind, retry_after=3.0))
    machine = adapter_for(aws_provider).create(context_factory(aws_provider)())
    machine.advance(None)   # start
    with pytest.raises(error) as raised:
        machine.advance(None)   # submit
    if error is TransientError:
        assert raised.value.retry_after == 3.0


def test_label_cost_comes_from_describe_instance_types(aws_provider: Any) -> None:
    adapter = adapter_for(aws_provider)
    pool = aws_provider.pools["main"]
    with pytest.raises(CostUnknown):
        adapter.label_cost(pool, pool.labels["small"])
    adapter.quota_limits()
    cost = adapter.label_cost(pool, pool.labels["small"])
    assert (cost.instances, cost.cores, cost.ram) == (1, 2, 4096)   # t3.medium


def test_leaked_volume_is_listed_and_untagged_one_is_not(aws_provider: Any, ec2: Any) -> None:
    ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)
    leaked = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "nodepool_provider_name", "Value": "ec2-test"},
                                            {"Key": "nodepool_node_id", "Value": "0000000007"}]}])
    adapter = adapter_for(aws_provider)
    (found,) = adapter.list_resources()
    assert (found.id, found.node_id, found.kind) == (leaked["VolumeId"], "0000000007", "volume")
    adapter.delete_resource(found)
    assert adapter.list_resources() == []
