"""The status summary of a running launcher: what it counts, why requests wait, and its size at scale."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Iterator

from kazoo.exceptions import NoNodeError, NotEmptyError
from kazoo.recipe.lock import Lock
from plugins.launcher_env import cache_has_request, passes_go_by
from requestor import NODES, REQUESTS, wait_for

from nodepool.web import status
from nodepool.web.status_feed import StatusFeed


@contextlib.contextmanager
def following(cache) -> Iterator[StatusFeed]:
    """A StatusFeed attached to the cache for the block's length."""
    feed = StatusFeed()
    feed.attach(cache)
    try:
        yield feed
    finally:
        feed.detach()


def pool_of(summary: dict, provider: str = "fake1", pool: str = "main") -> dict:
    (p,) = [p for p in summary["providers"] if p["name"] == provider]
    (entry,) = [x for x in p["pools"] if x["name"] == pool]
    return entry


def label_of(summary: dict, name: str) -> dict:
    (entry,) = [x for x in summary["labels"] if x["name"] == name]
    return entry


def test_summary_counts_labels_pools_and_says_why_a_request_waits(env):
    env.write_config(min_ready=1, max_servers=2)
    launcher = env.start_launcher()
    with following(launcher.ctx.cache) as feed:
        wait_for(lambda: label_of(status.summary(launcher), "small")["spare"] == 1,
                 what="min-ready's spare in the summary")
        rq = env.requestor
        first = rq.submit(["small"])
        rq.accept(first, rq.wait(first))           # one node in use; min-ready adds a spare
        wait_for(lambda: label_of(status.summary(launcher), "small")["spare"] == 1,
                 what="min-ready's spare again")
        # The pool is full, and deleting the spare would not make room for two nodes.
        waiting = rq.submit(["large", "large"])
        cache_has_request(launcher, waiting)
        passes_go_by(launcher, "fake1")
        wait_for(lambda: pool_of(status.summary(launcher))["paused"], what="the pool paused")
        data = status.summary(launcher, feed=feed)
    assert env.requestor.get(waiting)["state"] in ("requested", "pending")
    assert data["connected"] is True and data["nodes"]["total"] == 2
    assert pool_of(data) | {"launcher": None} == {
        "name": "main", "used": 2, "max": 2, "paused": True, "reason": "at the pool's limit",
        "labels": ["small", "large"], "launcher": None}
    assert pool_of(data)["launcher"] == "nl01"
    assert label_of(data, "small") | {"configured": True} == {
        "name": "small", "min_ready": 1, "ready": 1, "spare": 1, "building": 0, "in_use": 1,
        "other": 0, "waiting": 0, "short": False, "configured": True}
    assert label_of(data, "large")["waiting"] == 1
    (shown,) = data["requests"]["waiting"]
    assert shown["id"] == waiting and shown["labels"] == ["large", "large"]
    assert shown["reason"] == "fake1/main at the pool's limit"
    assert shown["reason_source"] == "launcher" and shown["age"] >= 0
    assert data["requests"]["waiting_more"] == 0
    json.dumps(data, allow_nan=False)   # JSON proper: no Infinity, no NaN

    told = status.summary(launcher, reasons={waiting: "pool main of fake1 is at quota"})
    assert told["requests"]["waiting"][0]["reason"] == "pool main of fake1 is at quota"
    assert told["requests"]["waiting"][0]["reason_source"] == "timeline"


def test_feed_notes_hand_overs_and_failures_from_cache_events(env):
    env.write_config(min_ready=0, max_servers=2)
    launcher = env.start_launcher()
    with following(launcher.ctx.cache) as feed:
        handed = env.requestor.submit(["small"])
        assert env.requestor.wait(handed)["state"] == "fulfilled"
        failed = env.requestor.submit(["other"])   # no pool offers it
        assert env.requestor.wait(failed)["state"] == "failed"
        wait_for(lambda: feed.failures(), what="the failure in the feed")
        data = status.summary(launcher, feed=feed)
    ((when, seconds, labels),) = feed.handovers()
    assert labels == "small" and 0 <= seconds < 60 and when > 0
    assert data["handovers"]["count"] == 1 and data["handovers"]["p50"] == seconds
    (failure,) = data["failures"]
    assert failure["id"] == failed and failure["kind"] == "request"
    assert failure["labels"] == ["other"] and failure["detail"] == "declined by 1 pool"


# -- at scale ----------------------------------------------------------------------------

NODES_TOTAL = 10_000
WAITING_TOTAL = 2_000
OURS = 10                                     # fake1/main's max-servers: all in use, locked
STATES = ["ready", "in-use", "in-use", "building", "used", "hold", "deleting"]


