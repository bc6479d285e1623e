"""`dedicated-host: true` labels against moto's server: one tagged host per node, the
instance placed on it, the host released only after its instance is gone, found again
after a crash, and leaked hosts released by tag (never untagged ones)."""

from __future__ import annotations

from typing import Any

import pytest
from adapter_contract import Loop, Run, context_factory, node_for_delete
from plugins.motoaws import AwsFaults, FaultProxy, provider_config
from test_aws_contract import dedicated_host_config

from nodepool.config import ConfigError, parse_config
from nodepool.drivers import adapter_for
from nodepool.drivers.aws.hosts import HOST
from nodepool.drivers.aws.instances import tags_of


@pytest.fixture
def provider(aws_network: dict[str, Any]) -> Any:
    return parse_config(dedicated_host_config(aws_network)).providers["ec2-test"]


@pytest.fixture
def loop(provider: Any, aws_proxy: FaultProxy, ec2: Any, aws_network: dict) -> Loop:
    return Loop(adapter_for(provider), AwsFaults(aws_proxy, ec2, provider.name, aws_network))


def hosts_of(ec2: Any, node_id: str | None = None) -> list[dict[str, Any]]:
    """Live hosts, of `node_id` if given (tags matched here: moto ignores tag filters)."""
    return [h for h in ec2.describe_hosts()["Hosts"] if h["State"] not in ("released",)
            and (node_id is None or tags_of(h).get("nodepool_node_id") == node_id)]


def instance_state(ec2: Any, instance_id: str) -> str:
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def test_a_node_gets_a_tagged_host_of_its_own_and_its_instance_is_placed_on_it(
        provider: Any, loop: Loop, ec2: Any, aws_proxy: FaultProxy) -> None:
    ctx = context_factory(provider)()
    run = loop.create(ctx)
    assert run.complete, run.describe()
    (host,) = hosts_of(ec2, ctx.node.id)
    assert tags_of(host)["nodepool_provider_name"] == "ec2-test"
    assert tags_of(host)["nodepool_pool_name"] == "main"
    assert host["AvailabilityZone"] == "us-east-1a"
    assert host["HostProperties"]["InstanceType"] == "t3.medium"
    assert run.machine.driver_data()["host"] == host["HostId"]
    allocated = aws_proxy.params["AllocateHosts"]
    assert (allocated["AutoPlacement"], allocated["Quantity"]) == ("off", "1")
    assert allocated["ClientToken"].startswith(ctx.node.id)
    # moto reports default tenancy whatever was asked: what EC2 got is read off the request
    sent = aws_proxy.params["RunInstances"]
    assert (sent["Placement.Tenancy"], sent["Placement.HostId"],
            sent["Placement.Affinity"]) == ("host", host["HostId"], "host")
    (reservation,) = ec2.describe_instances(InstanceIds=[run.external_id])["Reservations"]
    assert reservation["Instances"][0]["Placement"]["HostId"] == host["HostId"]
    # As Nodepool: an instance on a dedicated host costs no vCPU quota
    assert loop.adapter.label_cost(ctx.pool, ctx.label).cores == 0


def test_the_host_is_released_only_once_its_instance_is_terminated(
        provider: Any, loop: Loop, ec2: Any) -> None:
    ctx = context_factory(provider)()
    created = loop.create(ctx)
    (host,) = hosts_of(ec2, ctx.node.id)
    run = Run(loop.adapter.delete(node_for_delete(ctx, created)))
    released_at = None
    for tick in range(50):
        loop.drive([run], max_ticks=1)
        if released_at is None and hosts_of(ec2, ctx.node.id) == []:
            released_at = tick   # never while its instance may still run
            assert instance_state(ec2, created.external_id) == "terminated"
        if run.complete:
            break
    assert run.complete and not run.transient and released_at, run.describe()
    assert instance_state(ec2, created.external_id) == "terminated"
    assert ec2.describe_hosts(HostIds=[host["HostId"]])["Hosts"][0]["State"] == "released"


