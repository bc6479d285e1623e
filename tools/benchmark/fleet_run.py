"""One fleet run at one size: spread, steady stream, a launcher killed, a launcher joining.

The phases, on a 3-server ensemble and a steady open-loop stream of one-node
requests over every provider's label:

1. start: P*N ready nodes prefilled, L launchers started; until every provider
   lease is held by its owner by the spread (spread.assign over the live ones).
2. steady: hand-over latency of the requests made in a window, each launcher's
   CPU and memory, ZooKeeper requests (every member's mntr, less the tool's own).
3. takeover: SIGKILL of the last launcher; until its providers' leases are held
   by the others, and until a request for each of them (made right after the
   kill) is fulfilled; then until the spread over the survivors is settled.
4. rebalance: a new launcher starts; until the leases are as the spread over
   the live launchers says, and a request on each of its providers is served.
5. tail: the stream stops; every request made must end.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmark.fleet_stack import (
    Launchers,
    Size,
    label_of,
    ops_summary,
    prefill,
    provider_names,
    write_config,
)
from benchmark.fleet_watch import LeaseWatch, Sampler, Stream, wait_outcomes, window, zk_sizes
from benchmark.measure import percentiles, process_memory
from benchmark.scenarios import Stack, summarise_profile
from benchmark.session import Session, ZkOptions
from nodepool.launcher.spread import ProviderFilter, assign

SPREAD_TIMEOUT = 120.0


@dataclasses.dataclass
class Options:
    launchers: int = 4
    rate: float = 1.0              # requests per second, over every provider's label
    warmup: float = 5.0            # seconds of stream before the steady window
    steady: float = 60.0           # the steady window, seconds
    tail: float = 3.0              # stream after the join settled, seconds
    session_timeout: float = 10.0  # zookeeper-timeout (Nodepool's default)
    request_timeout: float = 180.0
    sessions: int = 4
    metrics: str = "off"
    profile: bool = False          # py-spy on the first launcher over the steady window
    py_spy: str = "py-spy"
    count_ops: bool = False        # the launchers count their ZooKeeper requests by path


def spread_of(owner_ids: list[str], providers: list[str]) -> dict[str, str]:
    return assign(providers, dict.fromkeys(owner_ids, ProviderFilter()))


def ms(outs: list[Any]) -> dict[str, float] | None:
    return percentiles((o.latency for o in outs if o.latency is not None
                        and o.state == "fulfilled"), 1000)


def since(t0: float, t1: float | None) -> float | None:
    return None if t1 is None else round(t1 - t0, 2)


class FleetRun:
    """One size on one ensemble and chroot; `execute()` returns the report."""

    def __init__(self, size: Size, opts: Options, ensemble: Any, chroot: str, workdir: Path):
        self.size, self.opts, self.ensemble, self.workdir = size, opts, ensemble, workdir
        certs = ensemble.certs
        self.zk = ZkOptions(ensemble.tls_hosts, chroot, certs["cert"], certs["key"], certs["ca"],
                            timeout=30.0)
        self.providers = provider_names(size)
        self.stack = Stack()
        self.launchers: Launchers | None = None
        self.sessions: list[Session] = []
        self.report: dict[str, Any] = {"size": size.label, "providers": size.providers,
                                       "nodes_per_provider": size.nodes,
                                       "nodes": size.providers * size.nodes,
                                       "launchers": opts.launchers,
                                       "session_timeout_s": opts.session_timeout,
                                       "rate": opts.rate, "ownership_problems": []}

    def execute(self) -> dict[str, Any]:
        try:
            self._run()
        finally:
            self.close()
        return self.report

    def close(self) -> None:
        if self.launchers is not None:
            self.launchers.stop_all()
            if self.opts.count_ops:
                self.report["zk_ops"] = ops_summary(self.workdir)
        self.stack.stop_all()
        for session in self.sessions:
            try:
                session.close()
            except Exception:
                pass

    def owner_ids(self) -> list[str]:
        return [la.owner_id for la in self.launchers.live.values()]

    def _run(self) -> None:
        r, opts = self.report, self.opts
        config = write_config(self.workdir / "nodepool.yaml", self.size, self.ensemble.tls_hosts,
                              self.zk.chroot, self.ensemble.certs, opts.session_timeout)
        r["prefill_s"] = round(prefill(self.zk, self.size), 2)
        self.launchers = Launchers(self.stack, config, self.workdir, opts.metrics,
                                   opts.count_ops)
        t0 = time.monotonic()
        procs = [self.launchers.start() for _ in range(opts.launchers)]
        for la in procs:
            self.launchers.await_ready(la)
        self.sessions = [Session(self.zk.connect(), f"fleet-requestor-{i}")
                         for i in range(opts.sessions)]
        watcher = Session(self.zk.connect(), "fleet-watcher")
        self.sessions.append(watcher)
        leases = LeaseWatch(watcher.client, self.providers)
        want = spread_of(self.owner_ids(), self.providers)
        spread_at = leases.wait(lambda h: h == want, SPREAD_TIMEOUT)
        r["start"] = {"launcher_start_s": [la.start_s for la in procs],
                      "spread_s": since(t0, spread_at),
                      "providers_per_launcher": sorted(
                          sum(1 for o in want.values() if o == la.owner_id) for la in procs)}
        if spread_at is None:
            raise RuntimeError(f"the providers were not spread as {want} within "
                               f"{SPREAD_TIMEOUT:.0f}s: leases {leases.snapshot()}")
        self.check_owners(leases, "start")
        sampler = Sampler(self.ensemble.members, lambda: [s.client for s in self.sessions])
        r["zookeeper"] = zk_sizes(sampler.sample({})["mntr"])
        stream = Stream(self.sessions[:-1], watcher, [label_of(p) for p in self.providers],
                        opts.rate, opts.request_timeout, max_requests=int(
                            opts.rate * (opts.warmup + opts.steady + 600)))
        stream.start()
        try:
            self._steady(stream, sampler)
            self._takeover(stream, leases)
            self._rebalance(stream, leases)
            time.sleep(opts.tail)
        except BaseException:   # Ctrl-C or a phase that failed: no waiting for the stream
            stream.abort()
            raise
        r["all_ended"] = stream.finish(opts.request_timeout + 30)
        self.check_owners(leases, "end")
        self._summarise(stream)

    def pids(self) -> dict[str, int]:
        return {la.name: la.pid for la in self.launchers.live.values()}

    def _steady(self, stream: Stream, sampler: Sampler) -> None:
        time.sleep(self.opts.warmup)
        profiler = self._start_profile() if self.opts.profile else None
        before = sampler.sample(self.pids())
        time.sleep(self.opts.steady)
        after = sampler.sample(self.pids())
        if profiler is not None:
            self._stop_profile(profiler)
        outs = [o for o in stream.outcomes() if before["t"] <= o.created_at <= after["t"]]
        completed = sum(1 for o in stream.outcomes()
                        if o.released_at is not None and before["t"] <= o.released_at <= after["t"])
        steady = window(before, after, completed)
        steady["latency_ms"] = ms(outs)
        steady["zookeeper"] = zk_sizes(after["mntr"])
        self.report["steady"] = steady

    def _takeover(self, stream: Stream, leases: LeaseWatch) -> None:
        victim = list(self.launchers.live.values())[-1]
        held = sorted(p for p, h in leases.snapshot().items() if h == victim.owner_id)
        killed_at = time.monotonic()
        self.launchers.kill(victim.name)
        probes = stream.probe([label_of(p) for p in held])
        alive = set(self.owner_ids())
        limit = self.opts.session_timeout + 90
        taken = leases.wait(lambda h: all(h[p] in alive for p in held), limit)
        served = wait_outcomes(probes, limit)
        want = spread_of(sorted(alive), self.providers)
        settled = leases.wait(lambda h: h == want, SPREAD_TIMEOUT)
        self.report["takeover"] = {"victim": victim.name, "providers": len(held),
                                   "leases_taken_s": since(killed_at, taken),
                                   "served_s": since(killed_at, served),
                                   "probe_states": sorted({str(o.state) for o in probes}),
                                   "spread_settled_s": since(killed_at, settled)}
        self.check_owners(leases, "after takeover")

    def _rebalance(self, stream: Stream, leases: LeaseWatch) -> None:
        joined_at = time.monotonic()
        joiner = self.launchers.start()
        self.launchers.await_ready(joiner)
        ready_at = time.monotonic()
        want = spread_of(self.owner_ids(), self.providers)
        theirs = sorted(p for p, o in want.items() if o == joiner.owner_id)
        settled = leases.wait(lambda h: h == want, SPREAD_TIMEOUT)
        probes = stream.probe([label_of(p) for p in theirs])
        served = wait_outcomes(probes, self.opts.request_timeout)
        self.report["rebalance"] = {"joiner": joiner.name, "its_share": len(theirs),
                                    "ready_s": since(joined_at, ready_at),
                                    "rebalanced_s": since(joined_at, settled),
                                    "after_ready_s": since(ready_at, settled),
                                    "served_s": since(joined_at, served),
                                    "probe_states": sorted({str(o.state) for o in probes})}
        self.check_owners(leases, "after rebalance")

    def check_owners(self, leases: LeaseWatch, when: str, timeout: float = 10.0) -> None:
        """Every provider runs on exactly one live launcher, its lease holder; two at once
        is recorded at once; none (a lease just won, its worker starting) is asked again."""
        deadline = time.monotonic() + timeout
        while True:
            running: dict[str, list[str]] = {p: [] for p in self.providers}
            for la in self.launchers.live.values():
                for provider in self.launchers.workers(la):
                    running.setdefault(provider, []).append(la.owner_id)
            holders = leases.snapshot()
            doubled = {p: o for p, o in running.items() if len(o) > 1}
            wrong = {p: (o, holders.get(p)) for p, o in running.items()
                     if len(o) == 1 and o[0] != holders.get(p)}
            missing = [p for p, o in running.items() if not o]
            if doubled:
                self.report["ownership_problems"].append(f"{when}: run twice: {doubled}")
            if not (wrong or missing) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if wrong or missing:
            self.report["ownership_problems"].append(
                f"{when}: not run by the lease holder: {wrong}; run by nobody: {missing}")
        self.report.setdefault("ownership_checks", []).append(when)

    def _summarise(self, stream: Stream) -> None:
        r = self.report
        outs = stream.outcomes()
        states: dict[str, int] = {}
        for o in outs:
            states[str(o.state)] = states.get(str(o.state), 0) + 1
        r["requests"] = {"made": len(outs), "fulfilled": states.get("fulfilled", 0),
                         "completed": sum(1 for o in outs if o.released_at is not None),
                         "states": states,
                         "errors": sorted({o.error for o in outs if o.error})[:10]}
        r["latency_ms_all"] = ms(outs)
        r["all_deleted"] = stream.deletions.wait_all(60)
        r["rss_mb"] = {la.name: (process_memory(la.pid) or {}).get("peak_rss_mb")
                       for la in self.launchers.live.values()}

    def _start_profile(self) -> subprocess.Popen:
        la = next(iter(self.launchers.live.values()))
        raw = self.workdir / f"profile-{la.name}.txt"
        self.report["profile_file"] = str(raw)
        return self.stack.start([self.opts.py_spy, "record", "--pid", str(la.pid), "--rate",
                                 "100", "--format", "raw", "--threads", "--gil",
                                 "--nonblocking", "-o", str(raw)],
                                self.workdir / "py-spy.log", stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)

    def _stop_profile(self, profiler: subprocess.Popen) -> None:
        self.stack.stop(profiler, signal.SIGINT)
        raw = Path(self.report["profile_file"])
        if raw.exists():
            self.report["profile"] = summarise_profile(raw, top=12)
