"""Launch and delete task timing: backoff, when a step is due, and runs of steps."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from adapter_contract import context_factory

from nodepool.drivers.adapter import Listing
from nodepool.errors import TransientError
from nodepool.launcher.tasks import BACKOFF_MAX, BACKOFF_MIN, StepRunner, backoff, run_steps
from nodepool.model import Node
from nodepool.testing.fake_adapter import SAMPLE_PROVIDER as PROVIDER
from nodepool.testing.fake_adapter import FakeAdapter, FakeCloud

# -- backoff ------------------------------------------------------------------------------------


def test_backoff_starts_at_the_minimum():
    assert backoff(0) == BACKOFF_MIN
    assert backoff(1) == BACKOFF_MIN


def test_backoff_doubles_with_each_failure():
    assert [backoff(n) for n in (1, 2, 3, 4)] == [BACKOFF_MIN * f for f in (1, 2, 4, 8)]


def test_backoff_never_shrinks_as_failures_grow():
    delays = [backoff(n) for n in range(40)]
    assert delays == sorted(delays)


def test_backoff_is_capped():
    assert backoff(20) == BACKOFF_MAX
    assert backoff(100) == BACKOFF_MAX


def test_backoff_stays_capped_after_a_night_of_transient_errors():
    # Delete tasks retry transient errors forever; at 30 s a try, 1025 failures
    # is about 8.5 hours of a cloud API that keeps failing.
    assert backoff(1025) == BACKOFF_MAX
    assert backoff(10_000) == BACKOFF_MAX


def test_backoff_honours_retry_after_when_longer():
    assert backoff(1, retry_after=5.0) == 5.0
    assert backoff(100, retry_after=120.0) == 120.0   # the cloud's word beats our cap


def test_backoff_ignores_a_shorter_or_missing_retry_after():
    assert backoff(10, retry_after=0.01) == backoff(10)
    assert backoff(3, retry_after=None) == backoff(3)
    assert backoff(3, retry_after=0) == backoff(3)


# -- StepRunner.due / stepped ---------------------------------------------------------------------


def runner() -> StepRunner:
    return StepRunner(node=Node(id="0000000001"), lock=None)


def listing(taken_at: float) -> Listing:
    return Listing(instances={}, taken_at=taken_at)


def test_new_step_runner_is_due_at_once():
    assert runner().due(0.0, None)
    assert runner().due(100.0, listing(1.0))


def test_step_runner_is_not_due_while_a_step_runs():
    r = runner()
    r.future = Future()
    assert not r.due(100.0, listing(50.0))


def test_step_runner_is_not_due_before_its_backoff_ends():
    r = runner()
    r.next_at = 10.0
    assert not r.due(9.99, listing(5.0))
    assert r.due(10.0, listing(5.0))


def test_step_that_changed_state_is_progress_and_runs_again_at_once():
    r = runner()
    assert r.stepped("submitted", listing(1.0)) is True
    assert r.waits_for_listing is False
    assert r.due(2.0, listing(1.0))


def test_step_without_a_state_change_waits_for_a_newer_listing():
    r = runner()
    r.stepped("building", listing(1.0))
    assert r.stepped("building", listing(1.0)) is False
    assert r.waits_for_listing
    assert not r.due(5.0, listing(1.0))        # the same listing: nothing new to see
    assert not r.due(5.0, None)
    assert r.due(5.0, listing(1.5))            # a newer one: try again


def test_step_without_progress_compares_against_the_listing_it_was_given():
    r = runner()
    r.stepped("building", listing(1.0))
    r.stepped("building", listing(2.0))
    assert not r.due(5.0, listing(2.0))
    assert r.due(5.0, listing(3.0))


def test_step_without_progress_and_without_a_listing_waits_for_any_listing():
    r = runner()
    r.stepped("building", None)
    r.stepped("building", None)
    assert r.seen_listing == -1.0
    assert not r.due(5.0, None)
    assert r.due(5.0, listing(0.0))


def test_progress_after_waiting_makes_the_runner_due_again():
    r = runner()
    r.stepped("building", listing(1.0))
    r.stepped("building", listing(1.0))
    assert r.stepped("active", listing(2.0)) is True
    assert not r.waits_for_listing
    assert r.due(5.0, listing(2.0))


def test_a_finished_step_clears_the_transient_failure_count():
    r = runner()
    r.transient_failures = 4
    r.stepped("building", listing(1.0))
    assert r.transient_failures == 0


def test_backoff_still_applies_to_a_runner_waiting_for_a_listing():
    r = runner()
    r.stepped("building", listing(1.0))
    r.stepped("building", listing(1.0))
    r.next_at = 10.0
    assert not r.due(9.0, listing(5.0))
    assert r.due(10.0, listing(5.0))


# -- run_steps ----------------------------------------------------------------------------------

make_context = context_factory(PROVIDER)


def test_a_run_goes_through_steps_that_need_no_waiting_to_the_end() -> None:
    cloud = FakeCloud()
    machine = FakeAdapter(PROVIDER, cloud).create(make_context())
    # start, submit (create call), wait-active (the server is up at once), attach-ip.
    assert run_steps(machine, None) is False
    assert machine.complete and machine.state == "complete"
    assert cloud.creates == 1 and cloud.calls["create_floating_ip"] == 1


def test_a_run_stops_at_the_first_step_without_progress_and_says_it_waits() -> None:
    cloud = FakeCloud(boot_delay=60.0)
    machine = FakeAdapter(PROVIDER, cloud).create(make_context())
    assert run_steps(machine, None) is True
    assert machine.state == "wait-active" and not machine.complete
    assert cloud.creates == 1 and cloud.calls["get_server"] == 1


def test_a_run_does_not_trust_a_listing_older_than_its_own_create_call() -> None:
    cloud = FakeCloud()
    adapter = FakeAdapter(PROVIDER, cloud)
    stale = Listing({}, taken_at=0.0)
    machine = adapter.create(make_context())
    assert run_steps(machine, stale) is True
    assert machine.state == "wait-active" and cloud.creates == 1


def test_a_run_ends_after_its_limit_of_steps() -> None:
    class Endless:
        complete = False
        state = "0"
        steps = 0

        def advance(self, listing) -> None:
            self.steps += 1
            self.state = str(self.steps)

    machine = Endless()
    assert run_steps(machine, None, limit=3) is False   # progress all the way: go again
    assert machine.steps == 3


def test_a_failing_step_ends_the_run_and_keeps_what_the_steps_before_it_did() -> None:
    cloud = FakeCloud()
    cloud.fail_next_create("transient")
    machine = FakeAdapter(PROVIDER, cloud).create(make_context())
    with pytest.raises(TransientError):
        run_steps(machine, None)
    assert machine.state == "submit" and cloud.creates == 1 and not cloud.servers
    # The call may have made a server: the next run looks for it (one call) and waits.
    assert run_steps(machine, None) is True
    assert machine.state == "submit" and cloud.calls["find_servers"] == 1
    assert run_steps(machine, None) is False and machine.complete
    assert cloud.creates == 2 and list(cloud.servers) == [machine.external_id]
