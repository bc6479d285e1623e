"""`fleet:` labels against moto's server: CreateFleet (instant) over a content-named launch
template, the contract suite on a fleet provider, errors a fleet lists in its answer,
the cost of a fleet (its largest type) and cleanup of launch templates no label uses."""

from __future__ import annotations

from typing import Any

import pytest
from adapter_contract import Loop, context_factory
from plugins.motoaws import AwsFaults, FaultProxy, Rule, provider_config
from test_aws_contract import FLEET, fleet_config
from test_aws_launcher import live

from nodepool.config import ConfigError, parse_config
from nodepool.drivers import adapter_for
from nodepool.drivers.aws.fleet import TEMPLATE
from nodepool.drivers.aws.instances import tags_of
from nodepool.errors import CapacityError, QuotaError


@pytest.fixture
def provider(aws_network: dict[str, Any]) -> Any:
    return parse_config(fleet_config(aws_network)).providers["ec2-test"]


@pytest.fixture
def loop(provider: Any, aws_proxy: FaultProxy, ec2: Any, aws_network: dict) -> Loop:
    return Loop(adapter_for(provider),
                AwsFaults(aws_proxy, ec2, provider.name, aws_network, "CreateFleet"))


def templates(ec2: Any) -> dict[str, dict[str, str]]:
    return {t["LaunchTemplateName"]: tags_of(t)
            for t in ec2.describe_launch_templates()["LaunchTemplates"]}


def test_a_fleet_launch_uses_one_tagged_template_and_every_type_in_order(
        provider: Any, loop: Loop, ec2: Any, aws_proxy: FaultProxy,
        aws_network: dict) -> None:
    make = context_factory(provider)
    first, second = make(), make()
    assert loop.create(first).complete and loop.create(second).complete
    (name,) = templates(ec2)
    assert name.startswith("nodepool-launch-template-")
    assert templates(ec2)[name] == {"nodepool_managed": "true",
                                    "nodepool_provider_name": "ec2-test"}
    assert aws_proxy.calls["CreateLaunchTemplate"] == 1 and aws_proxy.calls["CreateFleet"] == 2
    sent = aws_proxy.params["CreateFleet"]
    assert (sent["Type"], sent["TargetCapacitySpecification.TotalTargetCapacity"],
            sent["OnDemandOptions.AllocationStrategy"]) == ("instant", "1", "prioritized")
    prefix = "LaunchTemplateConfigs.1.Overrides."
    assert [sent[f"{prefix}{i}.InstanceType"] for i in (1, 2)] == ["t3.small", "t3.xlarge"]
    assert sent[f"{prefix}1.SubnetId"] == aws_network["subnets"][0]
    assert sent["ClientToken"].startswith(second.node.id)
    for ctx in (first, second):
        (instance,) = [i for i in live(ec2) if tags_of(i).get("nodepool_node_id") == ctx.node.id]
        assert instance["InstanceType"] == "t3.small"   # prioritized: the first type
        assert tags_of(instance)["nodepool_provider_name"] == "ec2-test"
        assert instance["KeyName"] == "zuul"
    template = ec2.describe_launch_template_versions(LaunchTemplateName=name)
    data = template["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["SecurityGroupIds"] == [aws_network["group"]]


def test_a_fleet_costs_its_largest_type(provider: Any, loop: Loop) -> None:
    adapter = loop.adapter
    adapter.quota_limits()
    pool = provider.pools["main"]
    cost = adapter.label_cost(pool, pool.labels["small"])   # t3.small or t3.xlarge
    assert (cost.instances, cost.cores, cost.ram) == (1, 4, 16384)


@pytest.mark.parametrize("kind, error", [("fleet-capacity", CapacityError),
                                         ("fleet-quota", QuotaError)])
def test_an_error_a_fleet_lists_in_its_answer_is_classified_by_the_table(
        provider: Any, loop: Loop, aws_proxy: FaultProxy, kind: str, error: type) -> None:
    aws_proxy.add(Rule("CreateFleet", kind))
    run = loop.create(context_factory(provider)())
    assert isinstance(run.error, error), run.describe()
    assert "injected by the test proxy" in str(run.error)


def test_a_template_deleted_behind_our_back_is_made_again(
        provider: Any, loop: Loop, ec2: Any, aws_proxy: FaultProxy) -> None:
    make = context_factory(provider)
    assert loop.create(make()).complete
    (name,) = templates(ec2)
    ec2.delete_launch_template(LaunchTemplateName=name)
    run = loop.create(make())
    assert run.complete and len(run.transient) == 1, run.describe()
    assert list(templates(ec2)) == [name] and aws_proxy.calls["CreateLaunchTemplate"] == 2


def test_templates_no_label_uses_are_deleted_never_others(
        provider: Any, loop: Loop, ec2: Any) -> None:
    def template(name: str, tags: dict[str, str]) -> None:
        spec = [{"ResourceType": "launch-template",
                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        ec2.create_launch_template(LaunchTemplateName=name, TagSpecifications=spec,
                                   LaunchTemplateData={"KeyName": "zuul"})
    template("nodepool-launch-template-old", {"nodepool_provider_name": "ec2-test"})
    template("nodepool-launch-template-theirs", {"nodepool_provider_name": "someone-else"})
    template("nodepool-launch-template-untagged", {})
    template("hand-made", {"nodepool_provider_name": "ec2-test"})
    assert loop.create(context_factory(provider)()).complete
    (used,) = set(templates(ec2)) - {"nodepool-launch-template-old", "hand-made",
                                      "nodepool-launch-template-theirs",
                                      "nodepool-launch-template-untagged"}
    found = [r for r in loop.adapter.list_resources() if r.kind == TEMPLATE]
    assert [r.id for r in found] == ["nodepool-launch-template-old"]
    loop.adapter.delete_resource(found[0])
    assert set(templates(ec2)) == {used, "hand-made", "nodepool-launch-template-theirs",
                                   "nodepool-launch-template-untagged"}


@pytest.mark.parametrize("label_keys, expected", [
    ("            instance-type: t3.small\n" + FLEET,
     "labels[0]: set exactly one of instance-type or fleet"),
    ("            fleet:\n              instance-types: []\n"
     "              allocation-strategy: lowest-price\n",
     "labels[0].fleet.instance-types: name at least one type"),
    ("            fleet:\n              instance-types: [t3.small]\n"
     "              allocation-strategy: cheapest\n",
     "labels[0].fleet.allocation-strategy"),
    (FLEET + "            dedicated-host: true\n",
     "labels[0].fleet: a fleet cannot launch on dedicated hosts"),
])
def test_fleet_keys_are_checked_naming_the_key(aws_network: dict, label_keys: str,
                                               expected: str) -> None:
    text = provider_config(aws_network, extra_pool="        availability-zone: us-east-1a\n")
    text = text.replace("            instance-type: t3.medium\n", label_keys, 1)
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert f"providers[0].pools[0].{expected}" in str(raised.value), str(raised.value)
