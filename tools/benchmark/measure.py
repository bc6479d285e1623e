"""Numbers: percentiles, a process's CPU and memory from /proc, ZooKeeper's `mntr` counters,
and the benchmark's own garbage-collection pauses."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MNTR_KEYS = ("zk_packets_received", "zk_packets_sent", "zk_znode_count", "zk_watch_count",
             "zk_num_alive_connections", "zk_avg_latency", "zk_max_latency",
             "zk_approximate_data_size")


def percentiles(values: Iterable[float], scale: float = 1.0) -> dict[str, float] | None:
    """p50/p95/p99/max/mean/min (nearest rank) of values times scale, rounded; None when empty."""
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return None

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    out = {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1],
           "min": ordered[0], "mean": sum(ordered) / len(ordered)}
    return {k: round(v, 3) for k, v in out.items()} | {"count": len(ordered)}


# The benchmark's own cyclic collections, as few as the launcher's (nodepool/launcher/main.py):
# a full collection of the requestor's objects held its thread 31-93 ms, and every request
# in flight was then measured that much slower.
TOOL_GC_THRESHOLDS = (10_000, 50, 1_000)


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """For the load: what set-up made is frozen (never walked again) and collections run
    less often; the thresholds are restored after."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*TOOL_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class GcPauses:
    """Times every cyclic collection of this process while entered (`gc.callbacks`): how
    much of what a process measured, or how long its threads stalled, was its own pause."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []    # (generation, seconds)
        self._began = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._began))

    def report(self) -> dict[str, Any]:
        times = [t for _, t in self.pauses]
        return {"collections": len(times), "total_ms": round(1000 * sum(times), 2),
                "max_ms": round(1000 * max(times, default=0.0), 2),
                "full": sum(1 for g, _ in self.pauses if g == 2)}


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of pid (all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the comm field: state is index 0, utime 11, stime 12 (fields 14 and 15 of proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def threads_cpu(pid: int, prefixes: tuple[str, ...]) -> float | None:
    """CPU seconds of pid's threads whose name starts with one of `prefixes`, or None."""
    total = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith(prefixes):
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue   # the thread ended
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def process_memory(pid: int) -> dict[str, float] | None:
    """Peak (VmHWM) and current (VmRSS) resident memory of pid in MiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)  # kB
    return {"peak_rss_mb": values.get("VmHWM"), "rss_mb": values.get("VmRSS")}


def own_cpu() -> float:
    """CPU seconds of this process (every thread)."""
    times = os.times()
    return times.user + times.system


def mntr(address: str | None, timeout: float = 2.0) -> dict[str, float] | None:
    """ZooKeeper's `mntr` counters from host:port (a plain port), or None when unavailable."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as sock:
            sock.sendall(b"mntr")
            answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode(errors="replace")
    except (OSError, ValueError):
        return None
    out: dict[str, float] = {}
    for line in answer.splitlines():
        key, _, value = line.partition("\t")
        if key in MNTR_KEYS:
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out or None


def delta(after: dict[str, Any] | None, before: dict[str, Any] | None, key: str) -> float | None:
    if not after or not before or key not in after or key not in before:
        return None
    return after[key] - before[key]
