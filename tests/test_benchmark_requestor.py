"""The benchmark's requestor parts on a real ZooKeeper: its node lock against kazoo's Lock
recipe, the lock timeout, a stop while requests wait, and the driver's error path; and
its timers and the record of its own garbage-collection pauses.

The lock is stepped by hand (each ZooKeeper call it yields is answered here), so the
test sees exactly when it waits instead of guessing it from time.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from benchmark import drive, lifecycle, load, measure
from benchmark.protocol import REQUESTS, node_lock_path
from benchmark.session import Session, ZkOptions
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

NODE = "0000000007"
WAIT = 10.0


@pytest.fixture
def session(zk_tls: dict[str, Any]) -> Iterator[Session]:
    options = ZkOptions(zk_tls["hosts"], zk_tls["chroot"], zk_tls["cert"], zk_tls["key"],
                        zk_tls["ca"])
    s = Session(options.connect(), "bench-test")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def life() -> Iterator[lifecycle.Lifecycle]:
    timers = drive.Timers()
    try:
        yield lifecycle.Lifecycle(["small"], 0.0, 30.0, None, timers)
    finally:
        timers.close()


def _answer(waited: Any) -> Any:
    """What the driver would resume a lifecycle with, for one kazoo call it waits on."""
    return waited.get(timeout=WAIT)


def test_node_lock_waits_behind_a_kazoo_lock_and_takes_it_when_released(
        zk_client: KazooClient, session: Session, life: lifecycle.Lifecycle) -> None:
    zk_client.ensure_path(node_lock_path(NODE))
    holder = Lock(zk_client, node_lock_path(NODE), identifier="launcher")
    assert holder.acquire(timeout=WAIT)
    steps = life._lock(session, NODE)
    waited = next(steps)
    while not isinstance(waited, drive.Later):   # create, list contenders, watch predecessor
        waited = steps.send(_answer(waited))
    assert not waited.fired
    contenders = zk_client.get_children(node_lock_path(NODE))
    assert len(contenders) == 2 and all("__lock__" in c for c in contenders)
    # A second kazoo Lock queues behind ours: same recipe, same order.
    holder.release()
    fired = threading.Event()
    waited._wait(lambda value, error: fired.set())
    assert fired.wait(WAIT), "the predecessor's deletion did not wake the waiting lock"
    waited = steps.send("moved")
    with pytest.raises(StopIteration) as taken:
        while True:
            waited = steps.send(_answer(waited))
    ours = taken.value.value
    assert zk_client.get_children(node_lock_path(NODE)) == [ours.rsplit("/", 1)[1]]
    other = Lock(zk_client, node_lock_path(NODE), identifier="other")
    assert not other.acquire(blocking=False), "a kazoo Lock must see our contender as the holder"
    assert zk_client.get(ours)[0] == b"bench-test"


def test_node_lock_gives_up_at_its_timeout_and_withdraws(
        zk_client: KazooClient, session: Session, life: lifecycle.Lifecycle,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "NODE_LOCK_TIMEOUT", 0.2)
    zk_client.ensure_path(node_lock_path(NODE))
    holder = Lock(zk_client, node_lock_path(NODE), identifier="launcher")
    assert holder.acquire(timeout=WAIT)
    failure: list[BaseException] = []
    ended = threading.Event()

    def attempt() -> drive.Step:
        try:
            yield from life._lock(session, NODE)
        except lifecycle.Failed as e:
            failure.append(e)

    drive.start(attempt(), lambda error: ended.set())
    assert ended.wait(WAIT)
    assert [str(e) for e in failure] == ["node lock timeout"]
    remaining = zk_client.get_children(node_lock_path(NODE))
    assert len(remaining) == 1 and holder.node.endswith(remaining[0])
    holder.release()


def test_node_lock_creates_a_missing_lock_dir(
        zk_client: KazooClient, session: Session, life: lifecycle.Lifecycle) -> None:
    steps = life._lock(session, NODE)
    waited = next(steps)
    with pytest.raises(StopIteration) as taken:
        while True:
            try:
                value = _answer(waited)
            except Exception as e:   # the create meets the missing dir: handed back as kazoo does
                waited = steps.throw(e)
                continue
            waited = steps.send(value)
    assert zk_client.exists(taken.value.value)


def test_a_stop_ends_requests_waiting_for_fulfilment_and_withdraws_them(
        zk_client: KazooClient, session: Session, life: lifecycle.Lifecycle) -> None:
    zk_client.ensure_path(REQUESTS)
    result: list[list[lifecycle.Outcome]] = []
    loop = threading.Thread(target=lambda: result.append(
        load.closed_loop(life, [session], 3, 10)), daemon=True)
    loop.start()
    waiting = threading.Event()

    def seen(children: list[str]) -> bool:
        if len(children) == 3:
            waiting.set()
            return False
        return True

    zk_client.ChildrenWatch(REQUESTS, seen)
    assert waiting.wait(WAIT), "three requests (the concurrency) should be waiting"
    life.stop.set()
    loop.join(WAIT)
    assert not loop.is_alive()
    assert [o.state for o in result[0]] == ["stopped"] * 3
    assert zk_client.get_children(REQUESTS) == []


def test_driver_reports_a_lifecycle_that_raises() -> None:
    ended: list[BaseException | None] = []

    def broken() -> drive.Step:
        later = drive.Later()
        later.fire(1)
        value = yield later
        raise ValueError(f"bug after {value}")

    drive.start(broken(), ended.append)
    assert [type(e) for e in ended] == [ValueError] and "bug after 1" in str(ended[0])


def test_cancelled_timers_are_dropped_and_never_fire() -> None:
    timers = drive.Timers()
    try:
        far = time.monotonic() + 3600
        cancels = [timers.call_at(far, lambda: None) for _ in range(1000)]
        for cancel in cancels[:900]:
            cancel()
        # Compacted as the cancelled became most of the queue: not 1,000 kept for an hour.
        assert timers.pending() <= 100 + drive.COMPACT_MIN
        fired: list[str] = []
        done = threading.Event()
        now = time.monotonic()
        timers.call_at(now + 0.01, lambda: fired.append("cancelled"))()
        timers.call_at(now + 0.02, lambda: (fired.append("kept"), done.set()))
        assert done.wait(WAIT)
        assert fired == ["kept"]
    finally:
        timers.close()


def test_the_benchmark_records_its_own_collections_and_restores_the_collector() -> None:
    before = gc.get_threshold()
    with measure.quiet_gc(), measure.GcPauses() as pauses:
        assert gc.get_threshold() == measure.TOOL_GC_THRESHOLDS
        cycle: list = []
        cycle.append(cycle)
        del cycle
        gc.collect()
    report = pauses.report()
    assert report["collections"] >= 1 and report["full"] >= 1
    # each pause was timed (the report rounds to 0.01 ms: a fast collection reads 0.0)
    assert all(seconds > 0 for _, seconds in pauses.pauses)
    assert report["total_ms"] >= report["max_ms"] >= 0
    assert gc.get_threshold() == before
    assert pauses._callback not in gc.callbacks
    gc.unfreeze()   # what the block froze goes back to the collector
