"""The shared listing's pace: by a wait's age, then by the typical length of such waits."""

from __future__ import annotations

import pytest

from nodepool.drivers.adapter import Listing
from nodepool.launcher.pacing import MIN_HISTORY, Pacer
from nodepool.launcher.tasks import StepRunner
from nodepool.launcher.tuning import DEFAULT
from nodepool.model import Node

MIN, MAX, FRACTION = DEFAULT.listing_min_interval, DEFAULT.listing_max_interval, \
    DEFAULT.listing_age_fraction


def learnt(length: float, state: str = "wait-active", n: int = MIN_HISTORY) -> Pacer:
    pacer = Pacer(DEFAULT)
    for _ in range(n):
        pacer.wait_ended(state, length)
    return pacer


def test_without_history_a_young_wait_is_looked_at_after_the_minimum_interval():
    assert Pacer(DEFAULT).due("wait-active", since=10.0, last_taken=10.001) == \
        pytest.approx(10.001 + MIN)


def test_without_history_an_older_wait_is_looked_at_after_a_share_of_its_age():
    assert Pacer(DEFAULT).due("wait-active", since=10.0, last_taken=11.0) == \
        pytest.approx(11.0 + FRACTION * 1.0)


def test_without_history_the_interval_is_capped():
    assert Pacer(DEFAULT).due("wait-active", since=0.0, last_taken=100.0) == \
        pytest.approx(100.0 + MAX)


def test_a_wait_started_after_the_last_listing_is_looked_at_after_the_minimum_interval():
    assert Pacer(DEFAULT).due("wait-active", since=10.0, last_taken=9.5) == \
        pytest.approx(9.5 + MIN)


def test_fewer_ended_waits_than_the_minimum_give_no_typical_length():
    assert learnt(1.0, n=MIN_HISTORY - 1).typical("wait-active") is None
    assert learnt(1.0).typical("wait-active") == pytest.approx(1.0)


def test_the_typical_length_is_the_median_of_the_recent_waits():
    pacer = Pacer(DEFAULT)
    for age in (1.0, 1.1, 30.0, 0.9, 1.05):
        pacer.wait_ended("wait-active", age)
    assert pacer.typical("wait-active") == pytest.approx(1.05)


def test_only_the_last_waits_count():
    pacer = learnt(5.0, n=DEFAULT.listing_history)
    for _ in range(DEFAULT.listing_history // 2 + 1):
        pacer.wait_ended("wait-active", 1.0)
    assert pacer.typical("wait-active") == pytest.approx(1.0)


def test_each_state_has_its_own_typical_length():
    pacer = learnt(1.0)
    assert pacer.typical("wait-gone") is None
    assert pacer.due("wait-gone", since=10.0, last_taken=10.5) == \
        pytest.approx(10.5 + FRACTION * 0.5)


def test_with_history_a_wait_is_looked_at_at_the_fractions_of_its_typical_length():
    pacer = learnt(1.0)
    looks, taken = [], 10.0
    while taken < 11.0:
        taken = pacer.due("wait-active", since=10.0, last_taken=taken)
        looks.append(round(taken - 10.0, 6))
    assert looks == [f * 1.0 for f in DEFAULT.listing_probes]


def test_with_history_a_wait_past_its_typical_length_is_looked_at_often_up_to_twice_it():
    assert learnt(1.0).due("wait-active", since=10.0, last_taken=11.2) == \
        pytest.approx(11.2 + DEFAULT.listing_past_typical * 1.0)


def test_with_history_a_wait_past_twice_its_typical_length_goes_by_its_age_again():
    assert learnt(1.0).due("wait-active", since=10.0, last_taken=12.0) == \
        pytest.approx(12.0 + FRACTION * 2.0)


def test_with_history_no_wait_goes_unlooked_at_longer_than_the_maximum_interval():
    assert learnt(60.0).due("wait-active", since=0.0, last_taken=1.0) == \
        pytest.approx(1.0 + MAX)


def test_with_history_of_instant_waits_the_minimum_interval_still_holds():
    assert learnt(0.001).due("wait-active", since=10.0, last_taken=9.999) == \
        pytest.approx(9.999 + MIN)


def test_a_wait_a_listing_ended_is_told_with_its_age_at_that_listing():
    told: list[tuple[str | None, float]] = []
    r = StepRunner(node=Node(id="0000000001"), lock=None)
    r.stepped("wait-active", Listing({}, 1.0), stalled=True)
    since = r.waiting_since
    assert since is not None
    r.stepped("complete", Listing({}, since + 0.75), learn=lambda *a: told.append(a))
    assert told == [("wait-active", pytest.approx(0.75))]


def test_progress_without_a_wait_teaches_nothing():
    told: list[tuple[str | None, float]] = []
    r = StepRunner(node=Node(id="0000000001"), lock=None)
    r.stepped("submit", Listing({}, 1.0), learn=lambda *a: told.append(a))
    r.stepped("wait-active", Listing({}, 2.0), learn=lambda *a: told.append(a))
    assert told == []


def one_wait(pacer: Pacer, state: str, since: float, taken: float) -> float:
    """The schedule of a single wait, written out step by step (the reference)."""
    t = DEFAULT
    age = taken - since
    due = taken + min(t.listing_max_interval,
                      max(t.listing_min_interval, max(0.0, age) * t.listing_age_fraction))
    typical = pacer.typical(state)
    if typical is not None and age < typical:
        probes = [since + f * typical for f in t.listing_probes if since + f * typical > taken]
        due = min(min(probes), taken + t.listing_max_interval)
    elif typical is not None and age < 2 * typical:
        due = min(due, taken + t.listing_past_typical * typical)
    return max(due, taken + t.listing_min_interval)


@pytest.mark.parametrize("typical", [None, 0.01, 1.0, 30.0])
def test_many_waits_are_due_when_the_earliest_of_them_is(typical: float | None):
    import random
    rng = random.Random(7)
    pacer = learnt(typical) if typical is not None else Pacer(DEFAULT)
    for _ in range(200):
        taken = 100.0
        sinces = [taken - rng.uniform(-0.5, 3 * (typical or 1.0)) for _ in range(rng.randint(1, 30))]
        expected = min(one_wait(pacer, "wait-active", s, taken) for s in sinces)
        assert pacer.due_for("wait-active", sinces, taken) == pytest.approx(expected)