def node_body(i: int, provider: str, pool: str, state: str, label: str) -> bytes:
    return json.dumps({"state": state, "state_time": time.time(), "type": [label],
                       "provider": provider, "pool": pool, "launcher": "elsewhere",
                       "external_id": f"srv-{i}", "created_time": time.time()}).encode()


def fill(kazoo, count: int, prefix: str, body) -> None:
    """`count` sequential znodes under `prefix`, created 500 at a time."""
    kazoo.ensure_path(prefix.rsplit("/", 1)[0])
    for start in range(0, count, 500):
        pending = [kazoo.create_async(prefix, body(i), sequence=True)
                   for i in range(start, min(count, start + 500))]
        for result in pending:
            result.get(timeout=30)


def drop(kazoo, paths: list[str]) -> None:
    """Delete childless znodes 500 at a time (the chroot's recursive delete goes one by one)."""
    later = []
    for start in range(0, len(paths), 500):
        batch = paths[start:start + 500]
        for path, result in zip(batch, [kazoo.delete_async(p) for p in batch]):
            try:
                result.get(timeout=30)
            except NoNodeError:
                pass   # already gone
            except NotEmptyError:
                later.append(path)
    for path in later:   # a lock dir someone made meanwhile: the slow way
        kazoo.delete(path, recursive=True)


def test_summary_stays_small_at_10000_nodes_and_2000_waiting_requests(env, capsys):
    kazoo = env.kazoo
    fill(kazoo, OURS, f"{NODES}/", lambda i: node_body(i, "fake1", "main", "in-use", "small"))
    locks, ours = [], kazoo.get_children(NODES)
    for node_id in ours:   # the CI master holds its in-use nodes
        lock = Lock(kazoo, f"{NODES}/{node_id}/lock", identifier="zuul-test")
        assert lock.acquire(timeout=10)
        locks.append(lock)
    fill(kazoo, NODES_TOTAL - OURS, f"{NODES}/", lambda i: node_body(
        i, f"elsewhere{i % 5}", f"pool{i % 3}", STATES[i % len(STATES)], f"label{i % 20}"))
    request = json.dumps({"state": "requested", "state_time": time.time(),
                          "node_types": ["large"], "nodes": [], "declined_by": [],
                          "reuse": True, "requestor": "zuul-test",
                          "created_time": time.time()}).encode()
    fill(kazoo, WAITING_TOTAL, f"{REQUESTS}/200-", lambda i: request)
    env.write_config(min_ready=0, max_servers=OURS)
    launcher = env.start_launcher()
    cache = launcher.ctx.cache
    wait_for(lambda: len(cache.nodes()) == NODES_TOTAL and len(cache.requests()) ==
             WAITING_TOTAL, timeout=60, what="the cache loaded")
    with following(cache) as feed:
        wait_for(lambda: pool_of(status.summary(launcher))["paused"], timeout=30,
                 what="fake1/main at max-servers")
        times, cpu = [], []
        for _ in range(5):
            t, c = time.perf_counter(), time.thread_time()
            data = status.summary(launcher, feed=feed)
            body = json.dumps(data, separators=(",", ":"), allow_nan=False)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        for lock in locks:
            lock.release()
        env.stop()   # then clear the chroot quickly (the launcher would act on deletions)
        drop(kazoo, [f"{NODES}/{n}/lock" for n in ours])
        drop(kazoo, [f"{NODES}/{n}" for n in kazoo.get_children(NODES)] +
             [f"{REQUESTS}/{r}" for r in kazoo.get_children(REQUESTS)])
    assert data["nodes"]["total"] == NODES_TOTAL
    assert data["requests"]["waiting_total"] == WAITING_TOTAL
    assert len(data["requests"]["waiting"]) == status.WAITING_SHOWN
    assert data["requests"]["waiting_more"] == WAITING_TOTAL - status.WAITING_SHOWN
    assert pool_of(data)["used"] == OURS and pool_of(data)["max"] == OURS
    assert len(data["labels"]) == 3 + 20   # small, large, other, and label0..label19 from nodes
    assert len(body) < 64 * 1024, f"status.json is {len(body)} bytes at scale"
    with capsys.disabled():
        print(f"\nstatus summary at {NODES_TOTAL} nodes, {WAITING_TOTAL} waiting requests: "
              f"median {statistics.median(times) * 1000:.1f} ms wall, "
              f"{statistics.median(cpu) * 1000:.1f} ms CPU (summary + JSON), "
              f"JSON {len(body)} bytes")
