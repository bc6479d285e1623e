"""Cloud API metrics of the OpenStack driver, a launcher on the simulator: openstacksdk's own
statsd timers under nodepool.task.<provider>, and our Prometheus series per call and class."""

from __future__ import annotations

from typing import Any

import pytest
from plugins.ossim import LAUNCHER_CONFIG, SimFaults
from prometheus_client.parser import text_string_to_metric_families
from requestor import Requestor, wait_for
from statsd_listener import StatsdListener
from zkhelpers import nodepool_yaml

from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

PROVIDER = "sim-cloud"


def sample(launcher: Launcher, name: str, **labels: str) -> float:
    body, _ = launcher.metrics.exposition()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_openstack_calls_are_timed_to_statsd_and_prometheus(
        zk_tls: dict, zk_client: Any, tmp_path: Any, ctl: Any, conn: Any, monkeypatch) -> None:
    listener = StatsdListener()
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", str(listener.port))
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG))
    SimFaults(ctl, conn, PROVIDER).fail_next_create("quota")
    launcher = Launcher(str(path), hostname="nl-openstack")
    launcher.start()
    try:
        rq = Requestor(zk_client)
        assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"
        prefix = f"nodepool.task.{PROVIDER}."
        # openstacksdk's names: <prefix>.<service>.<method>.<path>.<status>, a timer and
        # a counter each, plus .attempted
        create = prefix + "compute.POST.compute_servers."
        listener.wait(create + "202", "ms")
        listener.wait(create + "202", "c")
        listener.wait(create + "403", "ms")            # the quota refusal
        listener.wait(create + "attempted", "c")
        listener.wait(prefix + "compute.GET.servers_detail.200", "ms")
        # Our own series: bounded call names, errors by classify()'s class.
        assert sample(launcher, "nodepool_cloud_api_call_seconds_count",
                      provider=PROVIDER, call="create_server") >= 2
        assert sample(launcher, "nodepool_cloud_api_errors_total", provider=PROVIDER,
                      call="create_server", **{"class": "quota"}) == 1.0
        assert sample(launcher, "nodepool_cloud_api_call_seconds_count",
                      provider=PROVIDER, call="list_servers") >= 1
        assert sample(launcher, "nodepool_launches_total", provider=PROVIDER, az="",
                      label="small", result="error.quota") == 1.0
        wait_for(lambda: sample(launcher, "nodepool_provider_quota_limit", provider=PROVIDER,
                                resource="instances") > 0, what="the cloud's limits")
        ids = [server["id"] for server in ctl.servers()]
        assert ids and not any(i in s.name for i in ids for s in listener.stats)
    finally:
        launcher.stop()
        listener.close()
