"""`bench-scenarios --reference nodepool`: the scenarios Nodepool 11 can run, and the side-by-side table.

Pure parts only (scenarios, configs, figures, table, argument checks); `refrun.py` starts things.
Both launchers read the same Nodepool-format config (other chroot), serve the same request
stream (the benchmark's requestor speaks Nodepool's ZooKeeper format) and run against the same
kind of cloud: real sshd hosts for the static driver, `tools/ossim` for the OpenStack driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

NODEPOOL_VERSION = "11.0.0"
# Nodepool 11.0.0's own pins are loose: without setuptools<81 it fails to import pkg_resources,
# without cachetools its OpenStack driver fails to import; openstacksdk after 4.18 raises for a
# cloud without block storage, which Nodepool 11 does not catch (LOCAL_SERVICES.md).
NODEPOOL_REQUIREMENTS = (f"nodepool=={NODEPOOL_VERSION}", "setuptools<81", "cachetools",
                         "openstacksdk==4.18.0")
DEFAULT_REQUESTS = 30
SIDES = ("ours", "nodepool")
LABEL = "small"
OSSIM_CLOUD = "benchsim"


@dataclasses.dataclass(frozen=True)
class RefScenario:
    name: str
    title: str
    cloud: str                  # "static" (sshd hosts) or "ossim"
    concurrency: int
    min_ready: int = 0
    hosts: int = 4              # static: real sshd hosts, one slot each
    max_servers: int = 50       # ossim
    # ossim: seconds BUILD -> ACTIVE. Not 0 for Nodepool: at 0 the simulator answers the GET
    # that follows the create with ACTIVE (a real Nova never does), and Nodepool, whose server
    # list is a lazily refreshed cache that lacks the new server yet, takes that un-expanded
    # view as the node: no interface_ip, and the launch fails at its keyscan.
    boot_delay: float = 1.0

    def bench_args(self, requests: int) -> list[str]:
        """The benchmark's load arguments for `requests` measured requests."""
        ready = self.hosts if self.cloud == "static" else self.min_ready
        warmup = max(2, min(5, requests // 10))
        return ["--concurrency", str(self.concurrency), "--requests", str(requests),
                "--warmup", str(warmup), "--timeout", "120",
                *(["--wait-ready", str(ready), "--wait-ready-timeout", "120"] if ready else [])]


REF_SCENARIOS = [
    RefScenario("static-c1", "static driver, 4 real sshd hosts (keyscanned), concurrency 1",
                "static", 1),
    RefScenario("ossim-ready-c1", "OpenStack simulator (1 s boot), 4 ready nodes (min-ready), "
                "concurrency 1", "ossim", 1, min_ready=4),
    RefScenario("ossim", "OpenStack simulator over HTTP (1 s boot), cold launches, concurrency 4",
                "ossim", 4),
]

ZK = """\
zookeeper-servers:
  - host: {host}
    port: {port}
    chroot: {chroot}
zookeeper-timeout: 30
{tls}labels:
  - name: {label}
    min-ready: {min_ready}
"""
TLS = """\
zookeeper-tls:
  cert: {cert}
  key: {key}
  ca: {ca}
"""
STATIC = """\
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
"""
STATIC_HOST = """\
          - name: {address}
            labels: [{label}]
            connection-port: {port}
            timeout: 30
"""
OSSIM = """\
providers:
  - name: sim
    cloud: {cloud}
    region-name: RegionOne
    rate: 0
    boot-timeout: 60
    launch-timeout: 600
    cloud-images:
      - name: cirros
        image-name: cirros-0.6.2
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        auto-floating-ip: false
        labels:
          - name: {label}
            cloud-image: cirros
            flavor-name: m1.tiny
"""
# The same file-only INFO logging for both launchers (Nodepool's -f default logs DEBUG to stdout).
LOGGING = """\
version: 1
formatters:
  plain: {{format: "%(asctime)s %(levelname)s %(name)s: %(message)s"}}
handlers:
  file: {{class: logging.FileHandler, filename: {path}, formatter: plain}}
root: {{level: INFO, handlers: [file]}}
disable_existing_loggers: false
"""


def nodepool_config(sc: RefScenario, zk_host: str, zk_port: int, chroot: str,
                    tls: tuple[str, str, str] | None,
                    hosts: list[tuple[str, int]] = ()) -> str:
    """The nodepool.yaml both launchers read: `tls` is (cert, key, ca) or None for the plain
    port; `hosts` (address, port) of the sshd hosts for a static scenario. (The simulator's
    servers have private addresses only: its clouds.yaml says `private: true`, which is what
    makes Nodepool use them.)"""
    tls_text = TLS.format(cert=tls[0], key=tls[1], ca=tls[2]) if tls else ""
    text = ZK.format(host=zk_host, port=zk_port, chroot=chroot, tls=tls_text, label=LABEL,
                     min_ready=sc.min_ready)
    if sc.cloud == "static":
        if not hosts:
            raise ValueError(f"scenario {sc.name}: a static provider needs hosts")
        return text + STATIC + "".join(STATIC_HOST.format(address=a, port=p, label=LABEL)
                                       for a, p in hosts)
    return text + OSSIM.format(cloud=OSSIM_CLOUD, max_servers=sc.max_servers, label=LABEL)


def logging_config(path: str) -> str:
    return LOGGING.format(path=path)


def _get(report: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(report, dict):
            return None
        report = report.get(key)
    return report


# (label, getter, digits): the figures printed for both sides.
FIGURES: list[tuple[str, Callable[[dict], Any], int]] = [
    ("hand-over p50 ms", lambda r: _get(r, "latency_ms", "p50"), 1),
    ("hand-over p95 ms", lambda r: _get(r, "latency_ms", "p95"), 1),
    ("hand-over p99 ms", lambda r: _get(r, "latency_ms", "p99"), 1),
    ("throughput req/s", lambda r: r.get("throughput_rps"), 2),
    ("launcher CPU ms/request", lambda r: _get(r, "launcher", "cpu_ms_per_request"), 1),
    ("launcher peak RSS MB", lambda r: _get(r, "launcher", "peak_rss_mb"), 1),
    ("launcher ZK requests/request",
     lambda r: _get(r, "zookeeper", "launcher_requests_per_request"), 1),
    ("used -> deleting p50 ms", lambda r: _get(r, "deletion_started_ms", "p50"), 1),
    ("failed requests", lambda r: r.get("failures"), 0),
]


def ratio(ours: Any, theirs: Any) -> float | None:
    """Nodepool's figure divided by ours (how many times ours it is); None without both."""
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
        return None
    if ours == 0:
        return None
    return theirs / ours


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) or digits:
        return f"{float(value):,.{digits}f}"
    return str(value)


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x" if value < 10 else \
        f"{value:.1f}x"


def comparison_rows(results: dict[str, dict[str, dict]]) -> list[tuple[str, str, str, str, str]]:
    """(scenario, figure, ours, nodepool, ratio) for every scenario in `results`
    ({scenario: {"ours": report, "nodepool": report}}), in the order given."""
    rows = []
    for name, sides in results.items():
        ours, theirs = sides.get("ours") or {}, sides.get("nodepool") or {}
        for label, getter, digits in FIGURES:
            a, b = getter(ours), getter(theirs)
            rows.append((name, label, _fmt(a, digits), _fmt(b, digits), _fmt_ratio(ratio(a, b))))
        for side in SIDES:
            error = (sides.get(side) or {}).get("error")
            if error:
                rows.append((name, f"{side}: ERROR", str(error)[:200], "", ""))
    return rows


def format_table(results: dict[str, dict[str, dict]], markdown: bool = False) -> str:
    """The side-by-side table; the ratio is Nodepool's figure divided by ours."""
    head = ("scenario", "figure", "ours", f"Nodepool {NODEPOOL_VERSION}", "ratio (Nodepool/ours)")
    rows = comparison_rows(results)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) if rows else len(head[i])
              for i in range(len(head))]
    out = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(head, widths)))]
    for row in rows:
        out.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                             for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(out) + "\n"


def check_args(args: Any) -> str | None:
    """An error message for arguments the reference mode cannot use, else None; sets
    `args.ref_scenarios` (and `args.requests` to its default when not given)."""
    if args.reference is None:
        if args.requests is not None:
            return "--requests needs --reference (the scenarios' own sizes are fixed)"
        return None
    if args.requests is None:
        args.requests = DEFAULT_REQUESTS
    if args.requests < 1:
        return f"--requests must be at least 1, got {args.requests}"
    names = [s.name for s in REF_SCENARIOS]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        return (f"--reference runs only the scenarios Nodepool can run; unknown: "
                f"{', '.join(unknown)}; known: {', '.join(names)}")
    if args.profile:
        return "--profile is not available with --reference"
    args.ref_scenarios = [s for s in REF_SCENARIOS if not args.only or s.name in args.only]
    return None
