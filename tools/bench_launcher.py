"""Run a nodepool launcher for the benchmark, on the in-memory fake cloud or the OpenStack sim.

    python3 tools/bench_launcher.py --zk-hosts 127.0.0.1:2281 --zk-chroot /bench \\
        --tls-cert C --tls-key K --tls-ca CA [--cloud fake|ossim] [--min-ready N] [--prefill N]

It runs in a process of its own so that the benchmark can read its CPU and
memory from /proc. Once it serves, it prints one JSON line to stdout
(`{"event": "ready", "pid": ...}`); it stops on SIGTERM or SIGINT (exit 0) and
stops the simulator it started. The launcher logs to --log-file.

`--prefill N` writes N ready nodes (and their servers in the fake cloud) before
the launcher starts, as a launcher would have left them, so a scale test does
not wait for N launches. `--hold-pool N` adds a pool `busy` (label `busy`) whose
N slots are taken by nodes in `hold`: requests for `busy` wait there for ever.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
OSSIM_CLOUD = "benchsim"
PROVIDER = {"fake": "fake1", "ossim": "sim", "static": "lab"}

ZK = """
zookeeper-servers:
  - host: {host}
    port: {port}
    chroot: {chroot}
zookeeper-timeout: 30
"""
TLS = """
zookeeper-tls:
  cert: {cert}
  key: {key}
  ca: {ca}
"""
LABELS = """
labels:
  - name: {label}
    min-ready: {min_ready}
  - name: busy
"""
FAKE_PROVIDER = """
providers:
  - name: fake1
    cloud: fake
    rate: 0
    boot-timeout: 60
    launch-timeout: 600
    launch-retries: 3
    cloud-images:
      - name: img
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        labels:
          - name: {label}
            cloud-image: img
            flavor-name: small
"""
BUSY_POOL = """
      - name: busy
        max-servers: {hold_pool}
        host-key-checking: false
        labels:
          - name: busy
            cloud-image: img
            flavor-name: small
"""
OSSIM_PROVIDER = """
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
STATIC_PROVIDER = """
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
"""
STATIC_HOST = """
          - name: {address}
            labels: [{label}]
            connection-port: {port}
            timeout: 30
{pinned}"""


def _pinned(sshd) -> str:
    """The host's keys as `host-key` (no keyscan: the launcher hands them out as they are)."""
    keys = "".join(f"              - {key}\n" for key in sshd.public_keys)
    return "            host-key:\n" + keys


