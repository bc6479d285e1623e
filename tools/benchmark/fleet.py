"""Fleet scale, simulated here: many in-memory providers, four launchers, a 3-server ensemble.

Run through `tools/bench-fleet [--sizes 10x200,25x400,50x200] [--quick]`. For each size
(PROVIDERSxNODES: providers of that many ready nodes each) it starts a fresh 3-server
ZooKeeper ensemble, prefills the nodes, starts the launchers and runs fleet_run.py's
phases; it prints one JSON line per size on stdout, then a table (with `uptime`) on
stderr. Everything it starts it stops by pid, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zkensemble import ZooKeeperEnsemble  # tools/, on sys.path (scenarios puts it there)

from benchmark.fleet_run import FleetRun, Options
from benchmark.fleet_stack import Size
from benchmark.scenarios import REPO, dig, fmt_value, stop_on_signals

DEFAULT_SIZES = "10x200,25x400,50x200"
QUICK_SIZE = "4x50"
QUICK_RATE = 4.0      # what 4 providers sustain on 2 shared cores (doc/performance.md)
CHROOT = "/fleet"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime: unavailable"


def run_size(size: Size, opts: Options, workdir: Path, ensemble: Any = None,
             chroot: str = CHROOT) -> dict[str, Any]:
    """One size; on a fresh ensemble of its own unless one (started) is given."""
    workdir.mkdir(parents=True, exist_ok=True)
    own = ensemble is None
    if own:
        ensemble = ZooKeeperEnsemble(workdir / "zookeeper", size=3, tls=True).start()
    t0 = time.monotonic()
    load_before = os.getloadavg()
    try:
        report = FleetRun(size, opts, ensemble, chroot, workdir).execute()
    finally:
        if own:
            ensemble.stop()
    report["run_s"] = round(time.monotonic() - t0, 1)
    report["loadavg_before"] = [round(x, 2) for x in load_before]
    report["uptime_after"] = uptime()
    return report



def table_rows(reports: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for r in reports:
        launchers = dig(r, "steady", "launchers") or {}
        cpu = [v.get("cpu_percent") for v in launchers.values() if v.get("cpu_percent") is not None]
        per_req = [v.get("cpu_ms_per_request") for v in launchers.values()
                   if v.get("cpu_ms_per_request") is not None]
        rss = [v for v in (r.get("rss_mb") or {}).values() if v is not None]
        req = r.get("requests") or {}
        rows.append((
            r.get("size", "?"), fmt_value(r.get("nodes")), fmt_value(dig(r, "zookeeper", "znodes")),
            fmt_value(dig(r, "steady", "zookeeper", "data_size_mb")),
            fmt_value(dig(r, "steady", "latency_ms", "p50")), fmt_value(dig(r, "steady", "latency_ms", "p99")),
            f"{req.get('fulfilled', '-')}/{req.get('made', '-')}",
            fmt_value(dig(r, "takeover", "leases_taken_s"), 2), fmt_value(dig(r, "takeover", "served_s"), 2),
            fmt_value(dig(r, "rebalance", "rebalanced_s"), 2), fmt_value(dig(r, "rebalance", "after_ready_s"), 2),
            f"{min(rss):.0f}-{max(rss):.0f}" if rss else "-",
            f"{min(cpu):.0f}-{max(cpu):.0f}" if cpu else "-",
            fmt_value(sum(per_req), 1) if per_req else "-",
            fmt_value(dig(r, "steady", "zk_requests_per_handover")),
            fmt_value(dig(r, "steady", "zookeeper", "watches")),
            fmt_value(dig(r, "steady", "zk_cpu_percent")),
            "ok" if not r.get("ownership_problems") and not r.get("error") else "PROBLEM"))
    return rows


COLUMNS = ("size", "nodes", "znodes", "zk MB", "p50 ms", "p99 ms", "served", "takeover s",
           "served s", "rebal s", "after ready", "RSS MB", "cpu %", "cpu ms/req", "zk req/ho",
           "watches", "zk cpu%", "owners")


def print_table(reports: list[dict[str, Any]], out: Any = sys.stderr) -> None:
    rows = table_rows(reports)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)), file=out)
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), file=out)
    print("(p50/p99: hand-over in the steady window; takeover/served s: after SIGKILL, until "
          "the leases are held / a request on each is fulfilled; rebal s: from the join's "
          "start until the spread holds; RSS: peak per live launcher at the end; cpu %: per "
          "launcher in the steady window; cpu ms/req: all launchers together; zk req/ho: "
          "requests the members received per hand-over, less the tool's own)", file=out)
    for r in reports:
        for problem in r.get("ownership_problems") or []:
            print(f"  {r.get('size')}: {problem}", file=out)
        if r.get("error"):
            print(f"  {r.get('size')}: ERROR {r['error']}", file=out)
    print(f"# {uptime()}", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help=f"comma-separated PROVIDERSxNODES (default {DEFAULT_SIZES})")
    p.add_argument("--quick", action="store_true",
                   help=f"one small size ({QUICK_SIZE}) at most {QUICK_RATE:g} requests/s, a "
                        "short window, 4 s session timeout")
    p.add_argument("--launchers", type=int, default=4, help="launchers at the start (default 4)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="requests per second over all providers (default 1: at 50 providers "
                        "this machine sustains little more; doc/performance.md)")
    p.add_argument("--steady", type=float, default=60.0, help="steady window, seconds (60)")
    p.add_argument("--warmup", type=float, default=5.0, help="stream before it, seconds (5)")
    p.add_argument("--session-timeout", type=float, default=10.0,
                   help="zookeeper-timeout of the launchers, seconds (default 10, Nodepool's)")
    p.add_argument("--metrics", choices=("on", "off"), default="off",
                   help="the launchers' metrics (default off)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the first launcher over the steady window (pip install py-spy)")
    p.add_argument("--count-ops", action="store_true",
                   help="the launchers count their ZooKeeper requests by type and path "
                        "(in the report: zk_ops; a killed launcher's are lost)")
    p.add_argument("--keep", metavar="DIR", help="keep logs, configs and profiles in DIR")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steady, args.warmup = QUICK_SIZE, 10.0, 3.0
        args.rate = QUICK_RATE if args.rate == 1.0 else args.rate
        args.session_timeout = 4.0
    try:
        args.sizes = [Size.parse(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as e:
        p.error(str(e))
    if args.launchers < 2:
        p.error("--launchers: at least 2 (one is killed)")
    if args.rate <= 0:
        p.error("--rate must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.profile and not Path(py_spy).exists():
        print(f"bench-fleet: --profile needs py-spy: {Path(sys.executable).parent / 'pip'} "
              "install py-spy", file=sys.stderr)
        return 2
    opts = Options(launchers=args.launchers, rate=args.rate, warmup=args.warmup,
                   steady=args.steady, session_timeout=args.session_timeout,
                   metrics=args.metrics, profile=args.profile, py_spy=py_spy,
                   count_ops=args.count_ops)
    keep = Path(args.keep).resolve() if args.keep else None
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="bench-fleet-")
    workdir = keep or Path(tmp.name)
    reports = []
    print(f"# bench-fleet: {os.cpu_count()} CPUs; {REPO}; work dir {workdir}; {uptime()}",
          file=sys.stderr, flush=True)
    try:
        for size in args.sizes:
            print(f"# {size.label}: {size.providers} providers x {size.nodes} nodes, "
                  f"{opts.launchers} launchers; {uptime()}", file=sys.stderr, flush=True)
            try:
                report = run_size(size, opts, workdir / size.label)
            except (RuntimeError, OSError) as e:
                report = {"size": size.label, "error": str(e)}
            reports.append(report)
            print(json.dumps(report), flush=True)
    except KeyboardInterrupt:
        print("bench-fleet: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        if tmp is not None:
            tmp.cleanup()
    print_table(reports)
    bad = any(r.get("error") or r.get("ownership_problems") for r in reports)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
