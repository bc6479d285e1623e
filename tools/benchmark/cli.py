"""Arguments, the run (setup, load, deletion tail) and its one-line JSON report."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from .deletion import DeletionWatcher
from .drive import Timers
from .lifecycle import Lifecycle, Outcome
from .load import (
    background_states,
    closed_loop,
    count_ready,
    create_background,
    delete_background,
    open_loop,
    settle,
    wait_until,
)
from .measure import (
    GcPauses,
    delta,
    mntr,
    own_cpu,
    percentiles,
    process_cpu,
    process_memory,
    quiet_gc,
)
from .session import Session, ZkOptions

SETUP_DONE = "benchmark: setup done, load starts"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark", description="Drive a launcher as CI masters do (ZooKeeper only) and "
        "print one JSON line of measurements.")
    zk = p.add_argument_group("ZooKeeper")
    zk.add_argument("--zk-hosts", default="127.0.0.1:2181", help="host:port[,host:port...]")
    zk.add_argument("--zk-chroot", default="", help="chroot the launcher uses, e.g. /bench")
    zk.add_argument("--tls-cert", help="client certificate (PEM); any TLS option turns TLS on")
    zk.add_argument("--tls-key", help="client key (PEM)")
    zk.add_argument("--tls-ca", help="CA bundle (PEM) to verify the server")
    zk.add_argument("--zk-4lw", metavar="HOST:PORT",
                    help="a plain port for `mntr` (server packet counters); none: not counted")
    zk.add_argument("--zk-pid", type=int, help="ZooKeeper's pid: report its CPU seconds too")
    load = p.add_argument_group("load")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight (default 1)")
    mode.add_argument("--rate", type=float, help="open loop: requests started per second")
    load.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals")
    load.add_argument("--requests", type=int, default=100, help="requests to make (default 100)")
    load.add_argument("--nodes-per-request", type=int, default=1)
    load.add_argument("--label", default="small")
    load.add_argument("--hold", type=float, default=0.0, help="seconds a job holds its nodes")
    load.add_argument("--priority", type=int, default=200)
    load.add_argument("--timeout", type=float, default=60.0,
                      help="seconds a request may wait for fulfilled before it is cancelled")
    load.add_argument("--sessions", type=int,
                      help="kazoo sessions, one requestor id each (default: min(concurrency, 8))")
    load.add_argument("--warmup", type=int, default=0,
                      help="requests made one at a time before measuring (not reported)")
    setup = p.add_argument_group("setup")
    setup.add_argument("--background", type=int, default=0,
                       help="requests created before the run that stay waiting (deleted after)")
    setup.add_argument("--background-label", default="busy")
    setup.add_argument("--wait-ready", type=int, default=0,
                       help="first wait until this many ready unallocated nodes of --label exist")
    setup.add_argument("--wait-ready-timeout", type=float, default=300.0)
    setup.add_argument("--settle-cpu", type=float,
                       help="first wait until the launcher uses less than this CPU%% over 1 s")
    setup.add_argument("--settle-timeout", type=float, default=120.0)
    meas = p.add_argument_group("measurement")
    meas.add_argument("--launcher-pid", type=int, help="read the launcher's CPU and RSS from /proc")
    meas.add_argument("--delete-timeout", type=float, default=60.0,
                      help="seconds to wait after the run for every used node to be deleted")
    meas.add_argument("--idle", type=float, metavar="SECONDS",
                      help="make no requests: measure the launcher's CPU%% over SECONDS")
    meas.add_argument("--name", default="", help="a scenario name copied into the report")
    return p


class Run:
    """One benchmark run: sessions, setup, load, tail; `report()` is the JSON dict."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.stop = threading.Event()
        self.zk = ZkOptions(args.zk_hosts, args.zk_chroot, args.tls_cert, args.tls_key, args.tls_ca)
        self.sessions: list[Session] = []
        self.watcher: Session | None = None
        self.background: list[str] = []
        self.report: dict[str, Any] = {"name": args.name}
        self.timers = Timers()

    def open_sessions(self, count: int) -> None:
        tag = f"{os.getpid()}"
        for i in range(count):
            self.sessions.append(Session(self.zk.connect(), f"bench-{tag}-{i}"))
        self.watcher = Session(self.zk.connect(), f"bench-{tag}-watcher")

    def close(self) -> None:
        self.timers.close()
        for session in [*self.sessions, *([self.watcher] if self.watcher else [])]:
            try:
                session.close()
            except Exception:
                pass

    def sent(self) -> int:
        everyone = [*self.sessions, *([self.watcher] if self.watcher else [])]
        return sum(s.client.sent for s in everyone)

    def execute(self) -> dict[str, Any]:
        a = self.args
        concurrency = a.concurrency if a.rate is None else None
        if a.rate is None and concurrency is None:
            concurrency = 1
        n_sessions = a.sessions or max(1, min(concurrency or 8, 8))
        self.open_sessions(n_sessions)
        r = self.report
        r.update(mode="idle" if a.idle else ("open" if a.rate else "closed"),
                 concurrency=concurrency, rate=a.rate, requests=a.requests,
                 nodes_per_request=a.nodes_per_request, label=a.label, hold_s=a.hold,
                 sessions=n_sessions, tls=self.zk.tls, launcher_pid=a.launcher_pid)
        self._setup()
        print(SETUP_DONE, file=sys.stderr, flush=True)   # bench-scenarios profiles from here
        if a.idle:
            self._measure_idle(a.idle)
            return r
        labels = [a.label] * a.nodes_per_request
        if a.warmup:
            warm = Lifecycle(labels, a.hold, a.timeout, DeletionWatcher(self.watcher.client),
                             self.timers, a.priority, self.stop)
            closed_loop(warm, self.sessions[:1], 1, a.warmup)
            warm.deletions.wait_all(a.delete_timeout)
        life = Lifecycle(labels, a.hold, a.timeout, DeletionWatcher(self.watcher.client),
                         self.timers, a.priority, self.stop)
        with quiet_gc(), GcPauses() as gc_pauses:
            before = self._sample()
            if a.rate:
                outcomes, lags = open_loop(life, self.sessions, a.rate, a.requests, a.poisson)
                r["dispatch_lag_ms"] = percentiles(lags, 1000)
            else:
                outcomes = closed_loop(life, self.sessions, concurrency, a.requests)
        load_end = time.monotonic()
        at_load_end = self._sample()
        all_deleted = life.deletions.wait_all(a.delete_timeout)
        tail_end = time.monotonic()
        after = self._sample()
        self._summarise(outcomes, life.deletions, before, after, load_end, tail_end, all_deleted)
        r["tool"]["gc"] = gc_pauses.report()
        if r.get("launcher") and at_load_end["launcher_cpu"] is not None:
            # CPU while requests were made, without the deletion tail.
            busy = at_load_end["launcher_cpu"] - before["launcher_cpu"]
            load_wall = max(1e-9, load_end - before["t"])
            r["launcher"]["load_cpu_percent"] = round(100 * busy / load_wall, 2)
        if self.background:
            r["background_states"] = background_states(self.sessions[0], self.background)
        return r

    def _setup(self) -> None:
        a, r = self.args, self.report
        t0 = time.monotonic()
        if a.background:
            self.background = create_background(self.sessions[0], a.background,
                                                a.background_label, a.priority)
            r["background"] = len(self.background)
        if a.wait_ready:
            ok = wait_until(lambda: count_ready(self.sessions[0], a.label) >= a.wait_ready,
                            a.wait_ready_timeout, 0.5, self.stop)
            r["wait_ready_ok"] = ok
        if a.settle_cpu is not None and a.launcher_pid:
            r["settled_cpu_percent"] = settle(a.launcher_pid, a.settle_cpu, 1.0,
                                              a.settle_timeout, self.stop)
        r["setup_s"] = round(time.monotonic() - t0, 3)

    def _sample(self) -> dict[str, Any]:
        a = self.args
        return {"t": time.monotonic(), "tool_cpu": own_cpu(), "sent": self.sent(),
                "launcher_cpu": process_cpu(a.launcher_pid) if a.launcher_pid else None,
                "zk_cpu": process_cpu(a.zk_pid) if a.zk_pid else None,
                "mntr": mntr(a.zk_4lw)}

    def _measure_idle(self, seconds: float) -> None:
        before = self._sample()
        self.stop.wait(seconds)
        after = self._sample()
        wall = after["t"] - before["t"]
        r = self.report
        r["idle_s"] = round(wall, 3)
        r["launcher"] = self._launcher(before, after, wall, 0)
        received = delta(after["mntr"], before["mntr"], "zk_packets_received")
        r["zookeeper"] = {"packets_received_per_s": None if received is None
                          else round((received - (after["sent"] - before["sent"])) / wall, 2)}

    def _launcher(self, before: dict, after: dict, wall: float, done: int) -> dict[str, Any] | None:
        pid = self.args.launcher_pid
        if not pid or before["launcher_cpu"] is None or after["launcher_cpu"] is None:
            return None
        cpu = after["launcher_cpu"] - before["launcher_cpu"]
        out: dict[str, Any] = {"cpu_s": round(cpu, 3), "cpu_percent": round(100 * cpu / wall, 2)}
        if done:
            out["cpu_ms_per_request"] = round(1000 * cpu / done, 3)
        out.update(process_memory(pid) or {})
        return out

    def _summarise(self, outcomes: list[Outcome], deletions: DeletionWatcher, before: dict,
                   after: dict, load_end: float, tail_end: float, all_deleted: bool) -> None:
        r = self.report
        states: dict[str, int] = {}
        errors: dict[str, int] = {}
        for o in outcomes:
            states[o.state or "none"] = states.get(o.state or "none", 0) + 1
            if o.error:
                errors[o.error] = errors.get(o.error, 0) + 1
        done = [o for o in outcomes if o.released_at is not None]
        fulfilled = [o for o in outcomes if o.state == "fulfilled"]
        load_wall = load_end - before["t"]
        wall = tail_end - before["t"]
        examples = [o.detail for o in outcomes if o.detail][:10]
        if examples:
            r["error_examples"] = examples
        r.update(made=len(outcomes), fulfilled=len(fulfilled), completed=len(done),
                 failed=states.get("failed", 0), timeouts=states.get("timeout", 0),
                 failures=len(outcomes) - len(done), states=states, errors=errors)
        r["latency_ms"] = percentiles((o.latency for o in fulfilled if o.latency is not None), 1000)
        # The launcher's own fulfil write (its state_time) minus our create, same clock (wall):
        # what the launcher took, without the watch delivery and our read.
        r["fulfil_written_ms"] = percentiles(
            (o.fulfil_written_wall - o.created_wall for o in fulfilled
             if o.fulfil_written_wall), 1000)
        r["elapsed_s"] = round(load_wall, 3)
        r["throughput_rps"] = round(len(done) / load_wall, 2) if load_wall > 0 else None
        used = len(deletions.released)
        r["nodes_used"] = used
        r["nodes_deleted"] = len(deletions.gone)
        r["all_deleted"] = all_deleted
        r["deletion_started_ms"] = percentiles(deletions.started_latencies(), 1000)
        r["deleted_ms"] = percentiles(deletions.gone_latencies(), 1000)
        last_release = max((o.released_at for o in done), default=None)
        last_gone = max(deletions.gone.values(), default=None)
        r["all_deleted_after_s"] = round(last_gone - last_release, 3) \
            if all_deleted and last_gone and last_release else None
        if not all_deleted:
            r["not_deleted"] = deletions.leftovers()
        if deletions.odd_states:
            r["deletion_odd_states"] = deletions.odd_states
        r["launcher"] = self._launcher(before, after, wall, len(done))
        tool_cpu = after["tool_cpu"] - before["tool_cpu"]
        sent = after["sent"] - before["sent"]
        r["tool"] = {"cpu_s": round(tool_cpu, 3), "cpu_percent": round(100 * tool_cpu / wall, 2),
                     "zk_requests": sent,
                     "zk_requests_per_request": round(sent / len(done), 2) if done else None}
        received = delta(after["mntr"], before["mntr"], "zk_packets_received")
        zk: dict[str, Any] = {}
        if received is not None:
            zk["packets_received"] = int(received)
            zk["packets_sent"] = int(delta(after["mntr"], before["mntr"], "zk_packets_sent") or 0)
            if done:
                zk["requests_per_request"] = round(received / len(done), 2)
                # Everything the server received that our sessions did not send: the launcher's
                # requests (plus a few pings of every session).
                zk["launcher_requests_per_request"] = round((received - sent) / len(done), 2)
            for key in ("zk_znode_count", "zk_watch_count", "zk_num_alive_connections",
                        "zk_max_latency"):
                if key in after["mntr"]:
                    zk[key[3:]] = after["mntr"][key]
        if after["zk_cpu"] is not None and before["zk_cpu"] is not None:
            zk["cpu_s"] = round(after["zk_cpu"] - before["zk_cpu"], 3)
        r["zookeeper"] = zk or None

    def cleanup(self) -> None:
        if self.background and self.sessions:
            try:
                delete_background(self.sessions[0], self.background)
            except Exception as e:
                print(f"benchmark: could not delete background requests: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        print("benchmark: --rate must be > 0", file=sys.stderr)
        return 2
    run = Run(args)

    def on_signal(signum: int, frame: Any) -> None:
        run.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            report = run.execute()
        finally:
            run.cleanup()
            run.close()
    except Exception as e:
        print(f"benchmark: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, sort_keys=False), flush=True)
    if report.get("mode") == "idle":
        return 0
    ok = report.get("failures") == 0 and report.get("all_deleted") and not report.get("errors")
    return 0 if ok else 1
