"""A pass's steps fail alone: the failing one backs off (Retry-After honoured), the rest run."""

from __future__ import annotations

import logging

import pytest
from kazoo.exceptions import ConnectionLoss

from nodepool import errors
from nodepool.launcher.guarded import GuardedSteps
from nodepool.launcher.tuning import DEFAULT

log = logging.getLogger("test.guarded")


def make(fail: dict) -> tuple[GuardedSteps, list[str]]:
    ran: list[str] = []

    def step(name):
        def run(now: float) -> None:
            ran.append(name)
            if fail.get(name):
                raise fail[name]
        return run
    return GuardedSteps("provider p", log, DEFAULT, [(n, step(n)) for n in "abc"]), ran


def test_a_failing_step_backs_off_while_the_others_run_every_pass(caplog) -> None:
    fail = {"b": errors.TransientError("429 from the cloud", retry_after=2.0)}
    steps, ran = make(fail)
    steps.run(100.0)
    assert ran == ["a", "b", "c"]
    assert steps.backing_off() == {"b": 102.0}   # Retry-After beats the 0.5 s first backoff
    assert steps.timers() == [102.0]
    ran.clear()
    steps.run(101.0)
    assert ran == ["a", "c"]
    steps.run(102.0)
    assert ran == ["a", "c", "a", "b", "c"]
    assert steps.backing_off() == {"b": 104.0}   # second failure: 1 s, but Retry-After 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and not any(r.exc_info for r in warnings)
    assert "step 'b' failed (2 in a row), retrying in 2.00 s: 429 from the cloud" in \
        warnings[-1].getMessage()
    del fail["b"]
    steps.run(104.0)
    assert steps.backing_off() == {} and steps.timers() == []


def test_backoff_doubles_up_to_its_cap() -> None:
    steps, _ = make({"a": errors.TransientError("down")})
    delays = []
    now = 0.0
    for _ in range(9):
        steps.run(now)
        delays.append(steps.backing_off()["a"] - now)
        now = steps.backing_off()["a"]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@pytest.mark.expect_errors(r"step 'a' failed", logger="test.guarded")
def test_a_bug_is_logged_with_its_traceback_and_backs_off_too(caplog) -> None:
    steps, ran = make({"a": KeyError("oops")})
    steps.run(0.0)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info and record.exc_info[0] is KeyError
    assert ran == ["a", "b", "c"] and steps.backing_off() == {"a": 0.5}


def test_losing_zookeeper_ends_the_pass_for_the_caller_to_report() -> None:
    steps, ran = make({"b": ConnectionLoss()})
    with pytest.raises(ConnectionLoss):
        steps.run(0.0)
    assert ran == ["a", "b"] and steps.backing_off() == {}
