"""Request timelines over the web and in request-list: `GET /request/ID`, the Reason column."""

from __future__ import annotations

import json

from requestor import wait_for
from test_web import get, get_json, header_line

from nodepool import cli
from nodepool import timeline as tl
from nodepool.zk import timelines as zkt

QUOTA = "pool main of provider fake1 is at quota, 1 of 1 servers"


def waiting_at_quota(env):
    """max-servers 1: one request holds the only node; a second waits, its deferral stored."""
    env.write_config(max_servers=1, web=True)
    launcher = env.start_launcher(webapp=True)
    rq = env.requestor
    assert rq.wait(rq.submit(["small"]))["state"] == "fulfilled"
    waiting = rq.submit(["small"])
    wait_for(lambda: tl.has(zkt.read_timeline(env.kazoo, waiting)[0], tl.DEFERRED, "fake1", "main"),
             timeout=20, what="the waiting request's deferral in ZooKeeper")
    return launcher, waiting


def test_request_explain_and_the_reason_column_over_http(env):
    launcher, waiting = waiting_at_quota(env)
    port = launcher.web.port
    status, headers, body = get(port, f"/request/{waiting}")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert QUOTA in body.splitlines()[0], body
    explained = get_json(port, f"/request/{waiting}")
    assert explained["id"] == waiting and explained["state"] == "requested"
    assert [e["event"] for e in explained["entries"]][:1] == [tl.SEEN]
    assert explained["reason"].endswith(QUOTA)
    rows = {r["id"]: r for r in get_json(port, "/request-list")}
    assert rows[waiting]["reason"].endswith(QUOTA)
    status, _, body = get(port, "/request-list?fields=id,reason")
    assert status == 200 and header_line(body) == ["Request ID", "Reason"]
    assert QUOTA in body


def test_request_explain_refuses_bad_and_unknown_ids(env):
    env.write_config(web=True)
    launcher = env.start_launcher(webapp=True)
    port = launcher.web.port
    # Before its first view of ZooKeeper the launcher says 503 "starting" to everything.
    wait_for(lambda: get(port, "/ready")[0] == 200, timeout=30, what="the launcher ready")
    status, _, body = get(port, "/request/200-0000099999")
    assert status == 404 and "no request 200-0000099999" in body
    status, _, body = get(port, "/request/../node-list")
    assert status == 400 and "bad request id" in body
    assert "Traceback" not in body


def test_cli_request_list_shows_the_reason(env, capsys):
    _, waiting = waiting_at_quota(env)
    assert cli.main(["-c", env.config_path, "request-list"]) == 0
    out = capsys.readouterr().out
    assert header_line(out)[-1] == "Reason"
    line = next(x for x in out.splitlines() if waiting in x)
    assert QUOTA in line
    assert cli.main(["-c", env.config_path, "request-list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[waiting]["reason"].endswith(QUOTA)


def test_metrics_endpoint_serves_the_prometheus_exposition(env):
    from prometheus_client.parser import text_string_to_metric_families
    env.write_config(min_ready=1, web=True)
    launcher = env.start_launcher(webapp=True)
    wait_for(lambda: any(n.state.value == "ready" for n in launcher.ctx.cache.nodes()),
             what="a ready node")
    status, headers, body = get(launcher.web.port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(body)}
    assert {"nodepool_launch_duration_seconds", "nodepool_launches"} <= names
