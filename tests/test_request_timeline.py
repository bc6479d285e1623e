"""Request timelines: what happened to a request and why it waits, on the fake cloud.

A real launcher (tests/plugins/launcher_env.py), a real ZooKeeper; timelines
are read back from ZooKeeper with the readers the CLI and the web use.
"""

import json
import time

from plugins.launcher_env import passes_go_by
from requestor import wait_for

from nodepool import cli
from nodepool import timeline as tl
from nodepool.explain import current_reasons, explain, render_explain
from nodepool.launcher import maintenance
from nodepool.launcher.recorder import Recorder
from nodepool.launcher.spread import ProviderFilter, assign
from nodepool.zk import paths
from nodepool.zk import timelines as zkt


def stored(kazoo, request_id):
    return zkt.read_timeline(kazoo, request_id)[0]


def stored_events(kazoo, request_id):
    return [e["event"] for e in stored(kazoo, request_id)]


def wait_stored(kazoo, request_id, predicate, what):
    wait_for(lambda: predicate(stored(kazoo, request_id)), timeout=20, what=what)
    return stored(kazoo, request_id)


def flusher_passes(launcher, count=2):
    """Return once `count` more passes of the launcher's timeline flusher have ended."""
    target = launcher.timeline_flusher.passes + count
    wait_for(lambda: launcher.timeline_flusher.passes >= target, timeout=20,
             what=f"{count} timeline flusher passes")


def at_quota(env):
    """max-servers 1: one request holds the only node, a second one waits."""
    env.write_config(max_servers=1)
    launcher = env.start_launcher()
    rq = env.requestor
    first = rq.submit(["small"])
    assert rq.wait(first)["state"] == "fulfilled"
    waiting = rq.submit(["small"])
    return launcher, first, waiting


def test_declined_request_says_why_and_its_failure_says_why(env):
    env.write_config()
    env.start_launcher()
    rid = env.requestor.submit(["other"])     # a label pool main does not offer
    assert env.requestor.wait(rid)["state"] == "failed"
    entries = wait_stored(env.kazoo, rid, lambda es: tl.has(es, tl.FAILED, "fake1", "main"),
                          "the failed request's timeline in ZooKeeper")
    declined = next(e for e in entries if e["event"] == tl.DECLINED)
    assert declined["provider"] == "fake1" and declined["pool"] == "main"
    assert "label(s) other not offered by pool fake1/main" in declined["text"]
    reason = current_reasons(env.kazoo, [rid])[rid]
    assert reason.startswith("failed: declined by every pool")
    assert "other not offered" in reason


def test_deferred_at_quota_says_the_numbers_and_who_is_ahead(env):
    launcher, _, waiting = at_quota(env)
    behind = env.requestor.submit(["small"])
    entries = wait_stored(env.kazoo, waiting, lambda es: tl.has(es, tl.DEFERRED, "fake1", "main"),
                          "the waiting request's deferral in ZooKeeper")
    deferred = next(e for e in entries if e["event"] == tl.DEFERRED)
    assert deferred["cause"] == "pool"
    assert deferred["text"] == "pool main of provider fake1 is at quota, 1 of 1 servers"
    assert [e["event"] for e in entries][:1] == [tl.SEEN]
    wait_stored(env.kazoo, behind, lambda es: tl.has(es, tl.DEFERRED, "fake1", "main"),
                "the request behind it in ZooKeeper")
    reasons = current_reasons(env.kazoo, [waiting, behind, "200-0000099999"])
    assert set(reasons) == {waiting, behind}
    assert reasons[waiting].startswith("waiting ")
    assert reasons[waiting].endswith(": pool main of provider fake1 is at quota, 1 of 1 servers")
    assert reasons[behind].endswith("1 of 1 servers; 1 request ahead of it")
    # In line behind: said without figures (the queue moving rewrites only the first's).
    line = next(e for e in stored(env.kazoo, behind) if e["event"] == tl.DEFERRED)
    assert line["cause"] == tl.BEHIND and line["detail"] == {"waits_for": "pool"}
    explained = explain(env.kazoo, behind)
    assert explained["ahead"] == 1
    assert explained["reason"].endswith(
        ": pool main of provider fake1 is at quota, 1 of 1 servers; 1 request ahead of it")


