"""Cinder (volume) quota: the simulator's block-storage limits, the driver reading them
through openstacksdk over HTTP, and the launcher holding boot-from-volume requests to
them (issue 16). A cloud without block storage has unlimited volumes, as in Nodepool."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest
from contract_harness import Loop, context_factory
from ossim import Simulator
from ossim.testing import connect, wait_for_gone, wait_for_status
from plugins.launcher_env import cache_has_request, passes_go_by
from plugins.ossim import CLOUD, SimFaults
from requestor import Requestor, wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.drivers.adapter import Resources
from nodepool.explain import current_reasons
from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]


def boot_from_volume(conn: Any, images: dict, name: str, size: int) -> Any:
    """Someone else's server booted from a new volume of `size` GB."""
    return conn.compute.create_server(
        name=name, flavor_id="1", networks="auto",
        block_device_mapping=[{"boot_index": 0, "uuid": images["cirros-0.6.2"],
                               "source_type": "image", "destination_type": "volume",
                               "volume_size": size, "delete_on_termination": True}])


# -- the simulator ----------------------------------------------------------------

def test_simulator_serves_cinder_limits_used_by_boot_from_volume_servers(conn, ctl, images):
    assert conn.has_service("block-storage")
    ctl.set_quotas(volumes=5, gigabytes=100)
    limits = conn.block_storage.get_limits().absolute
    assert (limits.max_total_volumes, limits.max_total_volume_gigabytes) == (5, 100)
    assert (limits.total_volumes_used, limits.total_gigabytes_used) == (0, 0)
    server = boot_from_volume(conn, images, "bfv", 30)
    conn.compute.create_server(name="plain", flavor_id="1", networks="auto",
                               image_id=images["cirros-0.6.2"])
    used = conn.block_storage.get_limits().absolute
    assert (used.total_volumes_used, used.total_gigabytes_used) == (1, 30)
    # The cloud layer's call, as Nodepool makes it, reads the same figures.
    assert conn.get_volume_limits().absolute.total_gigabytes_used == 30
    wait_for_status(conn, server.id)
    conn.compute.delete_server(server.id)
    wait_for_gone(conn, server.id)
    assert conn.block_storage.get_limits().absolute.total_volumes_used == 0


def test_simulator_without_block_storage_has_no_such_service(tmp_path):
    with Simulator(block_storage=False) as sim:
        conn = connect(sim, str(tmp_path))
        assert not conn.has_service("block-storage")
        assert conn.compute.get_limits().absolute.instances == 10   # the rest is there


# -- the driver -------------------------------------------------------------------

@pytest.fixture
def adapter(make_adapter: Callable) -> Any:
    return make_adapter("sim-fip")


def test_quota_is_cinders_limit_minus_other_users_volumes(adapter, ctl, conn, images, providers):
    ctl.set_quotas(volumes=4, gigabytes=100)
    assert adapter.quota_limits() == Resources(instances=10, cores=20, ram=51200,
                                               volumes=4, volume_gb=100)
    boot_from_volume(conn, images, "someone-else", 20)
    # A boot-from-volume node of ours (label "volume": 30 GB): the core counts it from
    # ZooKeeper, so the driver leaves it out of what others use.
    loop = Loop(adapter, SimFaults(ctl, conn, "sim-fip"))
    run = loop.create(context_factory(providers["sim-fip"])("volume"))
    assert run.complete, run.describe()
    limits = adapter.quota_limits()
    assert (limits.volumes, limits.volume_gb) == (3, 80)
    # Nova's side as before: the other user's m1.tiny only.
    assert (limits.instances, limits.cores, limits.ram) == (9, 19, 50688)


def test_boot_from_volume_label_costs_a_volume_and_its_size(adapter):
    adapter.quota_limits()   # reads the flavors
    pool = adapter.provider.pools["main"]
    assert adapter.label_cost(pool, pool.labels["volume"]) == Resources(
        instances=1, cores=1, ram=2048, volumes=1, volume_gb=30)   # m1.small


def test_cloud_without_block_storage_has_unlimited_volumes(make_adapter, tmp_path, monkeypatch):
    with Simulator(block_storage=False) as bare:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE",
                           bare.write_clouds_yaml(str(tmp_path / "clouds.yaml"), CLOUD))
        limits = make_adapter("sim-fip").quota_limits()
        assert (limits.volumes, limits.volume_gb) == (math.inf, math.inf)
        assert limits.instances == 10
        [calls] = [bare.client().requests()]
        assert not [c for c in calls if c["path"].startswith("/volume")]


# -- the launcher -----------------------------------------------------------------

VOLUME_LAUNCHER = ZK_HEADER + """
labels:
  - name: bfv
providers:
  - name: sim-cloud
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: cirros
        image-name: cirros-0.6.2
    pools:
      - name: main
        max-servers: 4
        host-key-checking: false
        labels:
          - name: bfv
            cloud-image: cirros
            flavor-name: m1.tiny
            boot-from-volume: true
            volume-size: 40
"""


@pytest.fixture
def launcher(zk_tls, tmp_path, ctl):
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, VOLUME_LAUNCHER))
    ctl.set_quotas(volumes=1, gigabytes=100)   # the pool allows 4 servers; Cinder one volume
    daemon = Launcher(str(path), hostname="nl-volumes")
    daemon.start()
    yield daemon
    daemon.stop()


def test_request_past_the_whole_volume_quota_is_declined(launcher, zk_client, ctl):
    rq = Requestor(zk_client)
    rid = rq.submit(["bfv", "bfv"])
    req = rq.wait(rid, timeout=20)
    assert req["state"] == "failed" and len(req["declined_by"]) == 1
    assert ctl.servers() == []
    wait_for(lambda: "more than the whole quota of provider sim-cloud" in
             current_reasons(zk_client, [rid]).get(rid, ""),
             timeout=10, what="the decline's reason in the timeline")
    assert "2 volumes (limit 1)" in current_reasons(zk_client, [rid])[rid]


def test_boot_from_volume_request_waits_at_the_volume_quota(launcher, zk_client, ctl):
    rq = Requestor(zk_client)
    first = rq.submit(["bfv"])
    taken = rq.accept(first, rq.wait(first, timeout=20))
    waiting = rq.submit(["bfv"])
    cache_has_request(launcher, waiting)
    passes_go_by(launcher, "sim-cloud")
    req = rq.get(waiting)
    assert req["state"] in ("requested", "pending") and req["declined_by"] == []
    assert len([s for s in ctl.servers() if not s["deleting"]]) == 1
    rq.finish(taken)          # its volume goes with its server
    req = rq.wait(waiting, timeout=30)
    assert req["state"] == "fulfilled"


def test_simulator_command_line_sets_the_volume_quota_and_the_switch():
    from ossim.cli import build_config, parse_args

    config = build_config(parse_args(["--volumes", "3", "--volume-gigabytes", "90",
                                      "--no-block-storage"]))
    assert (config.quotas.volumes, config.quotas.gigabytes, config.block_storage) == (3, 90, False)
    assert build_config(parse_args([])).block_storage is True
