"""What the fleet benchmark watches: provider leases, a steady request stream, /proc and mntr.

`LeaseWatch` keeps who holds each provider lease from data watches (no
polling). `Stream` is an open loop over every provider's label, one request
every 1/rate s in turn, on the benchmark's Runner and Lifecycle (load.py,
lifecycle.py): each request is made, fulfilled, used and released as a CI
master does. `Sampler` reads the launchers' CPU and memory from /proc and each
ensemble member's `mntr`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .deletion import DeletionWatcher
from .drive import Timers
from .lifecycle import Lifecycle, Outcome
from .load import Runner
from .measure import delta, mntr, own_cpu, process_cpu, process_memory
from .session import CountingClient, Session

LEASES = "/nodepool/launcher/provider-lease"   # ours (ARCHITECTURE.md 4), not PROTOCOL.md's


class LeaseWatch:
    """provider -> the owner id in its lease znode (None while free), kept by data watches."""

    def __init__(self, client: CountingClient, providers: Iterable[str]):
        self.client = client
        self.holders: dict[str, str | None] = {}
        self._cond = threading.Condition()
        client.ensure_path(LEASES)
        for provider in providers:
            self.holders[provider] = None
            client.DataWatch(f"{LEASES}/{provider}", self._on_change(provider))

    def _on_change(self, provider: str) -> Callable[[Any, Any], None]:
        def changed(data: bytes | None, _stat: Any) -> None:
            owner = None
            if data:
                try:
                    owner = json.loads(data).get("owner")
                except ValueError:
                    owner = "?"
            with self._cond:
                self.holders[provider] = owner
                self._cond.notify_all()
        return changed

    def snapshot(self) -> dict[str, str | None]:
        with self._cond:
            return dict(self.holders)

    def wait(self, predicate: Callable[[dict[str, str | None]], bool],
             timeout: float) -> float | None:
        """time.monotonic() when predicate(holders) first held, or None after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.holders):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return time.monotonic()


class Stream:
    """An open loop of one-node requests over `labels` in turn, at `rate` per second."""

    def __init__(self, sessions: list[Session], watcher: Session, labels: list[str],
                 rate: float, timeout: float, max_requests: int):
        self.sessions, self.rate, self.max_requests = sessions, rate, max_requests
        self.timers = Timers()
        self.deletions = DeletionWatcher(watcher.client)
        self.stop_lives = threading.Event()        # ends every wait (only on an abort)
        self.runners = {label: Runner(Lifecycle([label], 0.0, timeout, self.deletions,
                                                self.timers, stop=self.stop_lives))
                        for label in labels}
        self.labels = labels
        self.probes: list[tuple[str, Outcome]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-stream", daemon=True)
        self.made = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._halt.is_set() and self.made < self.max_requests:
            wait = due - time.monotonic()
            if wait > 0 and self._halt.wait(wait):
                break
            label = self.labels[self.made % len(self.labels)]
            self.runners[label].start(self.sessions[self.made % len(self.sessions)])
            self.made += 1
            due += 1.0 / self.rate

    def probe(self, labels: Iterable[str]) -> list[Outcome]:
        """One request now for each label, beside the stream (kept as probes)."""
        outs = [self.runners[label].start(self.sessions[0]) for label in labels]
        self.probes += list(zip(labels, outs))
        return outs

    def finish(self, timeout: float) -> bool:
        """Stop making requests; wait until every one made has ended (False: aborted)."""
        self._halt.set()
        self._thread.join(10)
        done = threading.Event()

        def wait_all() -> None:
            for runner in self.runners.values():
                runner.wait()
            done.set()
        threading.Thread(target=wait_all, daemon=True).start()
        ok = done.wait(timeout)
        if not ok:
            self.stop_lives.set()
            done.wait(30)
        self.timers.close()
        return ok

    def abort(self) -> None:
        """Stop making requests and end every wait now (what was made is not waited for)."""
        self._halt.set()
        self.stop_lives.set()
        for runner in self.runners.values():
            runner.life.stop_waiting()
        self.timers.close()

    def outcomes(self) -> list[Outcome]:
        return [o for runner in self.runners.values() for o in list(runner.outcomes)]


def wait_outcomes(outs: list[Outcome], timeout: float) -> float | None:
    """Setup-style wait (tool side only) until every outcome is final: its last seen_at."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(o.state is not None for o in outs):
            seen = [o.seen_at for o in outs if o.seen_at is not None]
            return max(seen) if len(seen) == len(outs) else None
        time.sleep(0.02)
    return None


class Sampler:
    """Readings at one moment: each launcher's CPU and memory, each member's mntr."""

    def __init__(self, members: list[Any], tool_clients: Callable[[], list[CountingClient]]):
        self.members = members
        self.tool_clients = tool_clients

    def sample(self, pids: dict[str, int]) -> dict[str, Any]:
        return {"t": time.monotonic(), "tool_cpu": own_cpu(),
                "sent": sum(c.sent for c in self.tool_clients()),
                "cpu": {name: process_cpu(pid) for name, pid in pids.items()},
                "mem": {name: process_memory(pid) for name, pid in pids.items()},
                "zk_cpu": [process_cpu(m.pid) if m.pid else None for m in self.members],
                "mntr": [mntr(m.plain_hosts) for m in self.members]}


def window(before: dict[str, Any], after: dict[str, Any], completed: int) -> dict[str, Any]:
    """Launcher CPU, ZooKeeper requests and CPU between two samples, per hand-over too."""
    wall = max(1e-9, after["t"] - before["t"])
    launchers = {}
    for name, cpu0 in before["cpu"].items():
        cpu1 = after["cpu"].get(name)
        if cpu0 is None or cpu1 is None:
            continue
        used = cpu1 - cpu0
        launchers[name] = {"cpu_percent": round(100 * used / wall, 1),
                           "cpu_ms_per_request": round(1000 * used / completed, 2)
                           if completed else None, **(after["mem"].get(name) or {})}
    received = [delta(a, b, "zk_packets_received")
                for a, b in zip(after["mntr"], before["mntr"])]
    out: dict[str, Any] = {"wall_s": round(wall, 2), "completed": completed,
                           "launchers": launchers}
    if all(r is not None for r in received):
        launchers_sent = sum(received) - (after["sent"] - before["sent"])
        out["zk_requests_per_s"] = round(launchers_sent / wall, 1)
        out["zk_requests_per_handover"] = round(launchers_sent / completed, 1) \
            if completed else None
        out["zk_all_requests_per_handover"] = round(sum(received) / completed, 1) \
            if completed else None
    zk_cpu = [b is not None and a is not None and a - b
              for a, b in zip(after["zk_cpu"], before["zk_cpu"])]
    if all(c is not False for c in zk_cpu):
        out["zk_cpu_percent"] = round(100 * sum(zk_cpu) / wall, 1)
    out["tool_cpu_percent"] = round(100 * (after["tool_cpu"] - before["tool_cpu"]) / wall, 1)
    return out


def zk_sizes(reading: list[dict[str, float] | None]) -> dict[str, Any]:
    """Data size, znodes and watches as each member's mntr says (the watches add up)."""
    ok = [r for r in reading if r]
    if not ok:
        return {}
    return {"data_size_mb": round(max(r.get("zk_approximate_data_size", 0) for r in ok) / 2**20,
                                  2),
            "znodes": int(max(r.get("zk_znode_count", 0) for r in ok)),
            "watches": int(sum(r.get("zk_watch_count", 0) for r in ok)),
            "connections": int(sum(r.get("zk_num_alive_connections", 0) for r in ok))}
