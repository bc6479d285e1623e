"""Seeded chaos on a schedule: launcher SIGKILL and SIGSTOP, a launcher leaving (SIGTERM) and
joining again, ZooKeeper leader loss, cloud faults, quota cuts.

The plan is drawn up front from `--seed` (which event, when, on whom, how long), so one seed
always asks for the same chaos; what it hits depends on timing. Two tracks run side by side:
process chaos on the main thread (it starts processes: see cluster.py) and cloud chaos on a
thread of its own (control-API calls only), plus a background of about 5 % of creates ending in
ERROR and boot delays re-drawn between 0.5 and 2 s.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .cluster import Cluster
from .report import Ledger

PROCESS_KINDS = ("kill", "pause", "leader", "join")
CLOUD_KINDS = ("burst-500", "burst-503", "burst-429", "delete-error", "quota")
CREATE_ROUTE = "POST /compute/v2.1/servers"
BOOT_DELAYS = (0.5, 2.0)


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the load started
    kind: str
    target: int = 0  # launcher index (kill, pause)
    seconds: float = 0.0  # how long the fault lasts
    count: int = 0  # faults injected (bursts)
    value: int = 0  # the cut quota


@dataclass
class Plan:
    process: list[Event] = field(default_factory=list)
    cloud: list[Event] = field(default_factory=list)

    def describe(self) -> list[dict[str, Any]]:
        return [vars(e) for e in sorted(self.process + self.cloud, key=lambda e: e.at)]


def make_plan(seed: int, duration: float, launchers: int, zk_timeout: float,
              max_servers: int, kinds: set[str]) -> Plan:
    """Every wanted kind at least once, more as the duration allows, spread over the run."""
    rng = random.Random(seed)
    start, end = min(15.0, duration * 0.1), duration - min(20.0, duration * 0.15)
    plan = Plan()
    for track, wanted, every in ((plan.process, PROCESS_KINDS, 30.0), (plan.cloud, CLOUD_KINDS, 15.0)):
        chosen = [k for k in wanted if k in kinds]
        if not chosen or end <= start:
            continue
        count = max(len(chosen), int((end - start) / every))
        order = chosen + [rng.choice(chosen) for _ in range(count - len(chosen))]
        rng.shuffle(order)
        step = (end - start) / count
        for i, kind in enumerate(order):
            at = start + step * i + rng.uniform(0, step * 0.3)
            event = _event(rng, kind, at, launchers, zk_timeout, max_servers)
            if event.kind == "quota":  # restored within the window: the launcher may take a
                # quota refresh (60 s) to see it, and that should not land in the drain
                event = dataclasses.replace(event, seconds=max(5.0, min(event.seconds, end - at)))
            track.append(event)
    return plan


def _event(rng: random.Random, kind: str, at: float, launchers: int, zk_timeout: float,
           max_servers: int) -> Event:
    target = rng.randrange(launchers)
    if kind == "kill":
        return Event(at, kind, target, seconds=rng.uniform(1.0, 4.0))
    if kind == "pause":  # longer than the session timeout: its session expires while stopped
        return Event(at, kind, target, seconds=zk_timeout * 2 + rng.uniform(1.0, 3.0))
    if kind == "leader":
        return Event(at, kind, seconds=rng.uniform(2.0, 5.0))
    if kind == "join":  # leaves in order (hands its providers over), joins again later
        return Event(at, kind, target, seconds=rng.uniform(2.0, 6.0))
    if kind == "quota":
        return Event(at, kind, seconds=rng.uniform(12.0, 20.0), value=rng.randint(1, max_servers - 1))
    return Event(at, kind, count=rng.randint(2, 6))


class Chaos:
    """Runs a plan against a cluster; `finish()` undoes whatever is still in effect."""

    def __init__(self, cluster: Cluster, ledger: Ledger, plan: Plan, seed: int,
                 create_error_rate: float = 0.05) -> None:
        self.cluster, self.ledger, self.plan = cluster, ledger, plan
        self.rng = random.Random(f"{seed}-background")
        self.create_error_rate = create_error_rate
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.cloud_thread = threading.Thread(target=self._cloud_track, name="soak-chaos-cloud",
                                             daemon=True)
        self.zk_down: int | None = None

    def start(self) -> Chaos:
        self.t0 = time.monotonic()
        self.cloud_thread.start()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # -- process chaos, on the main thread ---------------------------------------------------

    def run_process_track(self, until: float, watchdog: Callable[[], None]) -> None:
        """Run the process events due before `until` seconds; call watchdog about every 0.5 s."""
        pending = sorted(self.plan.process, key=lambda e: e.at)
        while self.elapsed() < until:
            watchdog()
            if pending and pending[0].at <= self.elapsed():
                self._process_event(pending.pop(0), watchdog)
            else:
                time.sleep(0.5)

    def _sleep(self, seconds: float, watchdog: Callable[[], None]) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            watchdog()
            time.sleep(min(0.5, left))

    def _process_event(self, event: Event, watchdog: Callable[[], None]) -> None:
        launchers = self.cluster.launchers
        if event.kind in ("kill", "pause"):
            launcher = launchers[event.target]
            if launcher.exited() is not None:
                return
            # (stop it, bring it back, the ledger's name for the comeback, its length key)
            down, up, back, length = {"kill": (launcher.kill, launcher.start, "restart", "down"),
                                      "pause": (launcher.pause, launcher.resume, "resume",
                                                "seconds")}[event.kind]
            down()
            self.ledger.count(f"chaos.{event.kind}")
            self.ledger.event(event.kind, launcher=launcher.name, pid=launcher.pid,
                              **{length: round(event.seconds, 1)})
            self._sleep(event.seconds, watchdog)
            up()
            self.ledger.event(back, launcher=launcher.name, pid=launcher.pid)
        elif event.kind == "join":
            self._leave_and_join(launchers[event.target], event, watchdog)
        elif event.kind == "leader":
            zk = self.cluster.zk
            try:
                leader = zk.leader()
            except Exception as exc:  # no quorum right now: skip this one
                self.ledger.event("leader-skipped", reason=str(exc))
                return
            zk.kill(leader)
            self.zk_down = leader
            self.ledger.count("chaos.leader")
            self.ledger.event("leader-kill", member=leader, down=round(event.seconds, 1))
            self._sleep(event.seconds, watchdog)
            zk.start_member(leader)
            self.zk_down = None
            self.ledger.event("member-start", member=leader)

    def _leave_and_join(self, launcher: Any, event: Event, watchdog: Callable[[], None]) -> None:
        """SIGTERM: its providers are handed over; then it starts again and takes its share."""
        if launcher.exited() is not None:
            return
        pid = launcher.pid
        code, took = launcher.terminate()
        self.ledger.count("chaos.join")
        self.ledger.event("leave", launcher=launcher.name, pid=pid, code=code,
                          stop_seconds=round(took, 1), away=round(event.seconds, 1))
        if code != 0:
            self.ledger.violation("launcher-stop", f"{launcher.name} (pid {pid}) left with exit "
                                  f"code {code} after {took:.1f}s", log=str(launcher.logs[-1]))
        self._sleep(event.seconds, watchdog)
        launcher.start()
        self.ledger.event("join", launcher=launcher.name, pid=launcher.pid)

    # -- cloud chaos, on its own thread ------------------------------------------------------

    def _cloud_track(self) -> None:
        pending = sorted(self.plan.cloud, key=lambda e: e.at)
        ctl = self.cluster.ctl
        creates_seen = self._creates()
        next_boot = 0.0
        restore_at: float | None = None
        while not self.stop.wait(1.0):
            try:
                now = self.elapsed()
                creates = self._creates()
                for _ in range(max(0, creates - creates_seen)):
                    if self.rng.random() < self.create_error_rate:
                        ctl.inject("create_error", count=1)
                        self.ledger.count("chaos.create_error")
                creates_seen = creates
                if now >= next_boot:
                    ctl.set_timings(boot_delay=round(self.rng.uniform(*BOOT_DELAYS), 2))
                    next_boot = now + 5.0
                if restore_at is not None and now >= restore_at:
                    ctl.set_quotas(instances=self.cluster.quota)
                    self.ledger.event("quota-restore", instances=self.cluster.quota)
                    restore_at = None
                while pending and pending[0].at <= now:
                    event = pending.pop(0)
                    if event.kind == "quota":
                        if restore_at is None:
                            ctl.set_quotas(instances=event.value)
                            restore_at = now + event.seconds
                            self.ledger.count("chaos.quota")
                            self.ledger.event("quota-cut", instances=event.value,
                                              seconds=round(event.seconds, 1))
                    else:
                        self._inject(event)
            except Exception as exc:  # the simulator answered badly: note it, keep going
                self.ledger.event("chaos-cloud-error", error=f"{type(exc).__name__}: {exc}")
        if restore_at is not None:
            ctl.set_quotas(instances=self.cluster.quota)
            self.ledger.event("quota-restore", instances=self.cluster.quota)

    def _creates(self) -> int:
        return int(self.cluster.ctl.calls().get(CREATE_ROUTE, 0))

    def _inject(self, event: Event) -> None:
        ctl = self.cluster.ctl
        if event.kind == "burst-500":
            ctl.inject("http_error", status=500, count=event.count, path=r"^/compute/v2\.1/servers")
        elif event.kind == "burst-503":
            ctl.inject("http_error", status=503, retry_after=1, count=event.count,
                       path=r"^/(compute|network)/")
        elif event.kind == "burst-429":
            ctl.inject("rate_limit", retry_after=1, count=event.count, path=r"^/(compute|network)/")
        elif event.kind == "delete-error":
            ctl.inject("delete_error", count=event.count)
        self.ledger.count("chaos.fault")
        self.ledger.event(event.kind, count=event.count)

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Stop the cloud track; undo what is in effect: quota, faults, pauses, dead processes."""
        self.stop.set()
        if self.cloud_thread.is_alive():
            self.cloud_thread.join(30)
        ctl = self.cluster.ctl
        left = ctl.faults()
        if left:
            self.ledger.event("faults-cleared", left=[f.get("kind") for f in left])
        ctl.clear_faults()
        ctl.set_quotas(instances=self.cluster.quota)
        ctl.set_timings(boot_delay=1.0)
        if self.zk_down is not None:
            self.cluster.zk.start_member(self.zk_down)
            self.zk_down = None
        for launcher in self.cluster.launchers:
            launcher.resume()
