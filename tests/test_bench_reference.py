"""`bench-scenarios --reference nodepool`: its arguments, configs and side-by-side table.

The reference run itself installs Nodepool and takes minutes, too slow for the suite:
these pin its pure parts (doc/performance.md has the figures of a real run).
"""

from __future__ import annotations

import pytest
import yaml
from benchmark import reference, scenarios

from nodepool.config import load_config

TLS = ("/tls/client.pem", "/tls/client.key", "/tls/ca.pem")


def _args(*argv: str):
    return scenarios.parse_args(list(argv))


def test_reference_mode_defaults_to_short_runs_of_every_reference_scenario() -> None:
    args = _args("--reference", "nodepool")
    assert args.requests == reference.DEFAULT_REQUESTS == 30
    assert [s.name for s in args.ref_scenarios] == ["static-c1", "ossim-ready-c1", "ossim"]


def test_only_and_requests_choose_what_the_reference_mode_runs() -> None:
    args = _args("--reference", "nodepool", "--only", "ossim", "--requests", "7")
    assert args.requests == 7
    assert [s.name for s in args.ref_scenarios] == ["ossim"]
    assert "--requests" in (bench := args.ref_scenarios[0].bench_args(7))
    assert bench[bench.index("--requests") + 1] == "7"


@pytest.mark.parametrize("argv, message", [
    (("--requests", "5"), "--requests needs --reference"),
    (("--reference", "nodepool", "--only", "ready-c50"), "unknown: ready-c50"),
    (("--reference", "nodepool", "--requests", "0"), "at least 1"),
    (("--reference", "nodepool", "--profile", "ossim"), "--profile is not available"),
])
def test_arguments_the_reference_mode_cannot_use_are_refused_by_name(
        argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _args(*argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_without_reference_the_scenarios_run_as_before() -> None:
    args = _args("--only", "ready-c1")
    assert args.reference is None and args.requests is None and args.only == ["ready-c1"]


def test_ready_scenarios_wait_for_their_ready_nodes_first() -> None:
    by_name = {s.name: s for s in reference.REF_SCENARIOS}
    static = by_name["static-c1"].bench_args(30)
    assert static[static.index("--wait-ready") + 1] == "4"
    assert "--wait-ready" not in by_name["ossim"].bench_args(30)


@pytest.mark.parametrize("name", [s.name for s in reference.REF_SCENARIOS])
def test_the_shared_nodepool_config_loads_in_this_launcher(name, tmp_path) -> None:
    sc = next(s for s in reference.REF_SCENARIOS if s.name == name)
    hosts = [("127.0.0.9", 2022), ("127.0.0.10", 2023)]
    text = reference.nodepool_config(sc, "127.0.0.1", 2281, f"/ref-{name}", TLS, hosts)
    path = tmp_path / "nodepool.yaml"
    path.write_text(text)
    config = load_config(str(path))
    data = yaml.safe_load(text)
    assert data["zookeeper-tls"] == {"cert": TLS[0], "key": TLS[1], "ca": TLS[2]}
    assert data["zookeeper-servers"][0]["chroot"] == f"/ref-{name}"
    assert data["labels"] == [{"name": "small", "min-ready": sc.min_ready}]
    assert config is not None
    if sc.cloud == "static":
        nodes = data["providers"][0]["pools"][0]["nodes"]
        assert [(n["name"], n["connection-port"]) for n in nodes] == hosts


def test_the_simulator_pool_asks_for_no_floating_ip_and_no_internal_ip_key() -> None:
    """Both launchers read one file: the private address comes from clouds.yaml's `private`."""
    sc = next(s for s in reference.REF_SCENARIOS if s.name == "ossim")
    pool = yaml.safe_load(reference.nodepool_config(sc, "h", 1, "/x", None))["providers"][0][
        "pools"][0]
    assert pool["auto-floating-ip"] is False and "use-internal-ip" not in pool


def test_the_plain_port_config_has_no_tls_and_a_static_one_needs_hosts() -> None:
    by_name = {s.name: s for s in reference.REF_SCENARIOS}
    text = reference.nodepool_config(by_name["ossim"], "127.0.0.1", 2181, "/x", None)
    assert "zookeeper-tls" not in yaml.safe_load(text)
    with pytest.raises(ValueError, match="static-c1: a static provider needs hosts"):
        reference.nodepool_config(by_name["static-c1"], "127.0.0.1", 2181, "/x", None)


def test_the_logging_config_is_a_dict_config_to_the_given_file() -> None:
    data = yaml.safe_load(reference.logging_config("/tmp/x/launcher.log"))
    assert data["version"] == 1
    assert data["handlers"]["file"]["filename"] == "/tmp/x/launcher.log"
    assert data["root"]["level"] == "INFO"


def test_ratio_is_nodepools_figure_over_ours_and_empty_without_both() -> None:
    assert reference.ratio(4.0, 1000.0) == 250.0
    assert reference.ratio(None, 3.0) is None
    assert reference.ratio(2.0, None) is None
    assert reference.ratio(0, 3.0) is None


def _report(p50: float, rps: float, cpu: float | None) -> dict:
    return {"latency_ms": {"p50": p50, "p95": p50 * 2, "p99": p50 * 3}, "throughput_rps": rps,
            "launcher": {"cpu_ms_per_request": cpu, "peak_rss_mb": 80.0}, "failures": 0}


def test_the_table_prints_each_figure_for_both_and_the_ratio() -> None:
    results = {"static-c1": {"ours": _report(4.0, 50.0, 3.0),
                             "nodepool": _report(1030.0, 0.9, 40.0)}}
    rows = reference.comparison_rows(results)
    assert ("static-c1", "hand-over p50 ms", "4.0", "1,030.0", "258x") in rows
    assert ("static-c1", "throughput req/s", "50.00", "0.90", "0.02x") in rows
    assert ("static-c1", "launcher CPU ms/request", "3.0", "40.0", "13.3x") in rows
    assert ("static-c1", "failed requests", "0", "0", "-") in rows
    text = reference.format_table(results)
    head, *lines = text.splitlines()
    assert "Nodepool 11.0.0" in head and "ratio (Nodepool/ours)" in head
    assert len(lines) == len(reference.FIGURES)
    assert len({len(line) for line in [head, *lines]}) == 1   # aligned columns


def test_a_missing_figure_or_a_failed_side_shows_as_such() -> None:
    results = {"ossim": {"ours": _report(150.0, 20.0, None),
                         "nodepool": {"error": "launcher exited with 1 (see /tmp/x)"}}}
    rows = reference.comparison_rows(results)
    assert ("ossim", "hand-over p50 ms", "150.0", "-", "-") in rows
    assert ("ossim", "launcher CPU ms/request", "-", "-", "-") in rows
    assert ("ossim", "nodepool: ERROR", "launcher exited with 1 (see /tmp/x)", "", "") in rows


def test_the_markdown_table_has_a_header_and_one_line_per_row() -> None:
    results = {"ossim": {"ours": _report(150.0, 20.0, 40.0), "nodepool": _report(4500.0, 0.8,
                                                                                 90.0)}}
    lines = reference.format_table(results, markdown=True).splitlines()
    assert lines[0].startswith("| scenario | figure | ours | Nodepool 11.0.0 |")
    assert lines[1] == "|---|---|---|---|---|"
    assert "| ossim | hand-over p50 ms | 150.0 | 4,500.0 | 30.0x |" in lines
    assert len(lines) == 2 + len(reference.FIGURES)