def start_sshds(args: argparse.Namespace, workdir: Path) -> list:
    """--cloud static: one real sshd per host (tests/sshd.py), on loopback addresses."""
    sys.path.insert(0, str(REPO / "tests"))
    from sshd import SshServer
    return [SshServer(workdir).start() for _ in range(args.static_hosts)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zk-hosts", required=True, help="host:port of ZooKeeper (one server)")
    p.add_argument("--zk-chroot", default="/", help="the chroot, e.g. /bench")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca")
    p.add_argument("--cloud", choices=("fake", "ossim", "static"), default="fake")
    p.add_argument("--static-hosts", type=int, default=2,
                   help="--cloud static: how many real sshd hosts (one slot each)")
    p.add_argument("--static-pin-keys", action="store_true",
                   help="--cloud static: give each host its host-key (nothing is scanned)")
    p.add_argument("--label", default="small")
    p.add_argument("--min-ready", type=int, default=0)
    p.add_argument("--max-servers", type=int, default=1000)
    p.add_argument("--boot-delay", type=float, default=0.0, help="seconds BUILD -> ACTIVE")
    p.add_argument("--prefill", type=int, default=0, help="ready nodes written before starting")
    p.add_argument("--hold-pool", type=int, default=0,
                   help="add pool `busy` whose N slots hold nodes in `hold` (fake cloud only)")
    p.add_argument("--workdir", help="config, logs (default: a temp dir removed at exit)")
    p.add_argument("--log-file", help="launcher log (default: WORKDIR/launcher.log)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--metrics", choices=("on", "off"), default="on",
                   help="on (default): Prometheus, and statsd to STATSD_HOST/STATSD_PORT or, "
                        "when unset, to a UDP socket of this process that reads nothing; "
                        "off: no metrics at all (NullMetrics)")
    p.add_argument("--count-ops", metavar="FILE",
                   help="count the launcher's ZooKeeper requests by type and path; JSON to FILE "
                        "at exit (also BENCH_COUNT_OPS in the environment)")
    return p.parse_args(argv)


def bench_metrics(args: argparse.Namespace):
    """--metrics: off is NullMetrics; on is what nodepool-launcher has, with statsd sent to
    a socket nobody reads unless STATSD_HOST/STATSD_PORT name a server."""
    from nodepool.metrics import Metrics, NullMetrics
    if args.metrics == "off":
        return NullMetrics()
    if not (os.environ.get("STATSD_HOST") or os.environ.get("STATSD_PORT")):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        _SINKS.append(sink)   # kept open: the kernel drops what overflows its buffer
        os.environ["STATSD_HOST"], os.environ["STATSD_PORT"] = "127.0.0.1", \
            str(sink.getsockname()[1])
    return Metrics.from_environ()


_SINKS: list = []


def write_config(args: argparse.Namespace, workdir: Path, cloud_name: str | None) -> Path:
    host, port = args.zk_hosts.split(",")[0].rsplit(":", 1)
    text = ZK.format(host=host, port=port, chroot=args.zk_chroot)
    if args.tls_cert:
        text += TLS.format(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
    text += LABELS.format(label=args.label, min_ready=args.min_ready)
    if args.cloud == "fake":
        max_servers = max(args.max_servers, args.prefill + args.min_ready)
        text += FAKE_PROVIDER.format(max_servers=max_servers, label=args.label)
        if args.hold_pool:
            text += BUSY_POOL.format(hold_pool=args.hold_pool)
    elif args.cloud == "static":
        text += STATIC_PROVIDER + "".join(
            STATIC_HOST.format(address=h.address, port=h.port, label=args.label,
                               pinned=_pinned(h) if args.static_pin_keys else "")
            for h in args.sshds)
    else:
        text += OSSIM_PROVIDER.format(cloud=cloud_name, max_servers=args.max_servers,
                                      label=args.label)
    path = workdir / "nodepool.yaml"
    path.write_text(text)
    return path


def start_ossim(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen, Path]:
    """The simulator as a child process (its CPU is not the launcher's), zero boot delay."""
    clouds = workdir / "clouds.yaml"
    with open(workdir / "ossim.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "ossim"), "--port", "0",
             "--boot-delay", str(args.boot_delay), "--delete-delay", "0",
             "--instances", "-1", "--cores", "-1", "--ram", "-1", "--clouds-yaml", str(clouds),
             "--cloud-name", OSSIM_CLOUD, "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True)
    line = _read_line(proc, START_TIMEOUT)
    if not line.startswith("ossim: listening"):
        stop_child(proc)
        raise RuntimeError(f"the OpenStack simulator did not start: {line!r} "
                           f"(see {workdir / 'ossim.log'})")
    return proc, clouds


def _report_cloud_calls(workdir: Path) -> None:
    """The simulator's count of API calls by kind, to stderr (what a lifecycle costs the cloud)."""
    import urllib.request

    import yaml
    auth_url = yaml.safe_load((workdir / "clouds.yaml").read_text())["clouds"][OSSIM_CLOUD][
        "auth"]["auth_url"]
    base = auth_url.rsplit("/identity", 1)[0]
    try:
        with urllib.request.urlopen(f"{base}/_sim/calls", timeout=5) as answer:
            calls = json.load(answer)["calls"]
    except OSError as e:
        print(f"cloud calls: unknown ({e})", file=sys.stderr, flush=True)
        return
    print("cloud calls: " + json.dumps(calls, sort_keys=True), file=sys.stderr, flush=True)
    if os.environ.get("BENCH_CLOUD_REQUESTS"):
        with urllib.request.urlopen(f"{base}/_sim/requests?limit=100000", timeout=5) as answer:
            (workdir / "cloud-requests.json").write_text(answer.read().decode())


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0].strip() if got else ""


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def prefill(config_path: Path, cloud: Any, label: str, ready: int, hold: int) -> float:
    """Write `ready` ready nodes in pool main and `hold` nodes in `hold` in pool busy, each with a
    server in the fake cloud, the way the launcher records a node it made; returns seconds."""
    from nodepool.config import load_config
    from nodepool.model import Node, NodeState
    from nodepool.testing.fake_cloud import TAG_NODE, TAG_POOL, TAG_PROVIDER
    from nodepool.zk import paths
    from nodepool.zk.client import ZooKeeperClient

    started = time.monotonic()
    zk = ZooKeeperClient.from_config(load_config(str(config_path)))
    zk.connect()
    kazoo = zk.kazoo
    try:
        kazoo.ensure_path(paths.NODES)
        work = ([("main", label, NodeState.READY)] * ready
                + [("busy", "busy", NodeState.HOLD)] * hold)
        for start in range(0, len(work), 500):
            pending = []
            for pool, node_label, state in work[start:start + 500]:
                tags = {TAG_PROVIDER: PROVIDER["fake"], TAG_POOL: pool}
                server = cloud.create_server(f"{node_label}-prefill", "small", tags)
                now = time.time()
                node = Node(type=[node_label], provider=PROVIDER["fake"], pool=pool,
                            launcher="bench-prefill", cloud="fake", region=cloud.region,
                            az=server.az, state=state, state_time=now, created_time=now,
                            external_id=server.id, interface_ip=server.private_ipv4,
                            private_ipv4=server.private_ipv4, hostname=server.name,
                            resources=cloud.flavors["small"].to_dict(), host_keys=[],
                            comment="benchmark" if state == NodeState.HOLD else None)
                result = kazoo.create_async(paths.node_create_prefix(), node.to_json(),
                                            sequence=True)
                pending.append((server.id, result))
            locks = []
            for server_id, result in pending:
                node_id = paths.basename(result.get(timeout=30))
                # The empty lock dir its launch leaves behind (the launcher locked it).
                locks.append(kazoo.create_async(paths.node_lock(node_id)))
                with cloud._lock:  # tag the server with its node id, as a launch does
                    cloud.servers[server_id].metadata[TAG_NODE] = node_id
            for result in locks:
                result.get(timeout=30)
    finally:
        zk.disconnect()
    return time.monotonic() - started


def count_ops(out: Path) -> Callable[[], None]:
    """Count every request the launcher's kazoo clients send, by type and path shape.

    Diagnostic only: wraps `KazooClient._call` (where every request is queued),
    counts a transaction's operations one by one, and returns the writer.
    """
    from kazoo.client import KazooClient
    from kazoo.protocol.serialization import Transaction

    counts: collections.Counter = collections.Counter()
    shape = re.compile(r"[0-9a-f]{32}__lock__\d*|\d{10}|[\w.-]+:[\w.-]+")
    original = KazooClient._call

    def key(request) -> str:
        path = getattr(request, "path", "") or ""
        return f"{type(request).__name__} {shape.sub('*', path)}"

    def caller() -> str:
        """The launcher function (outside nodepool/zk) that sent it, with BENCH_OPS_CALLERS."""
        frame, found = sys._getframe(2), []
        while frame is not None and len(found) < 2:
            name = frame.f_code.co_filename
            if "/nodepool/" in name and "/nodepool/zk/" not in name:
                found.append(f"{Path(name).stem}.{frame.f_code.co_name}")
            frame = frame.f_back
        return "".join(f" <- {f}" for f in found) or " <- ?"

    by_caller = bool(os.environ.get("BENCH_OPS_CALLERS"))

    def _call(self, request, async_object):
        where = caller() if by_caller else ""
        if isinstance(request, Transaction):
            counts[f"Transaction{where}"] += 1
            for op in request.operations:
                counts[f"  tx {key(op)}{where}"] += 1
        else:
            counts[key(request) + where] += 1
        return original(self, request, async_object)

    KazooClient._call = _call
    return lambda: out.write_text(json.dumps(dict(counts.most_common()), indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.count_ops = args.count_ops or os.environ.get("BENCH_COUNT_OPS")
    write_counts = count_ops(Path(args.count_ops)) if args.count_ops else None
    if args.cloud != "fake" and (args.prefill or args.hold_pool):
        print("bench_launcher: --prefill and --hold-pool need --cloud fake", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench-launcher-")
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=args.log_file or str(workdir / "launcher.log"),
                        level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ossim = None
    launcher = None
    try:
        from benchmark.measure import GcPauses  # this file's directory, tools/

        from nodepool.launcher.daemon import Launcher
        from nodepool.launcher.main import tune_gc

        factory = None
        cloud = None
        if args.cloud == "ossim":
            ossim, clouds = start_ossim(args, workdir)
            os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
        elif args.cloud == "static":
            args.sshds = start_sshds(args, workdir)
        else:
            from nodepool.testing.fake_adapter import FakeAdapter, FakeCloud
            cloud = FakeCloud(boot_delay=args.boot_delay)

            def factory(provider):
                return FakeAdapter(provider, cloud)
        config = write_config(args, workdir, OSSIM_CLOUD)
        prefill_s = prefill(config, cloud, args.label, args.prefill, args.hold_pool) \
            if cloud is not None and (args.prefill or args.hold_pool) else 0.0
        started = time.monotonic()
        launcher = Launcher(str(config), hostname="bench-launcher", metrics=bench_metrics(args),
                            **({"adapter_factory": factory} if factory else {}))
        launcher.start()
        provider = PROVIDER[args.cloud]
        deadline = time.monotonic() + START_TIMEOUT
        while provider not in launcher.workers and not stop.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError(f"provider {provider} not started within {START_TIMEOUT:.0f}s")
            stop.wait(0.02)
        if not os.environ.get("BENCH_GC_DEFAULT"):
            tune_gc()    # as nodepool-launcher does once started
        print(json.dumps({"event": "ready", "pid": os.getpid(), "cloud": args.cloud,
                          "prefill_s": round(prefill_s, 3),
                          "start_s": round(time.monotonic() - started, 3),
                          "ossim_pid": ossim.pid if ossim else None,
                          "workdir": str(workdir)}), flush=True)
        # BENCH_GC_STATS: how long the launcher's own collections stalled its threads.
        gc_pauses = GcPauses()
        with gc_pauses if os.environ.get("BENCH_GC_STATS") else contextlib.nullcontext():
            stop.wait()
        for gen in range(3):
            times = sorted(t for g, t in gc_pauses.pauses if g == gen)
            if times:
                print(f"gc gen{gen}: {len(times)} collections, {sum(times) * 1000:.0f} ms, "
                      f"max {times[-1] * 1000:.1f} ms", file=sys.stderr, flush=True)
        return 0
    except Exception as e:
        print(json.dumps({"event": "error", "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    finally:
        if launcher is not None:
            # Bounded: Launcher.stop can block for ever in a ZooKeeper call once the server is gone.
            stopper = threading.Thread(target=launcher.stop, kwargs={"timeout": STOP_TIMEOUT},
                                       daemon=True)
            stopper.start()
            stopper.join(STOP_TIMEOUT + 10)
            if stopper.is_alive():
                print(json.dumps({"event": "error", "error": "Launcher.stop did not return "
                                  f"within {STOP_TIMEOUT + 10:.0f}s"}), flush=True)
        if ossim is not None:
            _report_cloud_calls(workdir)
            stop_child(ossim)
        for sshd in getattr(args, "sshds", []):
            sshd.stop()
        if write_counts is not None:
            write_counts()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # do not wait for threads a stuck stop left behind
