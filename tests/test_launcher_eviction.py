"""Making room on a real ZooKeeper and the fake cloud: a pool at its limits deletes its
oldest unused ready node for a waiting request of another label (Nodepool's
deleteOldestUnusedNode), and only when that makes the request fit."""

from __future__ import annotations

from plugins.launcher_env import passes_go_by
from requestor import wait_for
from test_launcher_minready import NODES, churn_min_ready, nodes, ready_spares


def spare_ids(env) -> list[str]:
    """Ids of the ready, unallocated nodes, oldest first (by when they became ready)."""
    ids = env.kazoo.get_children(NODES) if env.kazoo.exists(NODES) else []
    found = [(i, env.requestor.node(i)) for i in ids]
    return [i for i, n in sorted((f for f in found if f[1]), key=lambda f: f[1]["state_time"])
            if n["state"] == "ready" and n["allocated_to"] is None]


def causes(launcher, request_id) -> list[str]:
    """The causes in the request's timeline as the launcher holds it (a request served
    within a few seconds is never written to ZooKeeper)."""
    return [e.get("cause") for e in launcher.ctx.timeline.entries(request_id)]


def test_request_of_another_label_is_served_after_the_oldest_spare_is_deleted(env):
    env.write_config(min_ready=2, max_servers=2)
    launcher = env.start_launcher()
    wait_for(lambda: len(ready_spares(env)) == 2, what="two small spares fill the pool")
    oldest, newest = spare_ids(env)
    rq = env.requestor
    rid = rq.submit(["large"])
    req = rq.wait(rid)
    assert req["state"] == "fulfilled"
    assert rq.node(req["nodes"][0])["type"] == ["large"]
    wait_for(lambda: rq.node(oldest) is None, what="the oldest spare deleted")
    assert rq.node(newest)["state"] == "ready"
    making_room = [e for e in launcher.ctx.timeline.entries(rid)
                   if e.get("cause") == "making room"]
    assert [e["event"] for e in making_room] == ["deferred"]
    assert f"deleting unused ready node(s) {oldest} (small)" in making_room[0]["text"]
    # No churn: min-ready finds the pool full and launches no small spare in its place.
    churn_min_ready(launcher, 0.5)
    assert env.cloud.creates == 3 and len(nodes(env)) == 2
    body, _ = launcher.metrics.exposition()
    assert b'nodepool_unused_nodes_deleted_total{pool="main",provider="fake1"} 1.0' in body


def test_no_spare_is_deleted_for_a_request_that_would_not_fit_anyway(env):
    env.write_config(min_ready=1, max_servers=2)
    launcher = env.start_launcher()
    wait_for(lambda: len(ready_spares(env)) == 1, what="one small spare")
    rq = env.requestor
    first = rq.submit(["small"])
    in_use = rq.accept(first, rq.wait(first))       # one server in use ...
    wait_for(lambda: len(ready_spares(env)) == 1, what="min-ready's spare again")
    spare, = spare_ids(env)                           # ... and one unused spare
    rid = rq.submit(["large", "large"])               # needs both servers
    wait_for(lambda: "pool" in causes(launcher, rid), timeout=20,
             what="the request waits at the pool's limits")
    passes_go_by(launcher, "fake1")
    assert rq.node(spare)["state"] == "ready"
    assert "making room" not in causes(launcher, rid)
    # The server in use is freed: now deleting the spare makes the request fit.
    rq.finish(in_use)
    req = rq.wait(rid, timeout=20)
    assert req["state"] == "fulfilled"
    wait_for(lambda: rq.node(spare) is None, what="the spare deleted to make room")


def test_a_request_for_the_spares_label_keeps_its_spare_while_another_makes_room(env):
    env.write_config(min_ready=2, max_servers=2)
    env.start_launcher()
    wait_for(lambda: len(ready_spares(env)) == 2, what="two small spares fill the pool")
    spares = spare_ids(env)
    rq = env.requestor
    small, large = rq.submit(["small"]), rq.submit(["large"])    # likely one pass for both
    got_small, got_large = rq.wait(small), rq.wait(large, timeout=20)
    assert got_small["state"] == got_large["state"] == "fulfilled"
    assert got_small["nodes"][0] in spares                      # handed over, not deleted
    assert rq.node(got_small["nodes"][0])["allocated_to"] == small
    (gone,) = [s for s in spares if s != got_small["nodes"][0]]
    wait_for(lambda: rq.node(gone) is None, what="the other spare deleted to make room")
    assert env.cloud.creates == 3
