"""Cloud faults injected into the simulator, survived by the launcher with the real driver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from plugins.ossim import LAUNCHER_CONFIG
from requestor import Requestor, wait_for
from zkhelpers import nodepool_yaml

from nodepool.explain import current_reasons
from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]


@pytest.fixture
def launcher(zk_tls: dict, tmp_path: Any, ctl: Any) -> Iterator[Launcher]:
    path = tmp_path / "nodepool.yaml"
    text = nodepool_yaml(zk_tls, LAUNCHER_CONFIG)
    # Short launch-timeout so hung deletes are re-issued quickly in these tests;
    # unattached floating IPs are ours to clean.
    text = text.replace("    rate: 0\n",
                        "    rate: 0\n    launch-timeout: 3\n    clean-floating-ips: true\n")
    path.write_text(text)
    daemon = Launcher(str(path), hostname="nl-faults")
    daemon.start()
    yield daemon
    daemon.stop()


def live(ctl: Any) -> list[dict]:
    return [s for s in ctl.servers() if not s["deleting"]]


def test_quota_403_aborts_the_node_and_the_request_is_still_served(launcher, zk_client, ctl):
    ctl.inject("create_quota")
    rq = Requestor(zk_client)
    req = rq.wait(rq.submit(["small"]), timeout=20)
    assert req["state"] == "fulfilled" and req["declined_by"] == []
    assert len(live(ctl)) == 1


def test_500_on_create_is_retried(launcher, zk_client, ctl):
    ctl.inject("create_500")
    rq = Requestor(zk_client)
    assert rq.wait(rq.submit(["small"]), timeout=20)["state"] == "fulfilled"
    assert len(live(ctl)) == 1


def test_error_server_is_deleted_and_relaunched(launcher, zk_client, ctl):
    ctl.inject("create_error", count=1, message="hypervisor on fire")
    rq = Requestor(zk_client)
    req = rq.wait(rq.submit(["small"]), timeout=20)
    assert req["state"] == "fulfilled"
    ext = rq.node(req["nodes"][0])["external_id"]
    wait_for(lambda: [s["id"] for s in ctl.servers()] == [ext], timeout=20,
             what="the ERROR server deleted")


def test_hanging_delete_is_retried_without_losing_the_node_record(launcher, zk_client, ctl):
    rq = Requestor(zk_client)
    rid = rq.submit(["small"])
    (nid,) = rq.accept(rid, rq.wait(rid, timeout=20))
    ctl.inject("delete_hang")
    rq.finish([nid])
    wait_for(lambda: (rq.node(nid) or {}).get("state") == "deleting", what="deleting")
    # The cloud accepted the delete and forgot it; it is issued again after
    # launch-timeout (3 s here), and the record stays while the server exists.
    wait_for(lambda: ctl.count("DELETE /compute/v2.1/servers/{id}") >= 2, timeout=15,
             what="delete re-issued")
    assert rq.node(nid) is not None and ctl.servers()
    server = ctl.servers()[0]["id"]
    ctl.finish_delete(server)   # the cloud finally gets round to it
    wait_for(lambda: rq.node(nid) is None, timeout=20, what="record removed once gone")
    assert ctl.servers() == []


def test_leaked_server_deleted_after_two_scans_untagged_never(launcher, zk_client, ctl, sim):
    import openstack
    conn = openstack.connect(cloud="simcloud")
    image = next(i.id for i in conn.image.images() if i.name == "cirros-0.6.2")
    flavor = conn.compute.find_flavor("m1.tiny").id
    leaked = conn.compute.create_server(
        name="leaked", image_id=image, flavor_id=flavor, networks="auto",
        metadata={"nodepool_provider_name": "sim-cloud", "nodepool_pool_name": "main",
                  "nodepool_node_id": "0000999999"}).id
    untagged = conn.compute.create_server(name="pet", image_id=image, flavor_id=flavor,
                                          networks="auto").id
    worker = wait_for(lambda: launcher.workers.get("sim-cloud"), what="provider up")
    worker.request_leak_scan()
    wait_for(lambda: worker.leaks.suspects, what="first scan")
    assert leaked in {s["id"] for s in live(ctl)}
    worker.request_leak_scan()
    wait_for(lambda: leaked not in {s["id"] for s in live(ctl)}, timeout=20,
             what="leak deleted on the second scan")
    assert untagged in {s["id"] for s in live(ctl)}


def test_unattached_floating_ip_is_cleaned_after_two_scans(launcher, zk_client, ctl, sim):
    import openstack
    conn = openstack.connect(cloud="simcloud")
    public = next(n.id for n in conn.network.networks() if n.is_router_external)
    stray = conn.network.create_ip(floating_network_id=public).id
    worker = wait_for(lambda: launcher.workers.get("sim-cloud"), what="provider up")
    worker.request_leak_scan()
    wait_for(lambda: worker.leaks.suspects, what="first scan")
    assert stray in {f["id"] for f in ctl.state()["floating_ips"]}
    worker.request_leak_scan()
    wait_for(lambda: stray not in {f["id"] for f in ctl.state()["floating_ips"]}, timeout=20,
             what="stray floating IP deleted on the second scan")


def test_rate_limited_flavors_back_off_alone_while_ready_nodes_are_handed_over(
        zk_tls: dict, tmp_path: Any, ctl: Any, zk_client: Any) -> None:
    """At a takeover the flavors are not read yet; the cloud answers 429 to reading them.
    The loop must not call the cloud for them itself (nor fail its pass); the limits read
    that fetches them backs off, honouring Retry-After; the ready node is handed over."""
    from plugins.launcher_env import passes_go_by

    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG).replace(
        "  - name: small\n", "  - name: small\n    min-ready: 1\n", 1))
    rq = Requestor(zk_client)

    def ready() -> list[str]:
        ids = zk_client.get_children("/nodepool/nodes") if zk_client.exists("/nodepool/nodes") \
            else []
        return [i for i in ids if (rq.node(i) or {}).get("state") == "ready"]
    first = Launcher(str(path), hostname="nl-first")
    first.start()
    try:
        wait_for(ready, timeout=20, what="a ready spare")
    finally:
        first.stop()
    ctl.inject("rate_limit", count=None, method="GET", path="/flavors", retry_after=1)
    second = Launcher(str(path), hostname="nl-second")
    second.start()
    try:
        start = time.monotonic()
        req = rq.wait(rq.submit(["small"]), timeout=20)
        assert req["state"] == "fulfilled"
        passes_go_by(second, "sim-cloud", count=20)
        elapsed = time.monotonic() - start
        refused = ctl.count("GET /compute/v2.1/flavors/detail")
        # Backoff of at least 0.5 s doubling, and never sooner than Retry-After (1 s).
        assert 1 <= refused <= 2 + elapsed, (refused, elapsed)
        ctl.clear_faults()
        wait_for(ready, timeout=30, what="a new spare once the flavors can be read")
    finally:
        second.stop()


def test_request_larger_than_the_whole_cloud_quota_is_declined_not_left_waiting(
        zk_tls, tmp_path, zk_client, ctl):
    ctl.set_quotas(instances=2)   # the pool allows 4; the cloud never more than 2
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG))
    daemon = Launcher(str(path), hostname="nl-quota")
    daemon.start()
    try:
        rq = Requestor(zk_client)
        rid = rq.submit(["small"] * 3)
        req = rq.wait(rid, timeout=20)
        assert req["state"] == "failed" and len(req["declined_by"]) == 1
        assert ctl.servers() == []
        wait_for(lambda: "more than the whole quota of provider sim-cloud" in
                 current_reasons(zk_client, [rid]).get(rid, ""),
                 timeout=10, what="the decline's reason in the timeline")
        assert "3 instances (limit 2)" in current_reasons(zk_client, [rid])[rid]
    finally:
        daemon.stop()
