"""The steps of a provider loop pass, each on its own: one that fails backs off; the rest go on.

A pass is a fixed list of steps (provider.py's `_pass_steps`: sync, then act). Should
one raise, only that step waits out a backoff of its own (doubling, and at
least what the cloud asked for with Retry-After) while every other step
keeps running each pass: a 429 from the cloud while the request part reads
a flavor must not stop the hand-over of ready nodes, nor be retried at the
loop's pace.

Losing ZooKeeper is not a step's fault: `ZOOKEEPER_LOST` errors end the pass
(the worker waits for the session, see provider.py) and are logged there,
once, as a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError

from nodepool import errors
from nodepool.launcher.tasks import step_backoff
from nodepool.launcher.tuning import Tuning

# What a ZooKeeper call raises while the session is suspended or gone.
ZOOKEEPER_LOST = (ConnectionLoss, ConnectionClosedError, SessionExpiredError, KazooTimeoutError,
                  errors.ZooKeeperUnavailable)


@dataclasses.dataclass(eq=False)
class Step:
    """One step of a pass: what it does, and its backoff after failures."""

    name: str
    run: Callable[[float], None]
    failures: int = 0
    resume_at: float = 0.0


class GuardedSteps:
    """Runs a pass's steps in order; a failing step is skipped until its backoff ends."""

    def __init__(self, owner: str, log: logging.Logger | logging.LoggerAdapter, tuning: Tuning,
                 steps: list[tuple[str, Callable[[float], None]]],
                 on_failure: Callable[[], None] = lambda: None):
        self.owner = owner
        self.on_failure = on_failure   # a step failed: what it took on may be dropped
        self.log = log
        self.tuning = tuning
        self.steps = [Step(name, run) for name, run in steps]

    def run(self, now: float) -> None:
        """One pass. ZOOKEEPER_LOST errors propagate (they end the pass)."""
        for step in self.steps:
            if step.resume_at > now:
                continue
            try:
                step.run(now)
            except ZOOKEEPER_LOST:
                raise
            except Exception as e:
                self._failed(step, e, now)
            else:
                if step.failures:
                    self.log.info("%s: step %r works again after %d failure(s)", self.owner,
                                  step.name, step.failures)
                    step.failures = 0

    def _failed(self, step: Step, error: Exception, now: float) -> None:
        self.on_failure()
        step.failures += 1
        delay = step_backoff(step.failures, getattr(error, "retry_after", None), self.tuning)
        step.resume_at = now + delay
        if isinstance(error, errors.NodepoolError):   # a cloud or protocol error: expected
            self.log.warning("%s: step %r failed (%d in a row), retrying in %.2f s: %s",
                             self.owner, step.name, step.failures, delay, error)
        else:                                          # a bug: show where
            self.log.exception("%s: step %r failed (%d in a row), retrying in %.2f s",
                               self.owner, step.name, step.failures, delay)

    def timers(self) -> list[float]:
        """When a backed-off step may run again."""
        return [s.resume_at for s in self.steps if s.failures]

    def backing_off(self) -> dict[str, float]:
        """Steps waiting out a backoff, by name: when they run again (monotonic)."""
        return {s.name: s.resume_at for s in self.steps if s.failures}
