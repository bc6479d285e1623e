"""Options and the run: start the cluster, load and chaos for --duration, drain, stop, check, summarise."""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from .chaos import CLOUD_KINDS, PROCESS_KINDS, Chaos, make_plan
from .checks import ServerWatch, check_after_drain, check_logs
from .cluster import Cluster, Pools
from .load import Load, connect
from .report import Ledger, summary_line, write_report

ALL_CHAOS = (*PROCESS_KINDS, *CLOUD_KINDS, "create-error")
SHOWN_EVENTS = {"kill", "restart", "pause", "resume", "leave", "join", "leader-kill", "member-start", "quota-cut",
                "quota-restore", "leader-skipped", "chaos-cloud-error"}
READY_TIMEOUT = 90.0  # launchers up and both pools registered


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soak", description=(
        "Chaos soak: a 3-server ZooKeeper ensemble, the OpenStack simulator and N launchers "
        "under a Zuul-style load and seeded faults, then a drain and invariant checks. One "
        "summary line on stdout; exit 0 only when no invariant was violated."))
    p.add_argument("--duration", type=float, default=150.0,
                   help="seconds of load and chaos, before the drain (default 150)")
    p.add_argument("--seed", type=int, help="seed of the chaos plan and the load (default: random, "
                   "printed in the summary)")
    p.add_argument("--launchers", type=int, default=3, help="launcher processes (default 3)")
    p.add_argument("--requests", type=int,
                   help="requests in all, spread evenly over the duration (default 0.8 per second)")
    p.add_argument("--requestors", type=int, default=3, help="requestor sessions (default 3)")
    p.add_argument("--workers", type=int, default=3,
                   help="requests each requestor has in flight at most (default 3)")
    p.add_argument("--max-servers", type=int, default=5,
                   help="max-servers of each of the two pools (default 5)")
    p.add_argument("--quota", type=int, help="the cloud's instance quota (default 2*max-servers+2)")
    p.add_argument("--min-ready", type=int, default=1, help="min-ready of label small (default 1)")
    p.add_argument("--zk-timeout", type=float, default=4.0,
                   help="the launchers' zookeeper-timeout, seconds (default 4)")
    p.add_argument("--chaos", default=",".join(ALL_CHAOS),
                   help=f"chaos kinds, comma-separated, or 'none' (default all: {','.join(ALL_CHAOS)})")
    p.add_argument("--create-error-rate", type=float, default=0.05,
                   help="share of creates that end in ERROR (default 0.05)")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds the drain may take before what is left is reported (default 120)")
    p.add_argument("--real-nodes", action="store_true",
                   help="servers are real nodes (root): the launchers keyscan them and the soak "
                   "connects to port 22 of every handed node")
    p.add_argument("--run-dir", type=Path, help="directory for logs and data (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run directory even on success")
    return p


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ledger = Ledger()
        self.kinds = set() if args.chaos == "none" else {k.strip() for k in args.chaos.split(",") if k}
        unknown = self.kinds - set(ALL_CHAOS)
        if unknown:
            raise SystemExit(f"soak: unknown chaos kind(s) {sorted(unknown)}; known: {','.join(ALL_CHAOS)}")
        self.pools = Pools(max_servers=args.max_servers, min_ready=args.min_ready,
                           zk_timeout=args.zk_timeout, host_key_checking=args.real_nodes)
        self.run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="soak-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        quota = args.quota or self.pools.total + 2
        self.cluster = Cluster(self.run_dir, args.launchers, self.pools, quota, args.real_nodes)
        self.load: Load | None = None
        self.extra: dict[str, Any] = {}
        self.next_status = 60.0
        self.background: list[Any] = []  # ServerWatch and Chaos: each has a `stop` event

    def progress(self, message: str) -> None:
        print(f"soak [{self.ledger.now():6.1f}s] {message}", file=sys.stderr, flush=True)

    def show_event(self, event: dict[str, Any]) -> None:
        """Progress: process chaos and quota cuts as they happen, counters once a minute; bursts
        only in report.json."""
        if event["kind"] in SHOWN_EVENTS:
            self.progress(" ".join(f"{k}={v}" for k, v in event.items() if k != "at"))

    def status(self) -> None:
        if self.ledger.now() >= self.next_status:
            self.next_status = self.ledger.now() + 60
            c = self.ledger.counts
            self.progress(f"requests={c['requests']} fulfilled={c['fulfilled']} failed={c['failed']} "
                          f"violations={len(self.ledger.violations)}")

    def watchdog(self) -> None:
        """A launcher that exited by itself is a violation; it is restarted so the soak goes on."""
        self.status()
        for launcher in self.cluster.launchers:
            code = launcher.exited()
            if code is not None and not launcher.expect_exit:
                tail = launcher.logs[-1].read_text(errors="replace").splitlines()[-15:]
                self.ledger.violation("launcher-exited", f"{launcher.name} (pid {launcher.pid}) "
                                      f"exited by itself with code {code}", log=str(launcher.logs[-1]),
                                      tail=tail)
                self.progress(f"{launcher.name} exited by itself ({code}); restarting it")
                launcher.start()

    def wait_ready(self, zk: Any) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.watchdog()
            try:
                launchers = zk.get_children("/nodepool/components/launcher")
                pools = zk.get_children("/nodepool/components/pool")
            except NoNodeError:
                launchers, pools = [], []
            if len(launchers) >= self.args.launchers and len(pools) >= 2:
                return
            time.sleep(0.5)
        raise RuntimeError(f"launchers not registered within {READY_TIMEOUT:.0f}s; see the logs in "
                           f"{self.run_dir}")

    def quiet(self, zk: Any) -> str | None:
        """None when nothing is in flight (no request, only unlocked ready spares, one server per
        record and none deleting), else what still is."""
        try:
            requests = zk.get_children("/nodepool/requests")
            if requests:
                return f"requests left: {requests[:5]}"
            ids = set()
            for nid in zk.get_children("/nodepool/nodes"):
                raw, _ = zk.get(f"/nodepool/nodes/{nid}")
                node = json.loads(raw or b"{}")
                if node.get("state") != "ready" or node.get("allocated_to"):
                    return f"node {nid} {node.get('state')}"
                if zk.exists(f"/nodepool/nodes/{nid}/lock") and zk.get_children(f"/nodepool/nodes/{nid}/lock"):
                    return f"node {nid} locked"
                ids.add(node.get("external_id"))
        except (KazooException, ValueError) as exc:
            return f"ZooKeeper: {type(exc).__name__}"
        for server in self.cluster.ctl.servers():
            if server["deleting"] or server["id"] not in ids:
                return f"server {server['id']} {server['status']} deleting={server['deleting']}"
        return None

    def drain(self, zk: Any) -> None:
        assert self.load is not None
        started = time.monotonic()
        deadline = started + self.args.drain_timeout
        self.load.join(self.args.drain_timeout)
        # Stuck requests were cancelled when the bound ran out: look a few more times anyway.
        deadline = max(deadline, time.monotonic() + 5)
        why, calm = "", 0
        while time.monotonic() < deadline and calm < 2:
            self.watchdog()
            why = self.quiet(zk) or ""
            calm = calm + 1 if not why else 0
            time.sleep(0.5)
        self.extra["drain_seconds"] = round(time.monotonic() - started, 1)
        if calm < 2:
            self.ledger.event("drain-timeout", left=why)
            self.progress(f"drain not done after {self.args.drain_timeout:.0f}s: {why}")
        else:
            self.progress(f"drained in {self.extra['drain_seconds']}s")

    def stop_launchers(self) -> None:
        for launcher in self.cluster.launchers:
            launcher.expect_exit = True
            launcher.resume()
            launcher.send_term()  # all at once: they stop in parallel
        stops = {}
        for launcher in self.cluster.launchers:
            code, seconds = launcher.terminate()
            stops[launcher.name] = {"code": code, "seconds": round(seconds, 1)}
            if code != 0:
                tail = launcher.logs[-1].read_text(errors="replace").splitlines()[-15:]
                self.ledger.violation("launcher-stop", f"{launcher.name} (pid {launcher.pid}) "
                                      f"after SIGTERM: exit {code} in {seconds:.1f}s (bound "
                                      "45s)", tail=tail)
        self.extra["launcher_stops"] = stops

    def run(self) -> None:
        args = self.args
        self.cluster.start()
        zk = connect(self.cluster.zk.plain_hosts)
        try:
            self.wait_ready(zk)
            self.progress(f"up: ZooKeeper {self.cluster.zk.plain_hosts}, simulator "
                          f"{self.cluster.sim.url}, {args.launchers} launcher(s); run dir {self.run_dir}")
            total = args.requests if args.requests is not None else int(args.duration * 0.8)
            self.load = Load(self.cluster.zk.plain_hosts, self.cluster.ctl, self.ledger, args.seed,
                             total, args.duration, args.requestors, args.workers,
                             check_ssh=args.real_nodes).start()
            watch = ServerWatch(self.cluster.ctl, self.ledger, self.pools.providers()).start()
            self.background.append(watch)
            plan = make_plan(args.seed, args.duration, args.launchers, args.zk_timeout,
                             args.max_servers, self.kinds)
            self.extra["plan"] = plan.describe()
            chaos = Chaos(self.cluster, self.ledger, plan, args.seed,
                          args.create_error_rate if "create-error" in self.kinds else 0.0).start()
            self.background.append(chaos)
            self.ledger.on_event = self.show_event
            chaos.run_process_track(args.duration, self.watchdog)
            self.load.stop_new()
            chaos.finish()
            self.ledger.on_event = None
            self.progress(f"load and chaos over ({self.ledger.counts['requests']} requests); draining")
            self.drain(zk)
            waits = sorted(((r.final_at or self.ledger.now()) - r.created_at, r.rid, r.labels, r.state)
                           for r in self.load.requests if r.rid)
            self.extra["slowest_requests"] = [
                {"request": rid, "labels": labels, "state": state, "seconds": round(wait, 1)}
                for wait, rid, labels, state in waits[-5:][::-1]]
            watch.finish()
            self.extra["peak_live_servers"] = dict(watch.peak)
            self.extra["peak_listed_servers"] = dict(watch.peak_all)
            self.stop_launchers()
            self.extra["after_drain"] = check_after_drain(zk, self.cluster.ctl, self.ledger)
        finally:
            for part in self.background:  # whatever ended the run, the threads stop first
                part.stop.set()
            self.load and self.load.close()
            try:
                zk.stop()
                zk.close()
            except Exception:
                pass

    def check_logs(self) -> None:
        """Whatever ended the run: the tracebacks of every launcher log."""
        logs = [p for launcher in self.cluster.launchers for p in launcher.logs]
        self.extra["logs"] = check_logs(logs, self.ledger)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    run = Run(args)
    # The soak's own kazoo sessions log every connection loss: into the run dir, not stderr.
    logging.basicConfig(filename=str(run.run_dir / "soak.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    code = 0
    try:
        run.run()
    except KeyboardInterrupt:
        run.progress("interrupted: stopping everything")
        run.ledger.violation("interrupted", "the soak was interrupted before its checks")
        code = 130
    except Exception as exc:
        run.progress(f"error: {type(exc).__name__}: {exc}")
        run.ledger.violation("soak-error", f"the soak itself failed: {type(exc).__name__}: {exc}")
        code = 2
    finally:
        run.cluster.stop()
    run.check_logs()
    duration = time.monotonic() - started
    failed = bool(run.ledger.violations)
    write_report(run.run_dir / "report.json", run.ledger, {k: str(v) for k, v in vars(args).items()},
                 run.extra)
    for violation in run.ledger.violations:
        print(violation.line(), file=sys.stderr)
    keep = failed or args.keep or args.run_dir is not None
    print(summary_line(run.ledger, duration, args.seed, run.run_dir if keep else None), flush=True)
    if not keep:
        shutil.rmtree(run.run_dir, ignore_errors=True)
    return code or (1 if failed else 0)