def test_waiting_request_timeline_stays_small_as_passes_repeat(env):
    launcher, _, waiting = at_quota(env)
    wait_stored(env.kazoo, waiting, lambda es: tl.has(es, tl.DEFERRED, "fake1", "main"),
                "the deferral in ZooKeeper")
    for _ in range(5):
        launcher.workers["fake1"].requests.deferral.want_walk()   # a walk re-decides every request
        passes_go_by(launcher, "fake1")
    flusher_passes(launcher)
    held = launcher.ctx.timeline.entries(waiting)
    assert [e["event"] for e in held] == [tl.SEEN, tl.DEFERRED]
    assert held[1]["count"] > 5 and held[1]["last"] > held[1]["time"]
    # Repeats that change only the count are written at most every REPEAT_REFRESH.
    assert [e["event"] for e in stored(env.kazoo, waiting)] == [tl.SEEN, tl.DEFERRED]


def test_launch_attempt_that_fails_then_succeeds_is_told(env):
    env.write_config(retries=3)
    launcher = env.start_launcher()
    env.cloud.fail_next_create("error")
    rid = env.requestor.submit(["small"])
    req = env.requestor.wait(rid)
    assert req["state"] == "fulfilled"
    (node_id,) = req["nodes"]
    wait_for(lambda: tl.has(launcher.ctx.timeline.entries(rid), tl.FULFILLED, "fake1", "main"),
             what="the fulfilment recorded (after its write's answer)")
    entries = launcher.ctx.timeline.entries(rid)
    events = [e["event"] for e in entries]
    assert events == [tl.SEEN, tl.LAUNCH_STARTED, tl.LAUNCH_FAILED, tl.NODE_READY,
                      tl.FULFILLED]
    failed = entries[2]
    assert failed["detail"] == {"node": node_id, "attempt": 1, "of": 3}
    assert failed["text"].startswith("launch failed: ")
    assert entries[-1]["text"] == f"with {node_id}"
    text = render_explain({"id": rid, "request": req, "entries": entries, "reason": "r"})
    assert f"launch attempt 1 of node {node_id} failed: launch failed: " in text
    assert f"node {node_id} is ready" in text


def test_quick_hand_over_writes_no_timeline(env):
    env.write_config(min_ready=1)
    launcher = env.start_launcher()
    rq = env.requestor
    wait_for(lambda: launcher.workers.get("fake1") and
             launcher.workers["fake1"].scope.index.spare_count("main", "small") == 1,
             what="a ready spare")
    rid = rq.submit(["small"])
    assert rq.wait(rid)["state"] == "fulfilled"
    wait_for(lambda: [e["event"] for e in launcher.ctx.timeline.entries(rid)] ==
             [tl.SEEN, tl.FULFILLED], what="the hand-over recorded in memory")
    flusher_passes(launcher, 3)      # passes that began after the fulfilment
    assert not env.kazoo.exists(paths.request_timeline(rid))


def test_writer_deletes_the_timeline_of_a_request_that_is_gone(env):
    launcher, _, waiting = at_quota(env)
    wait_stored(env.kazoo, waiting, lambda es: bool(es), "the timeline in ZooKeeper")
    env.kazoo.delete(paths.request(waiting))      # the CI master cancels it
    wait_for(lambda: not env.kazoo.exists(paths.request_timeline(waiting)), timeout=20,
             what="the timeline deleted by its writer")


def test_orphan_sweep_deletes_timelines_of_requests_that_are_gone(env):
    env.write_config()
    launcher = env.start_launcher()
    wait_for(lambda: launcher.min_ready_owner, what="the launcher owns min-ready")
    live = env.requestor.submit(["small"])
    env.kazoo.create(paths.request_timeline_entry("200-0000099999", "fake1"),
                     tl.encode([tl.new_entry(tl.SEEN, time.time())]), makepath=True)
    env.kazoo.create(paths.request_timeline_entry(live, "@someone"),
                     tl.encode([tl.new_entry(tl.RESET, time.time())]), makepath=True)
    assert maintenance.sweep_timelines(launcher) == ["200-0000099999"]
    assert not env.kazoo.exists(paths.request_timeline("200-0000099999"))
    assert env.kazoo.exists(paths.request_timeline(live))


