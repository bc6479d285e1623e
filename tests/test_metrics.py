"""Metrics of a launcher run in-process: statsd packets on a real UDP socket, the Prometheus
exposition parsed with prometheus_client's parser."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families
from requestor import Requestor, wait_for
from statsd_listener import StatsdListener

from nodepool.launcher.daemon import Launcher
from nodepool.launcher.tuning import DEFAULT
from nodepool.metrics import Metrics, NullMetrics, normalize_statsd_name, statsd_from_environ
from nodepool.model import NodeState
from nodepool.testing.fake_adapter import TAG_NODE, TAG_POOL, TAG_PROVIDER, FakeAdapter

FAST = dataclasses.replace(DEFAULT, metrics_interval=0.1)

TENANTS = """
tenant-resource-limits:
  - tenant-name: tenant.a
    max-servers: 5
    max-cores: 40
    max-volume-gb: 500
"""


@pytest.fixture
def statsd(monkeypatch):
    listener = StatsdListener()
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", str(listener.port))
    yield listener
    listener.close()


def start(env, hostname: str, **kwargs) -> Launcher:
    launcher = Launcher(env.config_path, hostname=hostname, tuning=FAST,
                        adapter_factory=lambda provider: FakeAdapter(provider, env.cloud),
                        **kwargs)
    launcher.start()
    env.launchers.append(launcher)
    return launcher


def samples(launcher: Launcher) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, from the launcher's exposition."""
    body, content_type = launcher.metrics.exposition()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(launcher: Launcher, name: str, **labels) -> float:
    return samples(launcher).get((name, tuple(sorted(labels.items()))), 0.0)


# -- plain functions -----------------------------------------------------------------------

def test_statsd_is_enabled_by_either_variable_as_nodepool_reads_them():
    assert statsd_from_environ({}) is None
    assert statsd_from_environ({"STATSD_HOST": ""}) is None
    assert statsd_from_environ({"STATSD_HOST": "stats.example"}) == {"host": "stats.example"}
    assert statsd_from_environ({"STATSD_PORT": "9125"}) == {"port": 9125}
    with pytest.raises(ValueError, match="STATSD_PORT: expected a port number, got 'x'"):
        statsd_from_environ({"STATSD_PORT": "x"})


def test_a_bad_statsd_port_leaves_prometheus_only(caplog):
    metrics = Metrics.from_environ({"STATSD_PORT": "nope"})
    assert metrics.statsd is None and metrics.enabled
    assert "statsd disabled: STATSD_PORT" in caplog.text


def test_the_daemon_refuses_a_bad_statsd_port_with_a_clear_message(env):
    env.write_config()
    proc = subprocess.run([sys.executable, "-m", "nodepool.launcher.main", "-c",
                           env.config_path, "-f"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "STATSD_PORT": "eighty"})
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("nodepool-launcher: invalid environment: STATSD_PORT: "
                                   "expected a port number, got 'eighty'")


def test_user_supplied_name_parts_are_sanitised_as_nodepool_does():
    assert normalize_statsd_name("zuul.example.org:tenant") == "zuul_example_org_tenant"
    assert normalize_statsd_name("a|b@c d") == "a_b_c_d"


def test_two_metrics_objects_do_not_share_series():
    a, b = Metrics(), Metrics()
    a.loop_pass("p", 0.001)
    assert b"nodepool_provider_loop_pass_seconds_count" not in b.exposition()[0]
    assert b'nodepool_provider_loop_pass_seconds_count{provider="p"} 1.0' in a.exposition()[0]


# -- statsd from a running launcher --------------------------------------------------------

def test_launch_stats_carry_nodepool_names_and_the_sanitised_requestor(env, statsd):
    env.write_config(extra=TENANTS)
    start(env, "nl01")
    rq = Requestor(env.kazoo, name="zuul.example.org:main")
    req = rq.wait(rq.submit(["small"]))
    assert req["state"] == "fulfilled"
    for key in ("nodepool.launch.ready", "nodepool.launch.provider.fake1.ready",
                "nodepool.launch.requestor.zuul_example_org_main.ready"):
        statsd.wait(key, "c")
        timer = statsd.wait(key, "ms")[0]
        assert float(timer.value) >= 0
    az = rq.node(req["nodes"][0])["az"]
    assert az   # the fake cloud's servers are in AZ "nova"
    statsd.wait(f"nodepool.launch.provider.fake1.{normalize_statsd_name(az)}.ready", "c")


def test_quota_refusal_counts_as_error_quota(env, statsd):
    env.write_config()
    env.cloud.fail_next_create("quota")
    start(env, "nl01")
    rq = env.requestor
    assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"
    statsd.wait("nodepool.launch.error.quota", "c")
    statsd.wait("nodepool.launch.provider.fake1.error.quota", "ms")


