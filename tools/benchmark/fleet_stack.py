"""The fleet benchmark's set-up: a config of P in-memory providers, prefilled nodes, launchers.

`write_config` writes nodepool.yaml for a 3-server ensemble (every server listed,
TLS, one chroot): providers `p1..pP`, each with one pool of `max-servers`
nodes and a label of its own (`l1..lP`, min-ready = nodes per provider), so a
request names the provider that must serve it. `prefill` writes those ready
nodes straight into ZooKeeper (pipelined), as a launcher would have left them,
so a 10,000-node fleet does not wait for 10,000 launches. `Launchers` starts
and stops the launcher processes (fleet_launcher.py), each with its own
in-memory cloud, and asks them which providers they run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmark.scenarios import REPO, Stack, read_event  # also puts tools/ on sys.path
from benchmark.session import ZkOptions

LAUNCHER_READY_TIMEOUT = 300.0   # a launcher's cache first loads every node
HEADROOM = 10                    # max-servers above min-ready: replacements launch meanwhile
PREFILL_BATCH = 500


@dataclasses.dataclass(frozen=True)
class Size:
    providers: int
    nodes: int            # ready nodes per provider (min-ready of its label)

    @property
    def label(self) -> str:
        return f"{self.providers}x{self.nodes}"

    @classmethod
    def parse(cls, text: str) -> Size:
        """`25x400` -> 25 providers of 400 nodes; a clear error otherwise."""
        try:
            providers, nodes = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"size {text!r}: expected PROVIDERSxNODES, e.g. 25x400") from None
        if providers < 1 or nodes < 1:
            raise ValueError(f"size {text!r}: providers and nodes must be at least 1")
        return cls(providers, nodes)


def provider_names(size: Size) -> list[str]:
    return [f"p{i}" for i in range(1, size.providers + 1)]


def label_of(provider: str) -> str:
    return "l" + provider[1:]


def write_config(path: Path, size: Size, hosts: str, chroot: str, certs: dict[str, Any],
                 session_timeout: float) -> Path:
    servers = hosts.split(",")
    lines = ["zookeeper-servers:"]
    for i, server in enumerate(servers):
        host, port = server.rsplit(":", 1)
        lines += [f"  - host: {host}", f"    port: {port}"]
        if i == len(servers) - 1:   # one chroot for the ensemble, on the last server
            lines.append(f"    chroot: {chroot}")
    lines += [f"zookeeper-timeout: {session_timeout:g}", "zookeeper-tls:",
              f"  cert: {certs['cert']}", f"  key: {certs['key']}", f"  ca: {certs['ca']}",
              "labels:"]
    names = provider_names(size)
    for name in names:
        lines += [f"  - name: {label_of(name)}", f"    min-ready: {size.nodes}"]
    lines.append("providers:")
    for name in names:
        lines += [f"  - name: {name}", "    cloud: fake", "    rate: 0",
                  "    boot-timeout: 60", "    launch-timeout: 600", "    cloud-images:",
                  "      - name: img", "    pools:", "      - name: main",
                  f"        max-servers: {size.nodes + HEADROOM}",
                  "        host-key-checking: false", "        labels:",
                  f"          - name: {label_of(name)}", "            cloud-image: img",
                  "            flavor-name: small"]
    path.write_text("\n".join(lines) + "\n")
    return path


def prefill(zk: ZkOptions, size: Size) -> float:
    """Write `size.nodes` ready nodes per provider (and their empty lock dirs); seconds."""
    from nodepool.model import Node, NodeState
    from nodepool.testing.fake_cloud import FLAVORS
    from nodepool.zk import paths

    started = time.monotonic()
    client = zk.connect()
    try:
        client.ensure_path(paths.NODES)
        work = [(p, n) for p in provider_names(size) for n in range(size.nodes)]
        resources = FLAVORS["small"].to_dict()
        for start in range(0, len(work), PREFILL_BATCH):
            now = time.time()
            pending = []
            for provider, n in work[start:start + PREFILL_BATCH]:
                # No server backs it in any launcher's in-memory cloud (each launcher
                # process has its own): the launchers' leak scan is off (fleet_launcher).
                node = Node(type=[label_of(provider)], provider=provider, pool="main",
                            launcher="bench-prefill", cloud="fake", region="fake-region",
                            az="nova", state=NodeState.READY, state_time=now,
                            created_time=now, external_id=f"prefill-{provider}-{n}",
                            interface_ip="192.0.2.1", private_ipv4="192.0.2.1",
                            hostname=f"{provider}-prefill-{n}", resources=resources,
                            host_keys=[])
                pending.append(client.create_async(paths.node_create_prefix(),
                                                   node.to_json(), sequence=True))
            ids = [paths.basename(result.get(timeout=60)) for result in pending]
            for result in [client.create_async(paths.node_lock(i)) for i in ids]:
                result.get(timeout=60)
    finally:
        client.stop()
        client.close()
    return time.monotonic() - started


@dataclasses.dataclass
class LauncherProc:
    name: str                  # its hostname (fleet-N)
    proc: subprocess.Popen
    owner_id: str = ""         # hostname:pid, as in leases and the spread
    start_s: float | None = None
    started_at: float = 0.0    # time.monotonic() at Popen

    @property
    def pid(self) -> int:
        return self.proc.pid


class Launchers:
    """The launcher processes of one run, by name; stopped by pid (the Stack)."""

    def __init__(self, stack: Stack, config: Path, workdir: Path, metrics: str = "off",
                 count_ops: bool = False):
        self.stack, self.config, self.workdir, self.metrics = stack, config, workdir, metrics
        self.count_ops = count_ops   # each writes WORKDIR/NAME.ops.json at its exit
        self.live: dict[str, LauncherProc] = {}
        self._count = 0

    def start(self) -> LauncherProc:
        """Start the next launcher (fleet-1, fleet-2 ...); returns before it serves."""
        self._count += 1
        name = f"fleet-{self._count}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO / "tools"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        if self.count_ops:
            env["BENCH_COUNT_OPS"] = str(self.workdir)
        started_at = time.monotonic()
        proc = self.stack.start(
            [sys.executable, "-m", "benchmark.fleet_launcher", "--config", str(self.config),
             "--hostname", name, "--log-file", str(self.workdir / f"{name}.log"),
             "--metrics", self.metrics],
            self.workdir / f"{name}.stderr", env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        la = LauncherProc(name, proc, started_at=started_at)
        self.live[name] = la
        return la

    def await_ready(self, la: LauncherProc, timeout: float = LAUNCHER_READY_TIMEOUT) -> None:
        event = read_event(la.proc, timeout)
        if not event or event.get("event") != "ready":
            raise RuntimeError(f"launcher {la.name} did not start: {event} "
                               f"(see {self.workdir / (la.name + '.stderr')})")
        la.owner_id, la.start_s = event["owner_id"], event.get("start_s")

    def workers(self, la: LauncherProc, timeout: float = 30.0) -> list[str]:
        """The providers this launcher runs a worker for right now (it answers on stdout)."""
        la.proc.stdin.write("workers\n")
        la.proc.stdin.flush()
        event = read_event(la.proc, timeout)
        if not event or event.get("event") != "workers":
            raise RuntimeError(f"launcher {la.name} did not say its workers: {event}")
        return list(event["providers"])

    def kill(self, name: str) -> LauncherProc:
        """SIGKILL: its session, leases and component stay until the session times out."""
        la = self.live.pop(name)
        os.kill(la.pid, signal.SIGKILL)
        la.proc.wait(30)
        self.stack.stop(la.proc)
        return la

    def stop_all(self) -> None:
        for la in self.live.values():   # SIGTERM to all first: they stop side by side
            if la.proc.poll() is None:
                la.proc.send_signal(signal.SIGTERM)
        for la in list(self.live.values()):
            self.stack.stop(la.proc)
        self.live.clear()


def ops_summary(workdir: Path, top: int = 15) -> dict[str, Any]:
    """The launchers' ZooKeeper requests by type and path, added up (killed ones wrote none)."""
    counts: dict[str, int] = {}
    files = sorted(workdir.glob("*.ops.json"))
    for path in files:
        for key, n in json.loads(path.read_text()).items():
            counts[key] = counts.get(key, 0) + n
    requests = {k: n for k, n in counts.items() if not k.startswith("  tx ")}
    return {"launchers": [p.name.split(".")[0] for p in files], "total": sum(requests.values()),
            "top": sorted(requests.items(), key=lambda kv: -kv[1])[:top]}
