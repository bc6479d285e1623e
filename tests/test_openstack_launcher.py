"""The launcher daemon driving OpenStackAdapter on the simulator, for a kazoo-only requestor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from plugins.ossim import LAUNCHER_CONFIG
from requestor import Requestor, wait_for
from zkhelpers import nodepool_yaml

from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]



@pytest.fixture
def launcher(zk_tls: dict, tmp_path: Any, ctl: Any) -> Iterator[Launcher]:
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG))
    daemon = Launcher(str(path), hostname="nl-openstack")
    daemon.start()
    yield daemon
    daemon.stop()


def test_a_request_is_served_from_the_simulated_cloud_and_cleaned_up(
        launcher: Launcher, zk_client: Any, ctl: Any) -> None:
    rq = Requestor(zk_client)
    rid = rq.submit(["small", "small"])
    request = rq.wait(rid)   # within its 15 s; the benchmark measures how fast
    assert request["state"] == "fulfilled", request
    servers = {s["id"]: s for s in ctl.servers()}
    fips = {f["address"] for f in ctl.state()["floating_ips"]}
    for node_id in request["nodes"]:
        node = rq.node(node_id)
        assert node["state"] == "ready" and node["provider"] == "sim-cloud"
        server = servers[node["external_id"]]
        assert server["metadata"]["nodepool_node_id"] == node_id
        assert node["interface_ip"] in fips and node["private_ipv4"] in server["fixed_ips"]
        assert node["username"] == "cirros" and node["image_id"] == "cirros"
        assert node["resources"] == {"instances": 1, "cores": 1, "ram": 512}
        assert node["region"] == "RegionOne" and node["az"] == "nova"
    rq.finish(rq.accept(rid, request))
    wait_for(lambda: all(rq.node(n) is None for n in request["nodes"]), what="nodes deleted")
    wait_for(lambda: ctl.servers() == [] and ctl.state()["floating_ips"] == [],
             what="servers and floating IPs gone")


DISKIMAGE_LAUNCHER_CONFIG = LAUNCHER_CONFIG.replace("""labels:
  - name: small
""", """labels:
  - name: small
  - name: built
diskimages:
  - name: ubuntu-built
""").replace("""    pools:""", """    diskimages:
      - name: ubuntu-built
    pools:""").replace("""            flavor-name: m1.tiny
""", """            flavor-name: m1.tiny
          - name: built
            diskimage: ubuntu-built
            flavor-name: m1.tiny
""")


def write_upload(kazoo: Any, image_id: str, provider: str = "sim-cloud") -> str:
    """What an image builder writes for a ready build uploaded to `provider`."""
    import json
    now = time.time()
    build = "/nodepool/images/ubuntu-built/builds/0000000001"
    kazoo.create(build, json.dumps({"state": "ready", "state_time": now, "builder": "nb01",
                                    "formats": "qcow2", "username": "ubuntu",
                                    "python_path": "/usr/bin/python3"}).encode(),
                 makepath=True)
    upload = kazoo.create(f"{build}/providers/{provider}/images/", json.dumps(
        {"state": "ready", "state_time": now, "external_id": image_id,
         "external_name": "ubuntu-built-1", "format": "qcow2"}).encode(),
        sequence=True, makepath=True)
    return upload


@pytest.fixture
def diskimage_launcher(zk_tls: dict, tmp_path: Any, ctl: Any) -> Iterator[Launcher]:
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, DISKIMAGE_LAUNCHER_CONFIG))
    daemon = Launcher(str(path), hostname="nl-openstack")
    daemon.start()
    yield daemon
    daemon.stop()


def test_diskimage_label_boots_the_latest_ready_upload(
        diskimage_launcher: Launcher, zk_client: Any, ctl: Any, sim: Any) -> None:
    import openstack
    rq = Requestor(zk_client)
    # No upload yet: the only pool declines, so the request fails (image missing).
    missing = rq.wait(rq.submit(["built"]))
    assert missing["state"] == "failed"
    conn = openstack.connect(cloud="simcloud")
    image_id = next(i.id for i in conn.image.images() if i.name == "cirros-0.6.2")
    upload = write_upload(zk_client, image_id)
    wait_for(lambda: diskimage_launcher.workers.get("sim-cloud"), what="provider up")
    rid = rq.submit(["built"])
    req = rq.wait(rid)
    assert req["state"] == "fulfilled", req
    node = rq.node(req["nodes"][0])
    assert node["image_id"] == upload and node["username"] == "ubuntu"
    server = {s["id"]: s for s in ctl.servers()}[node["external_id"]]
    assert server["image"] == image_id


DYNAMIC_CONFIG = LAUNCHER_CONFIG.replace("""            flavor-name: m1.tiny
""", """            flavor-name: m1.tiny
            dynamic-instance-properties:
              r-id: "{{request.id}}"
              r-labels: "{{request.labels}}"
              r-requestor: "{{request.requestor}}"
              r-data: "{{request.requestor_data[job]}}"
              r-priority: "{{request.relative_priority}}"
              r-event: "{{request.event_id}}"
              r-created: "{{request.created_time}}"
              r-tenant: "{{request.tenant_name}}"