def test_gauges_come_from_the_min_ready_owner_only(env, statsd):
    env.write_config(extra=TENANTS)
    first = start(env, "nl01")
    wait_for(lambda: first.min_ready_owner, what="nl01 owns min-ready")
    second = start(env, "nl02")
    rq = env.requestor
    assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"
    # Every state, provider and label starts at 0, as Nodepool does.
    for state in NodeState:
        statsd.wait(f"nodepool.nodes.{state.value}", "g")
        statsd.wait(f"nodepool.label.other.nodes.{state.value}", "g")
        statsd.wait(f"nodepool.provider.fake1.nodes.{state.value}", "g")
    statsd.wait("nodepool.provider.fake1.max_servers", "g")
    statsd.wait("nodepool.provider.fake1.pool.main.addressable_requests", "g")
    assert statsd.wait("nodepool.tenant_limits.tenant_a.instances", "g")[0].value == "5"
    assert statsd.wait("nodepool.tenant_limits.tenant_a.cores", "g")[0].value == "40"
    # Nodepool's key for max-volume-gb (setTenantResourceLimits): volume-gb.
    assert statsd.wait("nodepool.tenant_limits.tenant_a.volume-gb", "g")[0].value == "500"
    wait_for(lambda: any(s.value == "1" for s in statsd.seen("nodepool.nodes.ready", "g")),
             what="the ready node counted")
    # The other launcher reports too (quota used), and sends no gauge meanwhile.
    reports = second.stats.reports
    wait_for(lambda: second.stats.reports >= reports + 3, what="nl02 reports three times")
    senders = {s.sender for s in statsd.seen(kind="g")}
    assert len(senders) == 1
    assert value(second, "nodepool_nodes", state="ready") == 0.0   # not its to report
    assert value(first, "nodepool_nodes", state="ready") >= 1.0


def test_a_leak_deleted_is_counted_by_kind(env, statsd):
    env.write_config()
    launcher = start(env, "nl01")
    env.cloud.add_server({TAG_PROVIDER: "fake1", TAG_POOL: "main", TAG_NODE: "0000999999"})
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider started")
    worker.request_leak_scan()
    wait_for(lambda: worker.leaks.suspects, what="first scan saw the leak")
    worker.request_leak_scan()
    assert statsd.wait("nodepool.provider.fake1.leaked.instances", "c")[0].value == "1"
    assert value(launcher, "nodepool_leaked_resources_total", provider="fake1",
                 kind="instances") == 1.0


# -- Prometheus ----------------------------------------------------------------------------

def test_prometheus_histograms_after_hand_overs_and_a_deletion(env):
    env.write_config(min_ready=1)
    launcher = start(env, "nl01")
    rq = env.requestor
    wait_for(lambda: any(n.state == NodeState.READY for n in launcher.ctx.cache.nodes()),
             what="a ready spare")
    nodes = rq.request_and_use(["small"])            # handed over from the ready spare
    req = rq.wait(rq.submit(["large"]))               # launched for the request
    assert req["state"] == "fulfilled"
    wait_for(lambda: rq.node(nodes[0]) is None, what="the used node deleted")
    wait_for(lambda: value(launcher, "nodepool_node_used_to_deleted_seconds_count",
                           provider="fake1", label="small") == 1.0, what="used-to-deleted")
    assert value(launcher, "nodepool_request_handover_seconds_count", label="small",
                 from_ready="true") == 1.0
    assert value(launcher, "nodepool_request_handover_seconds_count", label="large",
                 from_ready="false") == 1.0
    az = rq.node(req["nodes"][0])["az"] or ""
    assert value(launcher, "nodepool_launches_total", provider="fake1", az=az,
                 label="large", result="ready") == 1.0
    assert value(launcher, "nodepool_launch_duration_seconds_count", provider="fake1",
                 label="large", result="ready") == 1.0
    assert value(launcher, "nodepool_provider_loop_pass_seconds_count", provider="fake1") > 0
    assert value(launcher, "nodepool_zookeeper_round_trip_seconds_count", op="create_node") > 0
    wait_for(lambda: value(launcher, "nodepool_zookeeper_round_trip_seconds_count",
                           op="probe") > 0, what="a session probe timed")
    wait_for(lambda: value(launcher, "nodepool_provider_quota_used", provider="fake1",
                           resource="instances") >= 1, what="quota used reported")
    wait_for(lambda: value(launcher, "nodepool_label_nodes", label="small",
                           state="ready") >= 0 and
             ("nodepool_label_nodes", (("label", "small"), ("state", "ready")))
             in samples(launcher), what="the cluster gauges")


def test_metrics_off_costs_nothing_and_serves_nothing(env, statsd):
    env.write_config()
    launcher = start(env, "nl01", metrics=NullMetrics())
    rq = env.requestor
    assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"
    assert launcher.stats is None
    assert launcher.metrics.exposition()[0] == b""
    assert launcher.metrics.statsd is None and launcher.ctx.metrics is launcher.metrics
