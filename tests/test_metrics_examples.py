"""etc/statsd_exporter.yaml and etc/prometheus-alerts.yaml: valid YAML, and they name what
the launcher sends and serves."""

from __future__ import annotations

import re
import types
from pathlib import Path

import yaml

from nodepool.metrics import CLUSTER_GAUGES, Metrics

ETC = Path(__file__).resolve().parent.parent / "etc"

# What a launcher sends (tests/test_metrics*.py see each on a real socket), with its type.
STATSD = [
    ("nodepool.nodes.ready", "gauge"), ("nodepool.provider.rax-dfw.nodes.in-use", "gauge"),
    ("nodepool.label.debian-bookworm.nodes.deleting", "gauge"),
    ("nodepool.provider.rax-dfw.pool.main.addressable_requests", "gauge"),
    ("nodepool.provider.rax-dfw.max_servers", "gauge"),
    ("nodepool.tenant_limits.tenant_a.cores", "gauge"),
    ("nodepool.provider.rax-dfw.leaked.instances", "counter"),
    ("nodepool.launch.provider.rax-dfw.ready", "counter"),
    ("nodepool.launch.provider.rax-dfw.error.quota", "observer"),
    ("nodepool.launch.provider.rax-dfw.nova.ready", "observer"),
    ("nodepool.launch.provider.rax-dfw.nova.error.zksession", "counter"),
    ("nodepool.launch.requestor.zuul_example_org.error.unknown", "counter"),
    ("nodepool.task.rax-dfw.compute.POST.compute_servers.202", "observer"),
    ("nodepool.task.rax-dfw.compute.GET.servers_detail.200", "counter"),
    ("nodepool.task.rax-dfw.network.GET.network_ports.attempted", "counter"),
]


def load(name: str):
    with open(ETC / name) as f:
        return yaml.safe_load(f)


def first_match(mappings: list[dict], name: str, kind: str) -> dict | None:
    for m in mappings:
        if m.get("match_metric_type", kind) == kind and re.fullmatch(m["match"], name):
            return m
    return None


def test_statsd_exporter_mapping_gives_every_name_a_labelled_series():
    config = load("statsd_exporter.yaml")
    assert config["defaults"]["match_type"] == "regex"
    mappings = config["mappings"]
    for m in mappings:
        assert set(m) <= {"match", "match_metric_type", "name", "labels", "action",
                          "histogram_options"}, m
        re.compile(m["match"])
    for name, kind in STATSD:
        m = first_match(mappings, name, kind)
        assert m is not None, f"{name} ({kind}) matches no mapping"
        groups = re.fullmatch(m["match"], name).groups()
        assert all(int(v[1:]) <= len(groups) for v in (m.get("labels") or {}).values())
        assert re.fullmatch(r"nodepool_[a-z_]+", m["name"])
    aggregate = first_match(mappings, "nodepool.launch.error.quota", "counter")
    assert aggregate["action"] == "drop"
    # the AZ series never takes a per-provider name, nor the reverse
    assert first_match(mappings, "nodepool.launch.provider.p.nova.ready",
                       "counter")["labels"] == {"provider": "$1", "az": "$2", "result": "$3"}
    assert first_match(mappings, "nodepool.launch.provider.p.error.quota",
                       "counter")["labels"] == {"provider": "$1", "result": "$2"}


def served_names() -> set[str]:
    metrics = Metrics()
    node = types.SimpleNamespace(provider="p", az="nova", type=["l"], created_time=1.0,
                                 requestor=None)
    metrics.launched(node, "ready", 2.0)
    metrics.leaked("p", "server")
    body = metrics.exposition()[0].decode()
    names = set(re.findall(r"^# TYPE (\S+)", body, re.M))
    names |= {f"{n}_total" for n in names}
    return names | set(CLUSTER_GAUGES) | {"nodepool_provider_quota_used",
                                          "nodepool_provider_quota_limit"}


def test_alert_rules_are_valid_and_use_served_series():
    rules = [r for g in load("prometheus-alerts.yaml")["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == {"NodepoolNoReadyNode", "NodepoolLaunchErrorRate",
                                           "NodepoolLeaksFound"}
    served = served_names()
    for rule in rules:
        assert rule["expr"].strip() and rule["annotations"]["summary"]
        for name in re.findall(r"\bnodepool_[a-z_]+", rule["expr"]):
            assert name in served, f"{rule['alert']}: {name} is not a series we serve"
