"""Every benchmark scenario in one command: a fresh ZooKeeper, a launcher process per scenario.

Run through `tools/bench-scenarios [--quick] [--only NAME,...] [--profile NAME,...]`. Prints one
JSON line per scenario (the benchmark's report plus `scenario`, `launcher_start`), then a table
of the results against the targets. Everything it starts it stops by pid, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tools"))
import zookeeper  # noqa: E402  (tools/zookeeper.py: tools/ is not a package)

from benchmark import reference  # noqa: E402
from benchmark.cli import SETUP_DONE  # noqa: E402
from benchmark.measure import threads_cpu  # noqa: E402

LAUNCHER_READY_TIMEOUT = 180.0   # the scale scenario writes 10,000 nodes first
STOP_TIMEOUT = 30.0
DEFAULT_RATE = 200.0            # the concurrency-50 throughput when that scenario did not run
# A fresh JVM spends more CPU compiling ZooKeeper (C1/C2 compiler threads) than serving
# the first minutes of load: on 2 cores that core is taken from the launcher. Warm-up
# rounds (not reported) run until a round's compiling is below this share of its time.
WARMUP_JIT_SHARE = 0.10
WARMUP_MAX_ROUNDS = 6
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


@dataclasses.dataclass
class Scenario:
    name: str
    title: str
    launcher: Callable[[bool], list[str]]       # bench_launcher.py arguments (quick?)
    bench: Callable[[bool, dict], list[str]]    # benchmark arguments (quick?, earlier results)
    timeout: float = 600.0                      # the whole benchmark run, seconds


def _ready(n: int) -> list[str]:
    return ["--prefill", str(n), "--min-ready", str(n)]


def _open_rate(results: dict, times: float) -> float:
    """`times` what the launcher sustained at concurrency 50 (2: past its capacity)."""
    rps = (results.get("ready-c50") or {}).get("throughput_rps")
    return round(times * (rps or DEFAULT_RATE), 1)


SCENARIOS = [
    Scenario("ready-c1", "(1) ready nodes, concurrency 1",
             lambda q: _ready(200 if q else 400),
             lambda q, r: ["--concurrency", "1", "--requests", "100" if q else "300",
                           "--warmup", "20"]),
    Scenario("spares-c1", "(1) ready nodes, concurrency 1, no replacements (min-ready 0)",
             lambda q: ["--prefill", "200" if q else "400", "--min-ready", "0"],
             lambda q, r: ["--concurrency", "1", "--requests", "100" if q else "300",
                           "--warmup", "20"]),
    Scenario("ready-c50", "(1) ready nodes, concurrency 50",
             lambda q: _ready(400 if q else 800),
             lambda q, r: ["--concurrency", "50", "--requests", "300" if q else "1500",
                           "--warmup", "20"]),
    Scenario("spares-c50", "(1) ready nodes, concurrency 50, no replacements (min-ready 0)",
             lambda q: ["--prefill", "400" if q else "1600", "--min-ready", "0"],
             lambda q, r: ["--concurrency", "50", "--requests", "300" if q else "1500",
                           "--warmup", "20"]),
    Scenario("open-half", "(1) open loop at half the concurrency-50 throughput, ready nodes",
             lambda q: _ready(400 if q else 800),
             lambda q, r: ["--rate", str(_open_rate(r, 0.5)), "--requests",
                           "300" if q else "1000", "--poisson", "--warmup", "20"]),
    Scenario("cold-c1", "(2) cold launches, boot 0 s, concurrency 1",
             lambda q: ["--min-ready", "0"],
             lambda q, r: ["--concurrency", "1", "--requests", "30" if q else "100",
                           "--warmup", "5"]),
    Scenario("cold-c10", "(2) cold launches, boot 0 s, concurrency 10",
             lambda q: ["--min-ready", "0"],
             lambda q, r: ["--concurrency", "10", "--requests", "60" if q else "200",
                           "--warmup", "5"]),
    Scenario("cold-boot1s", "(2) cold launches, boot 1 s, concurrency 5",
             lambda q: ["--min-ready", "0", "--boot-delay", "1.0"],
             lambda q, r: ["--concurrency", "5", "--requests", "10" if q else "30",
                           "--warmup", "2"]),
    Scenario("multi3", "(3) 3-node requests, ready nodes, concurrency 10",
             lambda q: _ready(3 * (120 if q else 240)),
             lambda q, r: ["--concurrency", "10", "--requests", "100" if q else "200",
                           "--nodes-per-request", "3", "--warmup", "10"]),
    Scenario("open-past", "(4) open loop at 2x the concurrency-50 throughput, ready nodes",
             lambda q: _ready(400 if q else 800),
             lambda q, r: ["--rate", str(_open_rate(r, 2)), "--requests", "300" if q else "600",
                           "--poisson", "--warmup", "20", "--timeout", "120"]),
    Scenario("scale", "(5) scale: ready nodes + waiting requests, concurrency 10",
             lambda q: _ready(2000 if q else 10000) + ["--hold-pool", "10"],
             lambda q, r: ["--concurrency", "10", "--requests", "100" if q else "1500",
                           "--background", "400" if q else "2000", "--background-label", "busy",
                           "--settle-cpu", "5", "--settle-timeout", "300", "--warmup", "10",
                           "--timeout", "120"],
             timeout=1200.0),
    Scenario("idle", "(6) idle launcher with 100 ready nodes",
             lambda q: _ready(100),
             lambda q, r: ["--idle", "10" if q else "30", "--settle-cpu", "5",
                           "--settle-timeout", "120"]),
    Scenario("delete", "(7) used -> deletion started, open loop 10/s, ready nodes",
             lambda q: _ready(100 if q else 200),
             lambda q, r: ["--rate", "10", "--requests", "50" if q else "100", "--warmup", "5"]),
    Scenario("ossim", "(8) OpenStack simulator over HTTP, real driver, cold, concurrency 4",
             lambda q: ["--cloud", "ossim", "--min-ready", "0", "--max-servers", "50"],
             lambda q, r: ["--concurrency", "4", "--requests", "20" if q else "60",
                           "--warmup", "4"]),
    Scenario("ossim-c1", "(8) OpenStack simulator over HTTP, real driver, cold, boot 0 s, "
             "concurrency 1",
             lambda q: ["--cloud", "ossim", "--min-ready", "0", "--max-servers", "50"],
             lambda q, r: ["--concurrency", "1", "--requests", "20" if q else "60",
                           "--warmup", "4"]),
    Scenario("ossim-boot1s", "(8) OpenStack simulator over HTTP, real driver, cold, boot 1 s, "
             "concurrency 1",
             lambda q: ["--cloud", "ossim", "--min-ready", "0", "--max-servers", "50",
                        "--boot-delay", "1.0"],
             # warm-up as ossim-c1's: the pacer learns a state's typical wait from its
             # first three (pacing.MIN_HISTORY), about twenty listings each, once per
             # launcher: the window measures the steady lifecycle.
             lambda q, r: ["--concurrency", "1", "--requests", "10" if q else "30",
                           "--warmup", "4"]),
    Scenario("static-c1", "(9) static driver, 4 real sshd hosts (keyscanned), concurrency 1",
             lambda q: ["--cloud", "static", "--static-hosts", "4"],
             lambda q, r: ["--concurrency", "1", "--requests", "100" if q else "300",
                           "--wait-ready", "4", "--warmup", "10"]),
    Scenario("static-pinned-c1", "(9) static driver, 4 real sshd hosts, host-key pinned, "
             "concurrency 1",
             lambda q: ["--cloud", "static", "--static-hosts", "4", "--static-pin-keys"],
             lambda q, r: ["--concurrency", "1", "--requests", "100" if q else "300",
                           "--wait-ready", "4", "--warmup", "10"]),
]

WARMUP = Scenario("warmup", "ZooKeeper warm-up: ready nodes, concurrency 50 (not reported)",
                  lambda q: _ready(400), lambda q, r: ["--concurrency", "50", "--requests", "300",
                                                      "--warmup", "0"])


# (scenario, what, value getter, limit): a negative limit means "at least -limit"
TARGETS: list[tuple[str, str, Callable[[dict], float | None], float]] = [
    ("ready-c1", "hand-over p50 <= 10 ms", lambda r: dig(r, "latency_ms", "p50"), 10),
    ("ready-c1", "hand-over p99 <= 50 ms", lambda r: dig(r, "latency_ms", "p99"), 50),
    ("spares-c1", "hand-over p50 <= 10 ms", lambda r: dig(r, "latency_ms", "p50"), 10),
    ("ready-c50", "hand-over p50 <= 10 ms", lambda r: dig(r, "latency_ms", "p50"), 10),
    ("ready-c50", "hand-over p99 <= 50 ms", lambda r: dig(r, "latency_ms", "p99"), 50),
    ("ready-c50", "throughput >= 200 req/s", lambda r: r.get("throughput_rps"), -200),
    ("ready-c50", "launcher CPU <= 3 ms/request",
     lambda r: dig(r, "launcher", "cpu_ms_per_request"), 3),
    ("spares-c50", "hand-over p50 <= 10 ms", lambda r: dig(r, "latency_ms", "p50"), 10),
    ("spares-c50", "throughput >= 200 req/s", lambda r: r.get("throughput_rps"), -200),
    ("static-c1", "hand-over p50 <= 10 ms", lambda r: dig(r, "latency_ms", "p50"), 10),
    ("static-c1", "launcher CPU <= 5 ms/request",
     lambda r: dig(r, "launcher", "cpu_ms_per_request"), 5),
    ("cold-c1", "launch overhead p50 <= 100 ms", lambda r: dig(r, "latency_ms", "p50"), 100),
    ("cold-boot1s", "launch overhead p50 <= 100 ms",
     lambda r: _minus(dig(r, "latency_ms", "p50"), 1000), 100),
    ("ossim-c1", "launch overhead p50 <= 100 ms", lambda r: dig(r, "latency_ms", "p50"), 100),
    ("ossim-c1", "launcher CPU <= 10 ms/lifecycle",
     lambda r: dig(r, "launcher", "cpu_ms_per_request"), 10),
    ("ossim-boot1s", "launch overhead p50 <= 100 ms",
     lambda r: _minus(dig(r, "latency_ms", "p50"), 1000), 100),
    ("ossim-boot1s", "launcher CPU <= 10 ms/lifecycle",
     lambda r: dig(r, "launcher", "cpu_ms_per_request"), 10),
    ("delete", "used -> deleting p50 <= 100 ms",
     lambda r: dig(r, "deletion_started_ms", "p50"), 100),
    ("delete", "used -> deleting p99 <= 100 ms",
     lambda r: dig(r, "deletion_started_ms", "p99"), 100),
    ("scale", "hand-over p99 <= 100 ms", lambda r: dig(r, "latency_ms", "p99"), 100),
    ("scale", "launcher RSS <= 300 MB", lambda r: dig(r, "launcher", "peak_rss_mb"), 300),
    ("idle", "idle CPU < 1%", lambda r: dig(r, "launcher", "cpu_percent"), 1),
]


def dig(report: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(report, dict):
            return None
        report = report.get(key)
    return report


def _minus(value: float | None, by: float) -> float | None:
    return None if value is None else round(value - by, 3)


@dataclasses.dataclass
class Watched:
    """A process started by `Stack.start_watched` and what its reader threads saw."""

    proc: subprocess.Popen
    set_up: threading.Event = dataclasses.field(default_factory=threading.Event)
    marked: bool = False                 # the marker line came (not only the end of stderr)
    chunks: list[str] = dataclasses.field(default_factory=list)
    readers: list[threading.Thread] = dataclasses.field(default_factory=list)

    def output(self, timeout: float) -> str:
        """Its stdout, once both pipes are at their end (the process has exited)."""
        for thread in self.readers:
            thread.join(timeout)
        return "".join(self.chunks)


class Stack:
    """The processes this run started, stopped by pid in reverse order (also on Ctrl-C)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
        """Start argv in a session of its own with stderr to `log`."""
        with open(log, "wb") as stderr:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, start_new_session=True, stderr=stderr, **kwargs)
        self.procs.append(proc)
        return proc

    def start_watched(self, argv: list[str], log: Path, marker: str, **kwargs: Any) -> Watched:
        """Like `start` with stdout and stderr piped: a thread copies stderr to `log` and sets
        `set_up` when a line contains `marker` (or stderr ends); another keeps stdout."""
        proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)
        self.procs.append(proc)
        watched = Watched(proc)

        def copy() -> None:
            with open(log, "w") as out:
                for line in proc.stderr:
                    out.write(line)
                    out.flush()
                    if marker in line and not watched.marked:
                        watched.marked = True
                        watched.set_up.set()
            watched.set_up.set()

        def keep() -> None:
            watched.chunks.append(proc.stdout.read())
        for target in (copy, keep):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            watched.readers.append(thread)
        return watched

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM,
             timeout: float = STOP_TIMEOUT) -> int | None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def read_event(proc: subprocess.Popen, timeout: float) -> dict | None:
    """The first JSON line the launcher prints (its `ready` or `error` event), or None."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not got or not got[0].strip():
        return None
    try:
        return json.loads(got[0])
    except json.JSONDecodeError:
        return {"event": "error", "error": got[0].strip()[:300]}


def summarise_profile(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by own and by inclusive samples, from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread ", "process ")):
            head = [f for f in frames if f.startswith("thread ")]
            if head:
                threads[head[0]] += n
            frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        own[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            inclusive[name] += n

    def table(counter: collections.Counter) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "own": table(own), "inclusive": table(inclusive),
            "threads": table(threads)}


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({short})" if where else name


def run_scenario(sc: Scenario, args: argparse.Namespace, zk: zookeeper.ZooKeeperServer,
                 stack: Stack, results: dict, workdir: Path) -> dict[str, Any]:
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    chroot = f"/bench-{sc.name}"
    hosts = zk.tls_hosts if not args.plain else zk.plain_hosts
    tls = [] if args.plain else ["--tls-cert", zk.cert, "--tls-key", zk.key, "--tls-ca", zk.ca]
    sc_dir = workdir / sc.name
    sc_dir.mkdir()
    launcher = stack.start([py, str(REPO / "tools" / "bench_launcher.py"), "--zk-hosts", hosts,
                            "--zk-chroot", chroot, *tls, "--workdir", str(sc_dir),
                            "--metrics", args.metrics, *sc.launcher(args.quick)],
                           sc_dir / "launcher.stderr", env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, text=True)
    profiler = None
    report: dict[str, Any] = {"name": sc.name}
    try:
        event = read_event(launcher, LAUNCHER_READY_TIMEOUT)
        if not event or event.get("event") != "ready":
            report["error"] = f"launcher did not start: {event} (see {sc_dir})"
            return report
        bench = [py, str(REPO / "tools" / "benchmark"), "--zk-hosts", hosts, "--zk-chroot",
                 chroot, *tls, "--zk-4lw", zk.plain_hosts, "--zk-pid", str(zk.pid),
                 "--launcher-pid", str(launcher.pid), "--name", sc.name,
                 "--delete-timeout", str(args.delete_timeout), *sc.bench(args.quick, results)]
        watched = stack.start_watched(bench, sc_dir / "benchmark.stderr", SETUP_DONE, env=env,
                                      stdin=subprocess.DEVNULL)
        proc = watched.proc
        if sc.name in args.profile and watched.set_up.wait(sc.timeout) and watched.marked:
            raw = sc_dir / "profile.txt"   # the load and its deletions, not the set-up
            target = proc if args.profile_benchmark else launcher
            profiler = stack.start([str(Path(py).parent / "py-spy"), "record", "--pid",
                                    str(target.pid), "--rate", "250", "--format", "raw",
                                    "--threads", *(["--idle"] if args.profile_wall else ["--gil"]),
                                    "--nonblocking", "-o", str(raw)],
                                   sc_dir / "py-spy.log", stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL)
        try:
            proc.wait(timeout=sc.timeout)
        except subprocess.TimeoutExpired:
            stack.stop(proc, signal.SIGINT)
            report["error"] = f"benchmark did not finish within {sc.timeout:.0f}s"
        stack.stop(proc)
        out = watched.output(STOP_TIMEOUT)
        lines = [line for line in (out or "").splitlines() if line.startswith("{")]
        if lines:
            report.update(json.loads(lines[-1]))
        elif "error" not in report:
            report["error"] = f"benchmark printed no report (see {sc_dir / 'benchmark.stderr'})"
        report["launcher_start"] = {k: event.get(k) for k in ("prefill_s", "start_s")}
        if profiler is not None:
            stack.stop(profiler, signal.SIGINT)
            raw = sc_dir / "profile.txt"
            if raw.exists():
                report["profile"] = summarise_profile(raw)
                report["profile"]["file"] = str(raw)
        return report
    finally:
        if profiler is not None:
            stack.stop(profiler, signal.SIGINT)
        code = stack.stop(launcher)
        if code not in (0, None):
            report.setdefault("launcher_exit", code)


def warm_zookeeper(args: argparse.Namespace, zk: zookeeper.ZooKeeperServer, stack: Stack,
                   workdir: Path) -> None:
    """Run unreported load until ZooKeeper's JIT has settled, as in a long-running server."""
    for n in range(1, WARMUP_MAX_ROUNDS + 1):
        jit0, t0 = threads_cpu(zk.pid, JIT_THREADS), time.monotonic()
        sc = dataclasses.replace(WARMUP, name=f"warmup-{n}")
        report = run_scenario(sc, args, zk, stack, {}, workdir)
        jit1, wall = threads_cpu(zk.pid, JIT_THREADS), time.monotonic() - t0
        share = (jit1 - jit0) / wall if jit0 is not None and jit1 is not None else None
        print(f"# ZooKeeper warm-up round {n}: {fmt_value(report.get('throughput_rps'))} req/s, "
              f"JIT compiling {fmt_value(None if share is None else 100 * share)}% of a core "
              f"over {wall:.0f}s", file=sys.stderr, flush=True)
        if report.get("error") or share is None or share < WARMUP_JIT_SHARE:
            return