def test_an_allocation_whose_save_was_lost_is_found_again_by_its_tag(
        provider: Any, loop: Loop, ec2: Any, aws_proxy: FaultProxy) -> None:
    """The launcher died right after AllocateHosts, before writing the host down: its
    successor finds the host by the node-id tag instead of allocating a second one."""
    ctx = context_factory(provider)()
    first = loop.create(ctx, stop_after_saves=1, lose_write=True)
    assert first.stopped and first.saves[-1]["state"] == "allocate-host", first.describe()
    assert len(hosts_of(ec2, ctx.node.id)) == 1
    resumed = loop.create(ctx, first.saves[-1])
    assert resumed.complete, resumed.describe()
    assert len(hosts_of(ec2, ctx.node.id)) == 1 and aws_proxy.calls["AllocateHosts"] == 1


def test_a_failed_launch_on_a_host_releases_the_host_when_the_node_is_deleted(
        provider: Any, loop: Loop, ec2: Any, aws_proxy: FaultProxy) -> None:
    ctx = context_factory(provider)()
    loop.faults.fail_next_create("error")   # the instance stops instead of running
    failed = loop.create(ctx)
    assert failed.error is not None and len(hosts_of(ec2, ctx.node.id)) == 1
    assert loop.delete(node_for_delete(ctx, failed)).complete
    assert hosts_of(ec2, ctx.node.id) == []


def test_a_nodepool_node_without_host_in_driver_data_has_its_host_found_by_tag(
        provider: Any, loop: Loop, ec2: Any) -> None:
    """A node Nodepool wrote (or one whose host id was never saved): its label is a
    dedicated-host one, so deleting it looks the host up by the node-id tag."""
    ctx = context_factory(provider)()
    created = loop.create(ctx)
    node = node_for_delete(ctx, created)
    node.driver_data = None
    assert loop.delete(node).complete
    assert hosts_of(ec2, ctx.node.id) == []


def test_leaked_hosts_are_listed_by_tag_and_released_never_untagged_or_in_use_ones(
        provider: Any, loop: Loop, ec2: Any) -> None:
    def allocate(tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "dedicated-host",
                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        return ec2.allocate_hosts(AvailabilityZone="us-east-1a", InstanceType="t3.medium",
                                  Quantity=1, TagSpecifications=spec)["HostIds"][0]
    leaked = allocate({"nodepool_provider_name": "ec2-test", "nodepool_node_id": "0000009999"})
    untagged = allocate({})
    theirs = allocate({"nodepool_provider_name": "someone-else", "nodepool_node_id": "1"})
    in_use = context_factory(provider)()
    assert loop.create(in_use).complete
    found = {r.id: r for r in loop.adapter.list_resources() if r.kind == HOST}
    assert set(found) == {leaked} and found[leaked].node_id == "0000009999"
    loop.adapter.delete_resource(found[leaked])
    loop.adapter.delete_resource(found[leaked])   # twice: already released is success
    states = {h["HostId"]: h["State"] for h in ec2.describe_hosts()["Hosts"]}
    assert states[leaked] == "released"
    assert states[untagged] == states[theirs] == "available"
    assert len(hosts_of(ec2, in_use.node.id)) == 1


@pytest.mark.parametrize("pool_extra, label_extra, expected", [
    ("", "", "labels[0].dedicated-host: needs the pool's availability-zone"),
    ("        availability-zone: us-east-1a\n", "            use-spot: true\n",
     "labels[0].use-spot: spot instances cannot be used on dedicated hosts"),
])
def test_dedicated_host_labels_need_a_zone_and_no_spot(
        aws_network: dict, pool_extra: str, label_extra: str, expected: str) -> None:
    text = provider_config(aws_network, extra_pool=pool_extra).replace(
        "            instance-type: t3.medium\n",
        f"            instance-type: t3.medium\n            dedicated-host: true\n{label_extra}", 1)
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert f"providers[0].pools[0].{expected}" in str(raised.value), str(raised.value)
