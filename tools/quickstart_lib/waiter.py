"""Run by tools/quickstart with .venv's Python: wait until the launcher's pools are registered
and min-ready nodes are ready."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tools/, for quickstart_lib
from nodepool.config import load_config
from nodepool.errors import ZooKeeperUnavailable
from nodepool.model import NodeState
from nodepool.zk import components, nodes
from nodepool.zk.client import ZooKeeperClient
from quickstart_lib.procs import alive

POLL = 0.1  # seconds between looks at ZooKeeper (a local server: cheap)


class NotReady(Exception):
    """The launcher died, or was not ready by the deadline."""


def say(text: str) -> None:
    print(f"quickstart:       {text}", flush=True)


def ready_counts(zk: ZooKeeperClient, provider: str, wanted: dict[str, int]) -> tuple[dict[str, int], bool]:
    """Ready, unallocated nodes of the provider per label (what min-ready counts), and whether any is ready.

    The launcher serves min-ready through requests of its own: a new node is ready first,
    allocated to such a request, and released as a spare a moment later.
    """
    counts, any_ready = dict.fromkeys(wanted, 0), False
    for node in nodes.get_nodes(zk.kazoo):
        if node.provider == provider and node.state == NodeState.READY:
            any_ready = True
            for label in node.type:
                if label in counts and node.allocated_to is None:
                    counts[label] += 1
    return counts, any_ready


def after(args: argparse.Namespace, seconds: float) -> str:
    return f" {seconds:.1f}s after the launcher started" if args.since else ""


def wait(zk: ZooKeeperClient, args: argparse.Namespace, wanted: dict[str, int]) -> dict[str, float]:
    started, deadline = args.since or time.time(), time.monotonic() + args.timeout
    times: dict[str, float] = {}
    shown = None
    while True:
        if not alive(args.launcher_pid):
            raise NotReady(f"nodepool-launcher (pid {args.launcher_pid}) exited")
        if "pools" not in times:
            pools = [c for c in components.list_components(zk, components.POOL)
                     if c.get("provider_name") == args.provider]
            if pools:
                times["pools"] = time.time() - started
                for pool in pools:
                    say(f"pool worker registered: {pool.get('name')} on {pool.get('hostname')}, labels "
                        f"{', '.join(pool.get('supported_labels') or [])}" + after(args, times["pools"]))
        else:
            counts, any_ready = ready_counts(zk, args.provider, wanted)
            if any_ready and "first_ready" not in times:
                times["first_ready"] = time.time() - started
                if args.since:
                    say("first node ready" + after(args, times["first_ready"]))
            progress = ", ".join(f"{label} {counts[label]}/{n}" for label, n in sorted(wanted.items()))
            if progress != shown:
                say(f"ready nodes (min-ready): {progress}")
                shown = progress
            if all(counts[label] >= n for label, n in wanted.items()):
                times["all_ready"] = time.time() - started
                return times
        if time.monotonic() > deadline:
            what = "no pool worker registered" if "pools" not in times else f"ready nodes {shown}"
            raise NotReady(f"not ready within {args.timeout:g}s ({what})")
        time.sleep(POLL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--launcher-pid", type=int, required=True)
    parser.add_argument("--since", type=float, help="time.time() the launcher started (omit: it ran already)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--result", type=Path, required=True, help="write the timings here (JSON)")
    args = parser.parse_args()
    config = load_config(args.config)
    wanted = {name: label.min_ready for name, label in config.labels.items() if label.min_ready > 0}
    zk = ZooKeeperClient.from_config(config)
    try:
        zk.connect(timeout=10)
    except ZooKeeperUnavailable as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr)
        return 1
    try:
        times = wait(zk, args, wanted)
    except NotReady as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; tools/quickstart does the stopping
        return 130
    finally:
        zk.disconnect()
    args.result.write_text(json.dumps(times) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
