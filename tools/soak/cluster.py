"""The soak's processes: a ZooKeeper ensemble, the simulator (tools/ossim) and the launchers, by pid.

Every process (ZooKeeper members included) is started from the main thread (the chaos that
kills and restarts them runs there too): the kernel's parent-death signal, which stops a child if the soak dies hard, is
tied to the thread that started it.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zookeeper  # tools/zookeeper.py: tools/ is on sys.path (see __main__.py)
from ossim import ControlClient

TOOLS = Path(__file__).resolve().parent.parent
REPO = TOOLS.parent
CLOUD = "soak"
LABELS = ("small", "large")  # small: both providers; large: only soak-b (soak-a declines it)
SIM_START_TIMEOUT = 30.0
LAUNCHER_STOP_TIMEOUT = 45.0  # the launcher bounds its own shutdown at about 30 s


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGTERMs the child when the (main) thread that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def stop_pid(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after timeout; returns the exit code (None if it would not die)."""
    for sig in (signal.SIGCONT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return proc.returncode
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGCONT:
            continue  # a stopped process must run to handle SIGTERM
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


# A 3-server quorum on 127.0.0.1 (tools/zkensemble.py): start/stop, plain_hosts, tls_hosts,
# certs, members, leader(), kill(i), start_member(i).
Ensemble = zookeeper.ZooKeeperEnsemble


class SimProcess:
    """`python3 tools/ossim --port 0 ...` as its own process; `ctl` is its control API."""

    def __init__(self, run_dir: Path, instances: int, boot_delay: float, delete_delay: float,
                 real_nodes: bool = False) -> None:
        self.run_dir = run_dir
        self.clouds_yaml = run_dir / "clouds.yaml"
        self.log_path = run_dir / "ossim.log"
        self.args = ["--port", "0", "--instances", str(instances), "--cores", "-1", "--ram", "-1",
                     "--boot-delay", str(boot_delay), "--delete-delay", str(delete_delay),
                     "--clouds-yaml", str(self.clouds_yaml), "--cloud-name", CLOUD,
                     "--log-level", "WARNING"]
        if real_nodes:
            self.args += ["--real-nodes"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ctl: ControlClient | None = None

    def start(self) -> SimProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(TOOLS / "ossim"), *self.args],
                                         stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + SIM_START_TIMEOUT
        line = b""
        while b"\n" not in line:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ossim did not print its URL within {SIM_START_TIMEOUT:.0f}s "
                                   f"(exit {self.proc.poll()}); see {self.log_path}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                line += chunk
                if not chunk:
                    time.sleep(0.1)
        match = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", line)
        if not match:
            raise RuntimeError(f"ossim printed no URL: {line!r}")
        self.url = match.group(1).decode()
        self.ctl = ControlClient(self.url, timeout=20.0)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc, 20.0)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@dataclass
class LauncherProc:
    """One launcher slot: its current process, how many times it was started, why it stopped."""

    index: int
    config: Path
    run_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)
    expect_exit: bool = False  # set before the soak itself kills or stops it
    paused: bool = False
    term_sent: bool = False

    @property
    def name(self) -> str:
        return f"launcher-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.starts += 1
        log_path = self.run_dir / f"{self.name}.{self.starts}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nodepool.launcher.main", "-f", "--no-webapp", "-c",
                 str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO),
                env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        self.expect_exit, self.paused, self.term_sent = False, False, False

    def exited(self) -> int | None:
        """The exit code if the current process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        assert self.proc is not None
        self.expect_exit = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def send_term(self) -> None:
        """One SIGTERM per process: a second one during the interpreter's exit would kill it."""
        if self.proc is not None and self.proc.poll() is None and not self.term_sent:
            self.term_sent = True
            self.proc.send_signal(signal.SIGTERM)

    def terminate(self, timeout: float = LAUNCHER_STOP_TIMEOUT) -> tuple[int | None, float]:
        """SIGTERM; wait up to timeout. Returns (exit code or None if it did not end, seconds)."""
        if self.proc is None:
            return 0, 0.0
        self.expect_exit = True
        self.resume()
        started = time.monotonic()
        self.send_term()
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def force_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.expect_exit = True
            stop_pid(self.proc, 5.0)


