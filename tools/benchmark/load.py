"""Closed loop (N requests in flight) and open loop (R requests/s) drivers, and setup helpers."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoNodeError

from . import drive
from .lifecycle import Lifecycle, Outcome
from .measure import process_cpu
from .protocol import NODES, request_body, request_path, request_prefix
from .session import Session


class Runner:
    """Starts lifecycles and collects their outcomes; `wait()` until every started one ended."""

    def __init__(self, life: Lifecycle):
        self.life = life
        self.outcomes: list[Outcome] = []
        self._cond = threading.Condition()
        self._running = 0

    def start(self, session: Session, then: Callable[[], None] | None = None) -> Outcome:
        """One request's life on session; `then()` runs when it has ended (on a kazoo thread).
        Returns its Outcome, filled in as the life goes on."""
        out = Outcome()
        with self._cond:
            self._running += 1

        def done(error: BaseException | None) -> None:
            if error is not None and out.error is None:   # a bug in the lifecycle itself
                out.state = out.state or "error"
                out.error = f"benchmark: {type(error).__name__}: {error}"[:200]
            with self._cond:
                self.outcomes.append(out)
            if then is not None:
                then()   # the next one starts before this one counts as ended
            with self._cond:
                self._running -= 1
                if not self._running:
                    self._cond.notify_all()

        drive.start(self.life.life(session, out), done)
        return out

    def wait(self) -> None:
        """Until nothing runs; a stop ends the requests' waits."""
        with self._cond:
            while self._running:
                if self.life.stop.is_set():
                    self.life.stop_waiting()
                self._cond.wait(0.5)   # wakes when the last one ends; the timeout sees a stop


def closed_loop(life: Lifecycle, sessions: list[Session], concurrency: int,
                requests: int) -> list[Outcome]:
    """`concurrency` slots each run one request after another until `requests` were made."""
    runner = Runner(life)
    tickets = iter(range(requests))
    tickets_lock = threading.Lock()

    def next_in(slot: int) -> None:
        if life.stop.is_set():
            return
        with tickets_lock:
            if next(tickets, None) is None:
                return
        runner.start(sessions[slot % len(sessions)], lambda: next_in(slot))

    for slot in range(concurrency):
        next_in(slot)
    runner.wait()
    return runner.outcomes


def open_loop(life: Lifecycle, sessions: list[Session], rate: float, requests: int,
              poisson: bool, seed: int = 1) -> tuple[list[Outcome], list[float]]:
    """Start a request every 1/rate s on average, whatever is in flight (past capacity they pile
    up). Returns the outcomes and each start's lag behind its schedule (seconds)."""
    runner = Runner(life)
    lags: list[float] = []
    rng = random.Random(seed)
    due = time.monotonic()
    for i in range(requests):
        if life.stop.is_set():
            break
        wait = due - time.monotonic()
        if wait > 0:
            life.stop.wait(wait)  # pacing the arrivals
        lags.append(time.monotonic() - due)
        runner.start(sessions[i % len(sessions)])
        due += rng.expovariate(rate) if poisson else 1.0 / rate
    runner.wait()
    return runner.outcomes, lags


def create_background(session: Session, count: int, label: str, priority: int) -> list[str]:
    """`count` requests that are not served during the run (pipelined creates)."""
    client = session.client
    client.ensure_path("/nodepool/requests")
    ids: list[str] = []
    for start in range(0, count, 500):
        pending = [client.create_async(request_prefix(priority),
                                       request_body([label], session.requestor), sequence=True)
                   for _ in range(min(500, count - start))]
        ids += [r.get(timeout=30).rsplit("/", 1)[1] for r in pending]
    return ids


def background_states(session: Session, ids: list[str]) -> dict[str, int]:
    """How many of the background requests are in each state (or gone)."""
    counts: dict[str, int] = {}
    pending = [session.client.get_async(request_path(i)) for i in ids]
    for result in pending:
        try:
            state = json.loads(result.get(timeout=30)[0]).get("state")
        except NoNodeError:
            state = "gone"
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts


def delete_background(session: Session, ids: list[str]) -> None:
    pending = [session.client.delete_async(request_path(i)) for i in ids]
    for result in pending:
        try:
            result.get(timeout=30)
        except NoNodeError:
            pass


def count_ready(session: Session, label: str) -> int:
    """Ready, unallocated nodes of `label` (one listing plus pipelined reads)."""
    client = session.client
    try:
        ids = client.get_children(NODES)
    except NoNodeError:
        return 0
    ready = 0
    pending = [client.get_async(f"{NODES}/{i}") for i in ids]
    for result in pending:
        try:
            raw = result.get(timeout=30)[0]
        except NoNodeError:
            continue
        node: dict[str, Any] = json.loads(raw) if raw else {}
        types = node.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        if node.get("state") == "ready" and not node.get("allocated_to") and label in types:
            ready += 1
    return ready


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float,
               stop: threading.Event) -> bool:
    """Setup only (never inside a measurement): check predicate every interval until timeout."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        stop.wait(interval)
    return False


def settle(pid: int, below_percent: float, window: float, timeout: float,
           stop: threading.Event) -> float | None:
    """Wait until pid used less than below_percent of one CPU over `window` seconds;
    returns the last window's CPU%, or None if it never settled within timeout."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        before, t0 = process_cpu(pid), time.monotonic()
        stop.wait(window)
        after, t1 = process_cpu(pid), time.monotonic()
        if before is None or after is None:
            return None
        percent = 100.0 * (after - before) / (t1 - t0)
        if percent < below_percent:
            return percent
        if t1 > deadline:
            return None
    return None