def test_new_owner_continues_the_timeline_after_a_takeover(env):
    env.write_config(max_servers=1)
    nl01 = env.start_launcher("nl01")
    wait_for(lambda: "fake1" in nl01.workers, what="nl01 owns fake1")
    nl02 = env.start_launcher("nl02")
    # fake1 runs on its owner by the spread (nl01 hands it over when that is nl02).
    spread = assign(["fake1"], {nl01.owner_id: ProviderFilter(), nl02.owner_id: ProviderFilter()})
    first_launcher, second = (nl01, nl02) if spread["fake1"] == nl01.owner_id else (nl02, nl01)
    wait_for(lambda: "fake1" in first_launcher.workers and "fake1" not in second.workers,
             what=f"{first_launcher.hostname} owns fake1")
    rq = env.requestor
    assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"
    waiting = rq.submit(["small"])
    before = wait_stored(env.kazoo, waiting, lambda es: tl.has(es, tl.DEFERRED, "fake1", "main"),
                         f"{first_launcher.hostname}'s deferral in ZooKeeper")
    stopped = time.time()
    first_launcher.stop()
    wait_for(lambda: "fake1" in second.workers, timeout=30, what=f"{second.hostname} owns fake1")
    after = wait_stored(env.kazoo, waiting,
                        lambda es: any(e["time"] > stopped for e in es),
                        f"{second.hostname}'s entries in the same timeline")
    kept = {(e["event"], e["time"]) for e in after}
    assert {(e["event"], e["time"]) for e in before} <= kept
    assert [e["event"] for e in after if e["time"] > stopped][-1] == tl.DEFERRED
    seen_by = [e["detail"]["launcher"] for e in after if e["event"] == tl.SEEN]
    assert seen_by == [first_launcher.hostname, second.hostname]
    assert f"seen by pool main of provider fake1 (launcher {second.hostname})" in \
        render_explain(explain(env.kazoo, waiting))