@dataclass(frozen=True)
class Pools:
    """The launchers' nodepool.yaml knobs the soak sets."""

    max_servers: int = 5
    min_ready: int = 1
    zk_timeout: float = 4.0
    host_key_checking: bool = False

    @property
    def total(self) -> int:
        return 2 * self.max_servers

    def providers(self) -> dict[str, int]:
        return {"soak-a": self.max_servers, "soak-b": self.max_servers}


def nodepool_yaml(zk: Any, pools: Pools) -> str:
    hosts = "".join(f"  - host: {h.rsplit(':', 1)[0]}\n    port: {h.rsplit(':', 1)[1]}\n"
                    for h in zk.tls_hosts.split(","))
    certs = zk.certs
    hkc = "true" if pools.host_key_checking else "false"

    def provider(name: str, labels: tuple[str, ...]) -> str:
        flavors = {"small": "m1.tiny", "large": "m1.small"}
        body = "".join(f"          - name: {label}\n            cloud-image: cirros\n"
                       f"            flavor-name: {flavors[label]}\n" for label in labels)
        return (f"  - name: {name}\n    cloud: {CLOUD}\n    region-name: RegionOne\n    rate: 0\n"
                "    boot-timeout: 30\n    launch-timeout: 60\n    launch-retries: 3\n"
                "    cloud-images:\n      - name: cirros\n        image-name: cirros-0.6.2\n"
                "        username: cirros\n"
                f"    pools:\n      - name: main\n        max-servers: {pools.max_servers}\n"
                f"        host-key-checking: {hkc}\n        labels:\n{body}")

    return (f"zookeeper-servers:\n{hosts}"
            f"zookeeper-tls:\n  cert: {certs['cert']}\n  key: {certs['key']}\n  ca: {certs['ca']}\n"
            f"zookeeper-timeout: {pools.zk_timeout}\n"
            f"labels:\n  - name: small\n    min-ready: {pools.min_ready}\n  - name: large\n"
            "providers:\n" + provider("soak-a", ("small",)) + provider("soak-b", ("small", "large")))


class Cluster:
    """Everything the soak runs; stop() ends every process it started, whatever state it is in."""

    def __init__(self, run_dir: Path, launchers: int, pools: Pools, quota: int,
                 real_nodes: bool = False) -> None:
        self.run_dir = run_dir
        self.pools = pools
        self.quota = quota
        self.zk = Ensemble(run_dir / "zookeeper", size=3, tls=True)
        self.sim = SimProcess(run_dir, instances=quota, boot_delay=1.0, delete_delay=0.3,
                              real_nodes=real_nodes)
        self.config = run_dir / "nodepool.yaml"
        self.launchers: list[LauncherProc] = []
        self.count = launchers

    def start(self) -> Cluster:
        self.zk.start()
        self.sim.start()
        self.config.write_text(nodepool_yaml(self.zk, self.pools))
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.sim.clouds_yaml),
               "PYTHONUNBUFFERED": "1"}
        for i in range(self.count):
            launcher = LauncherProc(i, self.config, self.run_dir, env)
            launcher.start()
            self.launchers.append(launcher)
        return self

    @property
    def ctl(self) -> ControlClient:
        assert self.sim.ctl is not None
        return self.sim.ctl

    def stop(self) -> None:
        """Stop launchers, simulator and ZooKeeper by pid; never raises."""
        for launcher in self.launchers:
            try:
                launcher.force_stop()
            except Exception as exc:  # keep stopping the others
                print(f"soak: stopping {launcher.name}: {exc}", file=sys.stderr)
        for part in (self.sim, self.zk):
            try:
                part.stop()
            except Exception as exc:
                print(f"soak: stopping {type(part).__name__}: {exc}", file=sys.stderr)
