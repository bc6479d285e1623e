"""Run `bench-scenarios --reference nodepool`: each reference scenario with our launcher, then Nodepool.

Nodepool 11.0.0 lives in a venv of its own under the user's cache dir, made once and reused.
One fresh ZooKeeper serves every run (a chroot per scenario and side); every run gets fresh
sshd hosts or a fresh simulator. Everything started is stopped by pid, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zookeeper  # tools/zookeeper.py

from benchmark import reference
from benchmark.reference import RefScenario
from benchmark.scenarios import REPO, STOP_TIMEOUT, Stack

BENCH_TIMEOUT = 900.0
START_TIMEOUT = 60.0
MARKER = "installed.txt"   # written last: a venv without it is (re)made


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nodepool-bench" / f"nodepool-{reference.NODEPOOL_VERSION}"


def ensure_nodepool(venv: Path) -> Path:
    """The venv's `nodepool-launcher`, installing Nodepool first unless done already."""
    launcher = venv / "bin" / "nodepool-launcher"
    wanted = "\n".join(reference.NODEPOOL_REQUIREMENTS) + "\n"
    marker = venv / MARKER
    if launcher.exists() and marker.exists() and marker.read_text() == wanted:
        return launcher
    print(f"# installing Nodepool {reference.NODEPOOL_VERSION} into {venv} (once; a few "
          "minutes)", file=sys.stderr, flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    for argv in ([base, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", *reference.NODEPOOL_REQUIREMENTS]):
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-800:]}")
    if not launcher.exists():
        raise RuntimeError(f"{launcher} is missing after installing Nodepool")
    marker.write_text(wanted)
    return launcher


class Cloud:
    """What one run's launcher talks to: sshd hosts or a simulator, stopped by `stop`."""

    def __init__(self, sc: RefScenario, workdir: Path, stack: Stack):
        self.sc, self.workdir, self.stack = sc, workdir, stack
        self.sshds: list[Any] = []
        self.ossim: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def start(self) -> "Cloud":
        if self.sc.cloud == "static":
            sys.path.insert(0, str(REPO / "tests"))
            from sshd import SshServer  # tests/sshd.py: a real sshd on a loopback address
            for _ in range(self.sc.hosts):
                self.sshds.append(SshServer(self.workdir).start())
            return self
        clouds = self.workdir / "clouds.yaml"
        # No Cinder for either launcher: Nodepool 11 lists volumes (volumes/detail), which the
        # simulator does not serve, and handles a cloud without block storage (openstacksdk 4.18).
        # `private: true`: the simulator's servers have only a private address, which Nodepool
        # uses as the interface only on a cloud that says so (ours falls back to it anyway).
        self.ossim = self.stack.start(
            [sys.executable, str(REPO / "tools" / "ossim"), "--port", "0",
             "--boot-delay", str(self.sc.boot_delay),
             "--delete-delay", "0", "--instances", "-1", "--cores", "-1", "--ram", "-1",
             "--clouds-yaml", str(clouds), "--cloud-name", reference.OSSIM_CLOUD,
             "--no-block-storage", "--private", "--log-level", "WARNING"], self.workdir / "ossim.log",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        line = _read_line(self.ossim, START_TIMEOUT)
        if not line.startswith("ossim: listening"):
            raise RuntimeError(f"the OpenStack simulator did not start: {line!r} "
                               f"(see {self.workdir / 'ossim.log'})")
        self.env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
        return self

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [(s.address, s.port) for s in self.sshds]

    def stop(self) -> None:
        for sshd in self.sshds:
            sshd.stop()
        if self.ossim is not None:
            self.stack.stop(self.ossim)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0].strip() if got else ""


def make_chroot(zk: zookeeper.ZooKeeperServer, chroot: str) -> None:
    """The chroot and its request queue: the warm-up requests may come before the launcher has
    made the queue, and wait there for it to start (as Zuul's would)."""
    from kazoo.client import KazooClient
    client = KazooClient(hosts=zk.plain_hosts)
    client.start(timeout=30)
    try:
        client.ensure_path(f"{chroot}/nodepool/requests")
    finally:
        client.stop()
        client.close()


def launcher_argv(side: str, nodepool_bin: Path | None, config: Path, logcfg: Path) -> list[str]:
    common = ["-f", "--no-webapp", "-c", str(config), "-l", str(logcfg)]
    if side == "ours":
        return [sys.executable, "-m", "nodepool.launcher.main", *common]
    return [str(nodepool_bin), *common]


def launcher_env(side: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if side == "ours":   # this tree's nodepool; Nodepool's venv must not see it
        env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def run_side(sc: RefScenario, side: str, args: argparse.Namespace, zk: zookeeper.ZooKeeperServer,
             stack: Stack, workdir: Path, nodepool_bin: Path | None) -> dict[str, Any]:
    run_dir = workdir / f"{sc.name}-{side}"
    run_dir.mkdir()
    report: dict[str, Any] = {"name": sc.name, "side": side}
    chroot = f"/ref-{sc.name}-{side}"
    tls = None if args.plain else (zk.cert, zk.key, zk.ca)
    hosts = zk.plain_hosts if args.plain else zk.tls_hosts
    host, port = hosts.rsplit(":", 1)
    cloud = Cloud(sc, run_dir, stack)
    launcher = None
    try:
        cloud.start()
        make_chroot(zk, chroot)
        config = run_dir / "nodepool.yaml"
        config.write_text(reference.nodepool_config(sc, host, int(port), chroot, tls, cloud.hosts))
        logcfg = run_dir / "logging.yaml"
        logcfg.write_text(reference.logging_config(str(run_dir / "launcher.log")))
        launcher = stack.start(launcher_argv(side, nodepool_bin, config, logcfg),
                               run_dir / "launcher.stderr", stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, env=launcher_env(side, cloud.env))
        tls_args = [] if args.plain else ["--tls-cert", zk.cert, "--tls-key", zk.key,
                                          "--tls-ca", zk.ca]
        bench = stack.start(
            [sys.executable, str(REPO / "tools" / "benchmark"), "--zk-hosts", hosts,
             "--zk-chroot", chroot, *tls_args, "--zk-4lw", zk.plain_hosts, "--zk-pid",
             str(zk.pid), "--launcher-pid", str(launcher.pid), "--name", f"{sc.name}/{side}",
             "--delete-timeout", str(args.delete_timeout), *sc.bench_args(args.requests)],
            run_dir / "benchmark.stderr", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONPATH": str(REPO / "tools")})
        try:
            out, _ = bench.communicate(timeout=BENCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            report["error"] = f"benchmark did not finish within {BENCH_TIMEOUT:.0f}s"
            out = ""
        stack.stop(bench)
        lines = [line for line in (out or "").splitlines() if line.startswith("{")]
        if lines:
            report.update(json.loads(lines[-1]))
        elif "error" not in report:
            report["error"] = f"benchmark printed no report (see {run_dir})"
        if launcher.poll() is not None:
            report["error"] = f"launcher exited with {launcher.returncode} (see {run_dir})"
        report["side"] = side
        return report
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
        return report
    finally:
        if launcher is not None:
            stack.stop(launcher, timeout=STOP_TIMEOUT)
        cloud.stop()


def main(args: argparse.Namespace) -> int:
    keep = Path(args.keep).resolve() if args.keep else None
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="bench-reference-")
    workdir = keep or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    zk = zookeeper.ZooKeeperServer(workdir / "zookeeper", port=0,
                                   tls_port=None if args.plain else 0)
    results: dict[str, dict[str, dict]] = {}
    started = time.monotonic()
    try:
        nodepool_bin = ensure_nodepool(cache_dir())
        zk.start()
        print(f"# ZooKeeper pid {zk.pid} on {zk.plain_hosts}; {os.cpu_count()} CPUs; "
              f"{args.requests} requests per scenario and launcher; Nodepool from "
              f"{nodepool_bin.parent.parent}; work dir {workdir}", file=sys.stderr, flush=True)
        for sc in args.ref_scenarios:
            for side in reference.SIDES:
                print(f"# {sc.name} ({side}): {sc.title}", file=sys.stderr, flush=True)
                report = run_side(sc, side, args, zk, stack, workdir, nodepool_bin)
                results.setdefault(sc.name, {})[side] = report
                print(json.dumps(report), flush=True)
    except KeyboardInterrupt:
        print("bench-scenarios: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"bench-scenarios: {e}", file=sys.stderr)
        return 2
    finally:
        stack.stop_all()
        zk.stop()
        if tmp is not None:
            tmp.cleanup()
    print(f"\n# reference run in {time.monotonic() - started:.0f}s\n", file=sys.stderr)
    print(reference.format_table(results), file=sys.stderr)
    if keep:
        (keep / "reference.md").write_text(reference.format_table(results, markdown=True))
    failed = any(r.get("error") for sides in results.values() for r in sides.values())
    return 1 if failed else 0