def fmt_value(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(reports: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    cols = ("scenario", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s", "fail", "del p50",
            "del p99", "cpu ms/req", "cpu %", "RSS MB", "zk/req", "tool cpu%")
    rows = []
    for r in reports:
        lat = r.get("latency_ms") or {}
        dele = r.get("deletion_started_ms") or {}
        la = r.get("launcher") or {}
        rows.append((r.get("name"), fmt_value(lat.get("p50")), fmt_value(lat.get("p95")),
                     fmt_value(lat.get("p99")), fmt_value(lat.get("max")), fmt_value(r.get("throughput_rps")),
                     fmt_value(r.get("failures", "ERR" if r.get("error") else None)),
                     fmt_value(dele.get("p50")), fmt_value(dele.get("p99")),
                     fmt_value(la.get("cpu_ms_per_request"), 2), fmt_value(la.get("cpu_percent")),
                     fmt_value(la.get("peak_rss_mb")),
                     fmt_value(dig(r, "zookeeper", "launcher_requests_per_request")),
                     fmt_value(dig(r, "tool", "cpu_percent"))))
    widths = [max(len(str(c)), *(len(str(row[i])) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(str(c).rjust(w) for c, w in zip(cols, widths)), file=out)
    for row in rows:
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths)), file=out)
    by_name = {r.get("name"): r for r in reports}
    print("\ntargets:", file=out)
    for name, what, getter, limit in TARGETS:
        if name not in by_name:
            continue
        value = getter(by_name[name])
        if value is None:
            verdict = "no data"
        elif limit < 0:
            verdict = "met" if value >= -limit else f"MISSED by {-limit - value:.1f}"
        else:
            verdict = "met" if value <= limit else \
                f"MISSED by {value - limit:.1f} ({value / limit:.1f}x)"
        print(f"  {name:12} {what:34} {fmt_value(value, 2):>10}  {verdict}", file=out)
    for r in reports:
        if r.get("error"):
            print(f"  {r.get('name')}: ERROR {r['error']}", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(prog="bench-scenarios", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(names)}")
    p.add_argument("--profile", default="",
                   help="comma-separated scenarios to profile the launcher of with py-spy "
                        "(pip install py-spy into the venv)")
    p.add_argument("--profile-benchmark", action="store_true",
                   help="profile the benchmark process (the requestors) instead of the launcher")
    p.add_argument("--profile-wall", action="store_true",
                   help="profile wall-clock time of every thread, waits included (py-spy "
                        "--idle), instead of the samples that hold the GIL")
    p.add_argument("--delete-timeout", type=float, default=20.0,
                   help="seconds each scenario waits for its used nodes to be deleted (default 20; "
                        "the launcher's periodic cleanup pass runs every 10 s)")
    p.add_argument("--no-warmup", action="store_true",
                   help="measure a cold ZooKeeper (by default, unreported rounds of load run "
                        "first until its JIT compiler is mostly done)")
    p.add_argument("--plain", action="store_true", help="plain ZooKeeper port instead of TLS")
    p.add_argument("--metrics", choices=("on", "off"), default="on",
                   help="the launchers' metrics: on (default; Prometheus, and statsd to a local "
                        "socket nobody reads) or off (none), to compare their cost")
    p.add_argument("--keep", metavar="DIR", help="keep logs, configs and profiles in DIR")
    p.add_argument("--reference", choices=("nodepool",),
                   help="run the scenarios Nodepool 11.0.0 can run (static sshd hosts, the "
                        "OpenStack simulator) with this launcher and with Nodepool, installed in "
                        "a venv of its own under ~/.cache/nodepool-bench, and print both and "
                        "the ratio")
    p.add_argument("--requests", type=int,
                   help=f"--reference: measured requests per scenario and launcher "
                        f"(default {reference.DEFAULT_REQUESTS})")
    args = p.parse_args(argv)
    args.only = [n for n in args.only.split(",") if n]
    args.profile = [n for n in args.profile.split(",") if n]
    problem = reference.check_args(args)
    if problem:
        p.error(problem)
    if args.reference:
        return args
    unknown = sorted(set(args.only + args.profile) - set(names))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return args


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`, which stop what was started


def stop_on_signals() -> None:
    """SIGTERM and SIGINT unwind the run (also when started with SIGINT ignored, `&`)."""
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    if args.reference:
        from benchmark import refrun
        return refrun.main(args)
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        print("bench-scenarios: --profile needs py-spy: "
              f"{Path(sys.executable).parent / 'pip'} install py-spy", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    keep = Path(args.keep).resolve() if args.keep else None
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="bench-scenarios-")
    workdir = keep or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    zk = zookeeper.ZooKeeperServer(workdir / "zookeeper", port=0,
                                   tls_port=None if args.plain else 0)
    reports: list[dict[str, Any]] = []
    results: dict[str, dict] = {}
    started = time.monotonic()
    try:
        zk.start()
        print(f"# ZooKeeper pid {zk.pid} on {zk.plain_hosts}"
              f"{'' if args.plain else ' (TLS ' + zk.tls_hosts + ')'}; {os.cpu_count()} CPUs; "
              f"{'quick' if args.quick else 'full'} sizes; work dir {workdir}", file=sys.stderr)
        if not args.no_warmup:
            warm_zookeeper(args, zk, stack, workdir)
        for sc in chosen:
            t0 = time.monotonic()
            print(f"# {sc.name}: {sc.title}", file=sys.stderr, flush=True)
            report = run_scenario(sc, args, zk, stack, results, workdir)
            report["scenario"] = sc.title
            report["scenario_s"] = round(time.monotonic() - t0, 1)
            results[sc.name] = report
            reports.append(report)
            print(json.dumps(report), flush=True)
    except KeyboardInterrupt:
        print("bench-scenarios: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        stack.stop_all()
        zk.stop()
        if tmp is not None:
            tmp.cleanup()
    print(f"\n# {len(reports)} scenario(s) in {time.monotonic() - started:.0f}s", file=sys.stderr)
    print_table(reports, sys.stderr)
    return 1 if any(r.get("error") for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