""")


def test_dynamic_instance_properties_format_every_field_of_the_request(
        zk_tls: dict, tmp_path: Any, zk_client: Any, ctl: Any) -> None:
    """As Nodepool's getSafeAttributes: the request's own fields, labels being all of
    its node_types (issue 16: four of them formatted as None)."""
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, DYNAMIC_CONFIG))
    daemon = Launcher(str(path), hostname="nl-openstack")
    daemon.start()
    try:
        rq = Requestor(zk_client)
        rid = rq.submit(["small", "small"], relative_priority=3, event_id="ev-42",
                        created_time=1700000000.5, tenant_name="tenant-a")
        request = rq.wait(rid)
        assert request["state"] == "fulfilled", request
        server = next(s for s in ctl.servers()
                      if s["metadata"]["nodepool_node_id"] == request["nodes"][0])
        meta = server["metadata"]
        assert {k: v for k, v in meta.items() if k.startswith("r-")} == {
            "r-id": rid, "r-labels": "['small', 'small']", "r-requestor": rq.name,
            "r-data": "test", "r-priority": "3", "r-event": "ev-42",
            "r-created": "1700000000.5", "r-tenant": "tenant-a"}
        rq.finish(rq.accept(rid, request))
    finally:
        daemon.stop()


def test_a_ready_node_carries_nodepools_fields_with_nodepools_types(
        launcher: Launcher, zk_client: Any) -> None:
    """Every key Nodepool writes for a launched node, with its type and default: jobs
    and Zuul read them (issue 16: node_properties was null where Zuul expects {})."""
    rq = Requestor(zk_client)
    rid = rq.submit(["small"], tenant_name="tenant-a")
    request = rq.wait(rid)
    assert request["state"] == "fulfilled", request
    node = rq.node(request["nodes"][0])
    varying = {"state_time", "created_time", "external_id", "hostname", "interface_ip",
               "public_ipv4", "private_ipv4", "host_id", "launcher", "driver_data"}
    assert isinstance(node["state_time"], float) and isinstance(node["created_time"], float)
    assert isinstance(node["hostname"], str) and node["launcher"]
    assert node["interface_ip"] and node["private_ipv4"] and node["external_id"]
    assert {k: v for k, v in node.items() if k not in varying} == {
        "state": "ready", "type": ["small"], "provider": "sim-cloud", "pool": "main",
        "cloud": "simcloud", "region": "RegionOne", "az": "nova",
        "allocated_to": rid, "public_ipv6": None, "private_ipv6": None,
        "connection_type": "ssh", "connection_port": 22, "ssh_port": 22,
        "username": "cirros", "python_path": "auto", "shell_type": None, "host_keys": [],
        "image_id": "cirros", "slot": None, "attributes": None, "node_properties": {},
        "resources": {"instances": 1, "cores": 1, "ram": 512}, "tenant_name": "tenant-a",
        "requestor": rq.name, "user_data": None, "hold_job": None, "comment": None,
        "hold_expiration": None}
    rq.finish(rq.accept(rid, request))
