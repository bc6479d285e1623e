"""Request timelines while ZooKeeper is away (no quorum): entries stay in memory and are
written once it is back, on the same session."""

from __future__ import annotations

from typing import Any

from requestor import wait_for
from test_launcher_ensemble import SESSION_TIMEOUT, EnsembleEnv, ens_env  # noqa: F401 (the fixture)

from nodepool import timeline as tl
from nodepool.zk import timelines as zkt

OUTAGE_TEXT = "noted while every ZooKeeper server was hung"


def stored_texts(kazoo, request_id: str) -> list[str]:
    return [e.get("text", "") for e in zkt.read_timeline(kazoo, request_id)[0]]


def test_entries_noted_during_an_outage_are_written_after_it(
        ens_env: EnsembleEnv, zk_ensemble: Any) -> None:  # noqa: F811
    path = ens_env.write_config(max_servers=1)
    # The session must outlive the outage however slowly a loaded machine restarts a server
    # (an expired session takes the provider lease and its unwritten entries with it, by design).
    with open(path) as f:
        text = f.read()
    assert f"zookeeper-timeout: {SESSION_TIMEOUT}\n" in text
    with open(path, "w") as f:
        f.write(text.replace(f"zookeeper-timeout: {SESSION_TIMEOUT}\n", "zookeeper-timeout: 15\n"))
    launcher = ens_env.start_launcher()
    rq = ens_env.requestor
    assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"   # holds the only server
    waiting = rq.submit(["small"])
    wait_for(lambda: tl.has(zkt.read_timeline(ens_env.kazoo, waiting)[0], tl.DEFERRED,
                            "fake1", "main"), timeout=30, what="the deferral stored")
    flusher, recorder = launcher.timeline_flusher, launcher.ctx.timeline
    zk_ensemble.kill(0)   # two of three gone: no quorum, the last one serves nobody
    zk_ensemble.kill(1)
    try:
        wait_for(lambda: not launcher.ctx.zk.connected, timeout=60, what="the launcher disconnected")
        # An event of the provider during the outage (its loop skips passes while the
        # session is not proven, so it is noted here; an event of its own kind, so that
        # no later repeat of the deferral coalesces with it).
        recorder.record(waiting, "fake1", tl.LAUNCH_FAILED, OUTAGE_TEXT, pool="main")
        passes = flusher.passes
        wait_for(lambda: flusher.passes >= passes + 2, timeout=30,
                 what="two flusher passes during the outage")
        assert not launcher.ctx.zk.connected
        assert any(e.get("text") == OUTAGE_TEXT for e in recorder.entries(waiting))
    finally:
        zk_ensemble.start_member(0)   # a quorum again (the fixture restarts the other)
    wait_for(lambda: OUTAGE_TEXT in stored_texts(ens_env.kazoo, waiting), timeout=60,
             what="the entry noted during the outage written once ZooKeeper is back")
    texts = stored_texts(ens_env.kazoo, waiting)
    assert any("at quota" in t for t in texts), texts   # the earlier entries are kept
