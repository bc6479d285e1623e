"""One launcher of the fleet benchmark: a Launcher over an in-memory cloud of its own.

    PYTHONPATH=tools:. python -m benchmark.fleet_launcher --config nodepool.yaml \\
        --hostname fleet-1 --log-file fleet-1.log

It runs every provider of the config that the spread gives it (the config
names no driver: each provider's adapter is a FakeAdapter over this process's
FakeCloud, whose ids start with the hostname so that no two processes make the
same server id). Once started it prints `{"event": "ready", "pid", "owner_id",
"start_s"}`; for each `workers` line on stdin it prints `{"event": "workers",
"providers": [...]}` (the providers it runs a worker for now). It stops on
SIGTERM or SIGINT.

A provider handed to another launcher keeps its servers in the old owner's
cloud: the new owner's listing does not show them. So the leak scan (which
also deletes nodes whose server vanished from the listing) is pushed past any
run; deleting a server the cloud does not know is success, as on a real cloud.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

STOP_TIMEOUT = 20.0
NO_LEAK_SCAN = 24 * 3600.0

_print_lock = threading.Lock()


def say(event: dict) -> None:
    with _print_lock:
        print(json.dumps(event), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--hostname", required=True)
    p.add_argument("--log-file", required=True)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    p.add_argument("--metrics", choices=("on", "off"), default="off",
                   help="off (default): NullMetrics; on: as bench_launcher.py --metrics on")
    p.add_argument("--boot-delay", type=float, default=0.0, help="seconds BUILD -> ACTIVE")
    p.add_argument("--count-ops", metavar="FILE",
                   help="count its ZooKeeper requests by type and path (bench_launcher.py's "
                        "count_ops; also BENCH_COUNT_OPS=DIR: DIR/HOSTNAME.ops.json); at exit")
    return p.parse_args(argv)


def answer_stdin(launcher) -> None:
    """`workers` -> the providers it runs now; stdin's end -> nothing more to answer."""
    for line in sys.stdin:
        if line.strip() == "workers":
            say({"event": "workers", "providers": sorted(launcher.workers)})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.basicConfig(filename=args.log_file, level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    launcher = None
    write_counts = None
    try:
        from bench_launcher import bench_metrics, count_ops  # tools/, on PYTHONPATH

        from nodepool.launcher.daemon import Launcher
        from nodepool.launcher.main import tune_gc
        from nodepool.launcher.tuning import DEFAULT
        from nodepool.testing.fake_adapter import FakeAdapter, FakeCloud

        if os.environ.get("BENCH_COUNT_OPS") and not args.count_ops:
            args.count_ops = os.path.join(os.environ["BENCH_COUNT_OPS"],
                                          f"{args.hostname}.ops.json")
        if args.count_ops:
            write_counts = count_ops(Path(args.count_ops))
        cloud = FakeCloud(boot_delay=args.boot_delay, id_prefix=f"{args.hostname}-")
        started = time.monotonic()
        launcher = Launcher(args.config, adapter_factory=lambda p: FakeAdapter(p, cloud),
                            hostname=args.hostname, metrics=bench_metrics(args),
                            tuning=dataclasses.replace(DEFAULT, leak_scan=NO_LEAK_SCAN))
        launcher.start()
        tune_gc()   # as nodepool-launcher does once started
        say({"event": "ready", "pid": os.getpid(), "owner_id": launcher.owner_id,
             "start_s": round(time.monotonic() - started, 3)})
        threading.Thread(target=answer_stdin, args=(launcher,), daemon=True).start()
        stop.wait()
        return 0
    except Exception as e:
        say({"event": "error", "error": f"{type(e).__name__}: {e}"})
        return 1
    finally:
        if launcher is not None:
            stopper = threading.Thread(target=launcher.stop, kwargs={"timeout": STOP_TIMEOUT},
                                       daemon=True)
            stopper.start()
            stopper.join(STOP_TIMEOUT + 10)
        if write_counts is not None:
            write_counts()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # do not wait for threads a stuck stop left behind
