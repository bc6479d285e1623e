"""The launcher daemon driving AwsAdapter on moto's server, for a kazoo-only requestor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from plugins.motoaws import AwsFaults, FaultProxy, Rule, provider_config
from requestor import Requestor, wait_for
from test_aws_contract import FLEET, dedicated_host_config
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.explain import sentence
from nodepool.launcher.daemon import Launcher


def launcher_config(network: dict[str, Any], subnets: str | None = None) -> str:
    body = provider_config(network, subnets)
    return ZK_HEADER + body[body.index("labels:"):]


@pytest.fixture
def start_launcher(zk_tls: dict, tmp_path: Any) -> Iterator[Callable[[str], Launcher]]:
    started: list[Launcher] = []

    def start(config: str) -> Launcher:
        path = tmp_path / "nodepool.yaml"
        path.write_text(nodepool_yaml(zk_tls, config))
        daemon = Launcher(str(path), hostname="nl-aws")
        daemon.start()
        started.append(daemon)
        return daemon
    yield start
    for daemon in started:
        daemon.stop()


def live(ec2: Any) -> list[dict[str, Any]]:
    found = ec2.describe_instances(Filters=[{"Name": "instance-state-name",
                                             "Values": ["pending", "running"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def test_a_request_is_fulfilled_on_aws_and_its_instance_terminated(
        start_launcher: Callable, aws_network: dict, ec2: Any, zk_client: Any) -> None:
    start_launcher(launcher_config(aws_network))
    rq = Requestor(zk_client)
    rid = rq.submit(["small"])
    request = rq.wait(rid)
    assert request["state"] == "fulfilled", request
    (node_id,) = request["nodes"]
    node = rq.node(node_id)
    (instance,) = live(ec2)
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert node["state"] == "ready" and node["external_id"] == instance["InstanceId"]
    assert tags["nodepool_node_id"] == node_id and tags["nodepool_provider_name"] == "ec2-test"
    assert node["interface_ip"] == instance.get("PublicIpAddress", instance["PrivateIpAddress"])
    assert node["username"] == "admin" and node["host_keys"] == []
    assert node["resources"] == {"instances": 1, "cores": 2, "ram": 4096}
    assert node["region"] == "us-east-1"
    rq.finish(rq.accept(rid, request))
    wait_for(lambda: rq.node(node_id) is None, what="node deleted")
    wait_for(lambda: live(ec2) == [], what="instance terminated")


def test_nodepool_request_cli_gets_an_aws_node_with_its_addresses_and_returns_it(
        start_launcher: Callable, aws_network: dict, ec2: Any, zk_client: Any,
        tmp_path: Any) -> None:
    """A Zuul-style request through the real `nodepool request` command (a subprocess)."""
    start_launcher(launcher_config(aws_network))
    done = subprocess.run([sys.executable, "-m", "nodepool.cli", "-c",
                           str(tmp_path / "nodepool.yaml"), "request", "small", "--json",
                           "--timeout", "60", "--requestor", "zuul-like"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    (node,) = result["nodes"]
    # Returned as used: the launcher may be terminating it already (moto keeps it listed).
    (reservation,) = ec2.describe_instances(InstanceIds=[node["external_id"]])["Reservations"]
    (instance,) = reservation["Instances"]
    assert node["provider"] == "ec2-test" and node["type"] == ["small"]
    assert node["private_ipv4"] == instance["PrivateIpAddress"]
    # A terminated instance loses its public address: the node must have had one.
    assert node["public_ipv4"] and node["interface_ip"] == node["public_ipv4"]
    assert instance.get("PublicIpAddress") in (None, node["public_ipv4"])
    assert node["requestor"] == "zuul-like" and node["state"] == "used"
    assert zk_client.exists(f"/nodepool/requests/{result['request']}") is None
    wait_for(lambda: not zk_client.exists(f"/nodepool/nodes/{node['id']}"), timeout=30,
             what="the returned node deleted")
    wait_for(lambda: live(ec2) == [], timeout=30, what="its instance terminated")


def test_a_quota_refusal_aborts_the_node_and_the_request_is_served_after(
        start_launcher: Callable, aws_network: dict, aws_proxy: FaultProxy, ec2: Any,
        zk_client: Any) -> None:
    aws_proxy.add(Rule("RunInstances", "instances"))   # InstanceLimitExceeded, once
    start_launcher(launcher_config(aws_network))
    rq = Requestor(zk_client)
    request = rq.wait(rq.submit(["small"]), timeout=60)
    assert request["state"] == "fulfilled", request
    assert aws_proxy.calls["RunInstances"] == 2
    assert len(live(ec2)) == 1


def test_no_capacity_in_the_first_subnet_is_served_from_the_second(
        start_launcher: Callable, aws_network: dict, aws_proxy: FaultProxy, ec2: Any,
        zk_client: Any) -> None:
    first, second = aws_network["subnets"]
    aws_proxy.add(Rule("RunInstances", "capacity", count=100,
                       match={"NetworkInterface.1.SubnetId": first}))
    start_launcher(launcher_config(aws_network, f"{first},{second}"))
    rq = Requestor(zk_client)
    request = rq.wait(rq.submit(["small", "spot"]))
    assert request["state"] == "fulfilled", request
    assert {i["SubnetId"] for i in live(ec2)} == {second}


def test_throttled_launches_back_off_and_are_served(
        start_launcher: Callable, aws_network: dict, aws_proxy: FaultProxy, ec2: Any,
        zk_client: Any) -> None:
    aws_proxy.add(Rule("RunInstances", "throttle", count=2))   # Throttling, twice
    start_launcher(launcher_config(aws_network))
    rq = Requestor(zk_client)
    request = rq.wait(rq.submit(["small"]), timeout=60)
    assert request["state"] == "fulfilled", request
    assert aws_proxy.calls["RunInstances"] == 3 and len(live(ec2)) == 1


def test_leaked_instance_and_volume_are_deleted_after_two_scans_untagged_never(
        start_launcher: Callable, aws_network: dict, aws_proxy: FaultProxy, ec2: Any,
        zk_client: Any) -> None:
    faults = AwsFaults(aws_proxy, ec2, "ec2-test", aws_network)
    leaked = faults.create_leaked_server("0000999999")
    untagged = faults.create_untagged_server()
    volume = faults.create_leaked_resource("0000999998")
    launcher = start_launcher(launcher_config(aws_network))
    worker = wait_for(lambda: launcher.workers.get("ec2-test"), what="provider started")
    worker.request_leak_scan()
    wait_for(lambda: worker.leaks.suspects, what="first pass saw the leaks")
    assert leaked in {i["InstanceId"] for i in live(ec2)}   # one pass is not enough
    worker.request_leak_scan()
    wait_for(lambda: leaked not in {i["InstanceId"] for i in live(ec2)},
             what="leaked instance terminated on the second pass")
    wait_for(lambda: not ec2.describe_volumes(Filters=[
        {"Name": "volume-id", "Values": [volume]}])["Volumes"], what="leaked volume deleted")
    assert untagged in {i["InstanceId"] for i in live(ec2)}


def test_sigkill_mid_launch_the_next_launcher_resumes_with_one_instance_in_total(
        zk_tls: dict, tmp_path: Any, start_launcher: Callable, aws_network: dict,
        aws_proxy: FaultProxy, ec2: Any, zk_client: Any) -> None:
    config = launcher_config(aws_network) + "zookeeper-timeout: 2\n"
    path = tmp_path / "killed.yaml"
    path.write_text(nodepool_yaml(zk_tls, config))
    aws_proxy.hang_next_run = True    # the instance shows pending: the launch waits in building
    proc = subprocess.Popen([sys.executable, "-m", "nodepool.launcher.main", "-f", "--no-webapp",
                             "-c", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        rq = Requestor(zk_client)
        rid = rq.submit(["small"])

        def building_with_instance() -> Any:
            if not zk_client.exists("/nodepool/nodes"):
                return None
            for nid in zk_client.get_children("/nodepool/nodes"):
                node = rq.node(nid)
                if node and node["state"] == "building" and node["external_id"]:
                    return nid
            return None

        node_id = wait_for(building_with_instance, timeout=30, what="instance being built")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    aws_proxy.hung.clear()            # it is running now
    start_launcher(config)
    request = rq.wait(rid, timeout=60)
    assert request["state"] == "fulfilled" and request["nodes"] == [node_id], request
    every = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(every) == 1, every    # resumed, not launched again


def test_an_in_use_node_whose_instance_vanished_is_deleted_with_the_reason_counted(
        start_launcher: Callable, aws_network: dict, ec2: Any, zk_client: Any) -> None:
    launcher = start_launcher(launcher_config(aws_network))
    worker = wait_for(lambda: launcher.workers.get("ec2-test"), what="provider started")
    rq = Requestor(zk_client)
    rid = rq.submit(["spot"])
    request = rq.wait(rid)
    assert request["state"] == "fulfilled", request
    (node_id,) = rq.accept(rid, request)
    instance_id = rq.node(node_id)["external_id"]
    ec2.terminate_instances(InstanceIds=[instance_id])   # the cloud reclaims it
    wait_for(lambda: live(ec2) == [], what="instance gone from the listing")
    vanished = worker.leaks.vanished
    worker.request_leak_scan()
    wait_for(lambda: node_id in vanished.suspects, what="first listing without it")
    assert rq.node(node_id)["state"] == "in-use"          # one listing is not enough
    worker.request_leak_scan()
    wait_for(lambda: node_id in vanished.judged, what="second listing: judged vanished")
    assert instance_id in vanished.judged[node_id]
    body = launcher.ctx.metrics.exposition()[0].decode()
    assert 'nodepool_vanished_nodes_total{provider="ec2-test",state="in-use"} 1.0' in body
    # The requestor holds its lock: the node stays until the lock is free.
    rq.locks.pop(node_id).release()
    worker.request_leak_scan()
    wait_for(lambda: rq.node(node_id) is None, what="vanished node deleted")


def test_a_fulfilled_requests_node_whose_instance_vanished_is_in_its_timeline(
        start_launcher: Callable, aws_network: dict, ec2: Any, zk_client: Any) -> None:
    launcher = start_launcher(launcher_config(aws_network))
    worker = wait_for(lambda: launcher.workers.get("ec2-test"), what="provider started")
    rq = Requestor(zk_client)
    rid = rq.submit(["spot"])
    request = rq.wait(rid)
    (node_id,) = request["nodes"]        # fulfilled; the requestor has not taken it yet
    instance_id = rq.node(node_id)["external_id"]
    ec2.terminate_instances(InstanceIds=[instance_id])   # reclaimed before it is taken
    wait_for(lambda: live(ec2) == [], what="instance gone from the listing")
    vanished = worker.leaks.vanished
    worker.request_leak_scan()
    wait_for(lambda: node_id in vanished.suspects, what="first listing without it")
    worker.request_leak_scan()
    wait_for(lambda: rq.node(node_id) is None, what="vanished node deleted (unlocked)")
    (entry,) = [e for e in launcher.ctx.timeline.entries(rid) if e["event"] == "node-vanished"]
    said = sentence(entry)
    assert node_id in said and instance_id in said and "(ready)" in said, said


@pytest.mark.parametrize("written_by", ["us", "nodepool"])
def test_a_dedicated_host_node_is_served_and_its_host_released_after_the_job(
        start_launcher: Callable, aws_network: dict, ec2: Any, zk_client: Any,
        written_by: str) -> None:
    """`nodepool`: the in-use node is rewritten as Nodepool 11 writes it (external_id
    {"instance": ..., "host": ...}, no driver_data): the host is still released."""
    text = dedicated_host_config(aws_network)
    start_launcher(ZK_HEADER + text[text.index("labels:"):])
    rq = Requestor(zk_client)
    rid = rq.submit(["small"])
    request = rq.wait(rid, timeout=30)
    assert request["state"] == "fulfilled", request
    (node_id,) = rq.accept(rid, request)
    node = rq.node(node_id)
    (instance,) = live(ec2)
    host_id = instance["Placement"]["HostId"]
    assert node["external_id"] == instance["InstanceId"] and node["resources"] == {"instances": 1}
    (host,) = ec2.describe_hosts(HostIds=[host_id])["Hosts"]
    assert {t["Key"]: t["Value"] for t in host["Tags"]}["nodepool_node_id"] == node_id
    if written_by == "nodepool":
        rq.set_node(node_id, external_id={"instance": instance["InstanceId"], "host": host_id},
                    driver_data=None)
    rq.finish([node_id])
    wait_for(lambda: rq.node(node_id) is None, timeout=30, what="node deleted")
    assert live(ec2) == []
    assert ec2.describe_hosts(HostIds=[host_id])["Hosts"][0]["State"] == "released"


def test_a_request_for_a_fleet_label_is_fulfilled_and_its_instance_terminated(
        start_launcher: Callable, aws_network: dict, ec2: Any, zk_client: Any) -> None:
    start_launcher(launcher_config(aws_network).replace(
        "            instance-type: t3.medium\n", FLEET, 1))
    rq = Requestor(zk_client)
    rid = rq.submit(["small"])
    request = rq.wait(rid, timeout=30)
    assert request["state"] == "fulfilled", request
    (node_id,) = request["nodes"]
    node = rq.node(node_id)
    (instance,) = live(ec2)
    assert node["external_id"] == instance["InstanceId"] and instance["InstanceType"] == "t3.small"
    assert node["resources"] == {"instances": 1, "cores": 4, "ram": 16384}
    rq.finish(rq.accept(rid, request))
    wait_for(lambda: rq.node(node_id) is None and live(ec2) == [], timeout=30,
             what="node deleted, instance terminated")
