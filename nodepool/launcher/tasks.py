"""Launch and delete tasks: a node, its lock, its driver state machine and its timers.

A task is advanced by the provider loop; the blocking part of each step
(`advance()` of the driver's state machine) runs on the provider's executor.
These classes hold state and answer "what next"; the loop does the I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from kazoo.exceptions import BadVersionError, ConnectionLoss, NoNodeError, RolledBackError
from kazoo.recipe.lock import Lock

from nodepool.config.model import PoolLabel
from nodepool.drivers.adapter import CreateStateMachine, DeleteStateMachine, Listing
from nodepool.launcher.tuning import DEFAULT, Tuning
from nodepool.model import Node

if TYPE_CHECKING:
    from nodepool.launcher.scope import PoolState
    from nodepool.nodescan import ScanRequest

# The defaults, from the one tuning table (tests name them).
BACKOFF_MIN = DEFAULT.backoff_min
BACKOFF_MAX = DEFAULT.backoff_max
STEPS_PER_RUN = DEFAULT.steps_per_run


def backoff(failures: int, retry_after: float | None = None,
            tuning: Tuning = DEFAULT) -> float:
    """Seconds to wait before retrying after `failures` consecutive transient errors."""
    delay = min(tuning.backoff_max, tuning.backoff_min * (2 ** min(max(0, failures - 1), 20)))
    return max(delay, retry_after or 0.0)


def step_backoff(failures: int, retry_after: float | None = None,
                 tuning: Tuning = DEFAULT) -> float:
    """Seconds a failing step of the provider loop waits (a pass step, a listing, a limits
    read): `step_backoff_min` doubling to `step_backoff_max`, at least `retry_after`."""
    delay = min(tuning.step_backoff_max,
                tuning.step_backoff_min * 2 ** min(max(0, failures - 1), 20))
    return max(delay, retry_after or 0.0)


def run_steps(machine: CreateStateMachine | DeleteStateMachine, listing: Listing | None,
              limit: int = STEPS_PER_RUN) -> bool:
    """Advance a machine until a step makes no progress, it completes, or `limit` steps ran.

    Steps that follow each other at once (a create call, then the floating IP
    of a server that is already up) cost one executor run and one loop pass
    instead of one each. Every step still makes at most one cloud call, each
    under the driver's rate limit. Returns whether the last step made no
    progress (its state did not change): the machine waits for a newer listing.
    """
    for _ in range(limit):
        before = machine.state
        machine.advance(listing)
        if machine.complete:
            return False
        if machine.state == before:
            return True
    return False


class Phase(str, enum.Enum):
    CLOUD = "cloud"        # the driver's create machine is running
    CLEANUP = "cleanup"    # deleting the server of a failed attempt before retrying
    SCAN = "scan"          # keyscan of the booted node
    DONE = "done"          # ready


@dataclasses.dataclass(eq=False)
class StepRunner:
    """What launch and delete tasks share: a machine, its in-flight step and its timers."""

    node: Node
    lock: Lock | None
    future: Future | None = None
    next_at: float = 0.0            # monotonic time before which the step must not run
    transient_failures: int = 0
    last_state: str | None = None
    seen_listing: float = -1.0      # taken_at of the listing the last advance saw
    waits_for_listing: bool = False
    step_listing: Listing | None = None  # the listing the running step was given
    write: Any = None               # the node write in flight (kazoo async result)
    waiting_since: float | None = None  # monotonic start of the current wait on the cloud

    def due(self, now: float, listing: Listing | None) -> bool:
        """Run the next step now? Not while one runs, not before backoff ends, and a
        machine that made no progress waits for a newer listing."""
        if self.future is not None or now < self.next_at or self.write is not None:
            return False
        if self.waits_for_listing:
            return listing is not None and listing.taken_at > self.seen_listing
        return True

    def back_off(self, error: BaseException, now: float, tuning: Tuning, log) -> None:
        """A step failed for a passing reason: run it again after a backoff."""
        self.transient_failures += 1
        delay = backoff(self.transient_failures, getattr(error, "retry_after", None), tuning)
        self.next_at = now + delay
        log.warning("node=%s provider=%s Transient error, retrying in %.2fs: %s", self.node.id,
                    self.node.provider, delay, error)

    def confirm_write(self, log, rewrite) -> str:
        """Is the pipelined write confirmed? "done", "waiting", or "lost" (the record is
        gone or changed since we decided: the task is to be dropped). Connection
        trouble: `rewrite(self)` writes the same again, and it waits."""
        result = self.write
        if result is None:
            return "done"
        if not result.ready():
            return "waiting"
        self.write = None
        error = result.exception if not result.successful() else None
        if error is None:
            answer = result.get()
            if not isinstance(answer, list):
                self.node.version = answer.version
                return "done"
            # A write fenced by our lock: [check of our contender, the write] (effects.py).
            error = next((r for r in answer if isinstance(r, Exception)
                          and not isinstance(r, RolledBackError)), None)
            if error is None:
                self.node.version = answer[-1].version
                return "done"
        if isinstance(error, ConnectionLoss):   # expected at a failover: written again
            log.warning("node=%s provider=%s Writing the node failed with the connection; "
                        "writing it again", self.node.id, self.node.provider)
            rewrite(self)
            return "waiting"
        log.error("node=%s provider=%s Writing the node failed: %r", self.node.id,
                  self.node.provider, error)
        if isinstance(error, (NoNodeError, BadVersionError)):
            return "lost"   # gone, changed, or our lock of it is gone (fenced)
        rewrite(self)
        return "waiting"

    def stepped(self, state: str, listing: Listing | None, stalled: bool = False,
                learn: Callable[[str | None, float], None] | None = None) -> bool:
        """Record finished steps: progress means go again at once, none means wait.

        `stalled`: the last of them made no progress (`run_steps`), so the machine
        waits even if earlier ones moved it on. A wait that a listing ended is told
        to `learn` (the state waited in, the wait's age at that listing): the pace of
        later listings follows it (pacing.py). Returns whether to go again at once."""
        self.waits_for_listing = stalled or state == self.last_state
        if not self.waits_for_listing:
            if self.waiting_since is not None and listing is not None and learn is not None:
                learn(self.last_state, listing.taken_at - self.waiting_since)
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.last_state = state
        self.seen_listing = listing.taken_at if listing else -1.0
        self.transient_failures = 0
        return not self.waits_for_listing


@dataclasses.dataclass(eq=False)
class LaunchTask(StepRunner):
    """Building one node: attempts, timeouts, the request it serves (if any)."""

    pool: PoolState | None = None
    label: PoolLabel | None = None
    request_id: str | None = None
    sm: CreateStateMachine | None = None
    cleanup_sm: DeleteStateMachine | None = None
    cleanup_of: Node | None = None   # the failed attempt's server, as a node to delete
    phase: Phase = Phase.CLOUD
    attempt: int = 1
    attempt_started: float = 0.0    # monotonic; launch-timeout counts from here
    booted_at: float | None = None  # monotonic; boot-timeout counts from here
    scan: ScanRequest | None = None
    az: str | None = None
    unsaved: bool = False           # `building` and the machine's state not written yet


@dataclasses.dataclass(eq=False)
class DeleteTask(StepRunner):
    """Deleting one node's server, then its record."""

    sm: DeleteStateMachine | None = None
    started: float = 0.0
    used_at: float | None = None    # wall time its user released it (metrics), if it did