def test_cli_request_explain_text_and_json(env, capsys):
    _, _, waiting = at_quota(env)
    wait_stored(env.kazoo, waiting, lambda es: tl.has(es, tl.DEFERRED, "fake1", "main"),
                "the deferral in ZooKeeper")
    assert cli.main(["-c", env.config_path, "request-explain", waiting]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"request {waiting} (small) from zuul-test: waiting ")
    assert lines[0].endswith("pool main of provider fake1 is at quota, 1 of 1 servers")
    assert "seen by pool main of provider fake1" in lines[1]
    assert "deferred: pool main of provider fake1 is at quota, 1 of 1 servers" in lines[2]
    assert cli.main(["-c", env.config_path, "request-explain", waiting, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == waiting and data["state"] == "requested"
    assert [e["event"] for e in data["entries"]] == [tl.SEEN, tl.DEFERRED]
    assert data["reason"].endswith("1 of 1 servers")
    assert set(data) == {"id", "state", "age", "request", "entries", "dropped", "ahead",
                         "reason"}
    assert data["ahead"] == 0
    assert data["request"]["node_types"] == ["small"]
    assert explain(env.kazoo, waiting)["entries"][:1] == data["entries"][:1]


def test_cli_request_explain_of_an_unknown_request_fails_in_one_line(env, capsys):
    env.write_config()
    assert cli.main(["-c", env.config_path, "request-explain", "200-0000099999"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "nodepool: no request 200-0000099999 (unknown, or deleted by its requestor)"]


def test_recorder_coalesces_repeats_and_stays_bounded():
    clock = iter(range(100000)).__next__
    rec = Recorder(clock=lambda: float(clock()))
    for _ in range(10000):
        rec.record("200-0000000001", "p", tl.DEFERRED, "pool main of provider p is at quota",
                   pool="main", cause="pool")
    (entry,) = rec.entries("200-0000000001")
    assert entry["count"] == 10000 and entry["time"] == 0 and entry["last"] == 9999
    for i in range(500):
        rec.record("200-0000000001", "p", tl.LAUNCH_FAILED, "x" * 1000, pool="main",
                   node=f"{i:010d}", attempt=i)
        rec.record("200-0000000001", "p", tl.DEFERRED, "at quota", pool="main", cause="pool")
    ((key, t),) = rec.items()
    entries, dropped = tl.bound(t.entries, t.dropped)
    assert len(entries) <= tl.MAX_ENTRIES and dropped > 900
    assert len(tl.encode(entries, dropped)) <= tl.MAX_BYTES
    assert entries[0]["count"] == 10000               # where it started stays
    assert all(len(e.get("text", "")) <= tl.MAX_TEXT for e in entries)


def test_reset_after_a_lost_launcher_is_in_the_timeline(env):
    launcher, _, waiting = at_quota(env)
    rq = env.requestor
    body = rq.get(waiting)
    body.update(state="pending")          # pending, and nobody holds it: its launcher died
    lost = env.kazoo.create("/nodepool/requests/200-", json.dumps(body).encode(),
                            sequence=True).rsplit("/", 1)[1]
    launcher.reset_lost_requests()
    entries = wait_stored(env.kazoo, lost,
                          lambda es: tl.has(es, tl.RESET) and tl.has(es, tl.DEFERRED, "fake1",
                                                                     "main"),
                          "the reset and the deferral after it")
    assert env.kazoo.exists(paths.request_timeline_entry(lost, "@nl01"))
    reset = next(e for e in entries if e["event"] == tl.RESET)
    assert "provider" not in reset and "its launcher is gone" in reset["text"]
    assert "reset to requested: it was pending and its launcher is gone" in \
        render_explain(explain(env.kazoo, lost))


def test_request_whose_launches_all_fail_says_why_it_failed(env):
    env.write_config(retries=2)
    env.cloud.fail_next_create("error", count=2)
    env.start_launcher()
    rid = env.requestor.submit(["small"])
    assert env.requestor.wait(rid)["state"] == "failed"
    entries = wait_stored(env.kazoo, rid, lambda es: tl.has(es, tl.FAILED, "fake1", "main"),
                          "the failure in ZooKeeper")
    events = [e["event"] for e in entries]
    assert events == [tl.SEEN, tl.LAUNCH_STARTED, tl.LAUNCH_FAILED, tl.DECLINED, tl.FAILED]
    attempts = entries[2]      # consecutive failed attempts coalesce: the last one's detail
    assert attempts["count"] == 2 and attempts["detail"]["attempt"] == 2
    assert attempts["detail"]["of"] == 2
    failed = entries[-1]["text"]
    assert failed.startswith("declined by every pool (last: node ") and "failed: " in failed
    assert explain(env.kazoo, rid)["reason"] == f"failed: {failed}"


def test_transient_refusal_of_a_launch_is_noted_as_rate_limited(env):
    env.write_config()
    launcher = env.start_launcher()
    env.cloud.fail_next_create("transient", count=1, retry_after=0.05)
    rid = env.requestor.submit(["small"])
    assert env.requestor.wait(rid)["state"] == "fulfilled"
    wait_for(lambda: tl.has(launcher.ctx.timeline.entries(rid), tl.FULFILLED, "fake1", "main"),
             what="the fulfilment recorded")
    limited = [e for e in launcher.ctx.timeline.entries(rid) if e.get("cause") == "rate limited"]
    assert len(limited) == 1 and limited[0]["text"].startswith("the cloud asked to retry: ")


def test_unreadable_stored_entries_are_skipped_not_fatal():
    good = tl.new_entry(tl.SEEN, 5.0, provider="p", pool="main")
    raw = json.dumps({"entries": [good, {"event": "seen", "time": "soon"}, "junk", {}]})
    assert tl.decode(raw.encode()) == ([good], 0)
    assert tl.decode(b"not json") == ([], 0)
    assert tl.decode(b"[1, 2]") == ([], 0)
