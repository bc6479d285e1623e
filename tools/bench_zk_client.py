#!/usr/bin/env python3
"""The ZooKeeper client's own cost: CPU per pipelined request, kazoo's I/O against ours.

Starts a ZooKeeper (tools/zookeeper.py, TLS), then sends bursts of pipelined
reads (as a launcher pass sends its hand-over waves) through a kazoo client
with the project's `PollHandler`, alternately with kazoo's one request and one
answer per turn of its connection loop and with `nodepool.zk.kazooext`'s
`NodepoolKazooClient` (every queued request, every buffered answer per turn). Prints one line per round:
requests/s and this process's CPU per request. The first rounds warm the JVM;
compare the later ones.

    .venv/bin/python tools/bench_zk_client.py [--rounds 6] [--bursts 600] [--burst 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO)]

import zookeeper  # noqa: E402
from kazoo.client import KazooClient  # noqa: E402

from nodepool.zk.kazooext.client import NodepoolKazooClient  # noqa: E402
from nodepool.zk.kazooext.handler import PollHandler  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_round(server: zookeeper.ZooKeeperServer, batched: bool, bursts: int, burst: int) -> dict:
    cls = NodepoolKazooClient if batched else KazooClient
    client = cls(hosts=server.tls_hosts, use_ssl=True, certfile=server.cert,
                 keyfile=server.key, ca=server.ca, handler=PollHandler())
    client.start(30)
    try:
        client.ensure_path("/bench")
        for i in range(burst):
            if not client.exists(f"/bench/n{i}"):
                client.create(f"/bench/n{i}", b"x" * 300)
        started, cpu = time.perf_counter(), cpu_seconds()
        for _ in range(bursts):
            for result in [client.get_async(f"/bench/n{i}") for i in range(burst)]:
                result.get(10)
        wall, used = time.perf_counter() - started, cpu_seconds() - cpu
    finally:
        client.stop()
        client.close()
    n = bursts * burst
    return {"io": "batched" if batched else "kazoo", "requests": n,
            "requests_per_s": round(n / wall), "cpu_us_per_request": round(1e6 * used / n, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6, help="rounds, alternating kazoo/batched")
    p.add_argument("--bursts", type=int, default=600)
    p.add_argument("--burst", type=int, default=50, help="requests in flight per burst")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-zk-client-") as tmp:
        server = zookeeper.ZooKeeperServer(Path(tmp) / "zk", port=0, tls_port=0)
        server.start()
        try:
            for i in range(args.rounds):
                print(json.dumps(one_round(server, i % 2 == 1, args.bursts, args.burst)),
                      flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
