"""The launcher's web endpoints over real HTTP: Nodepool's formats, fields, caching, errors."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time

import pytest
from plugins.launcher_env import passes_go_by
from requestor import wait_for

from nodepool import cli, listings
from nodepool.launcher.daemon import Launcher
from nodepool.web import LauncherWeb, Response


def get(port: int, path: str, accept: str | None = None, method: str = "GET",
        headers: dict | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={**({"Accept": accept} if accept else {}),
                                            **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, \
            resp.read().decode("utf-8")
    finally:
        conn.close()


def get_json(port: int, path: str):
    status, headers, body = get(port, path, accept="application/json")
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


def header_line(table_text: str) -> list[str]:
    """The column headers of a prettytable text table."""
    line = table_text.splitlines()[1]
    return [h.strip() for h in line.strip("|").split("|")]


@pytest.fixture
def web(env):
    env.write_config(min_ready=2, web=True)
    launcher = env.start_launcher(webapp=True)
    wait_for(lambda: sum(n.state.value == "ready" for n in launcher.ctx.cache.nodes()) >= 2,
             timeout=20, what="two min-ready nodes")
    return launcher


def test_ready_is_503_with_the_reason_until_the_launcher_has_passed(env):
    env.write_config(web=True)
    launcher = Launcher(env.config_path, hostname="nl-web")
    early = LauncherWeb(launcher).start()   # serving before the launcher starts
    try:
        status, headers, body = get(early.port, "/ready")
        assert status == 503 and "not connected to ZooKeeper" in body
        assert headers["cache-control"] == "no-store"
    finally:
        early.stop()
    launcher = env.start_launcher(webapp=True)
    passes_go_by(launcher, "fake1", count=1)
    status, _, body = get(launcher.web.port, "/ready")
    assert (status, body) == (200, "OK")
    assert get(launcher.web.port, "/ready", method="HEAD")[0] == 200


def test_node_list_text_by_default_and_json_when_asked(web):
    port = web.web.port
    status, headers, body = get(port, "/node-list")
    assert status == 200 and headers["content-type"] == "text/plain; charset=UTF-8"
    assert header_line(body) == [c.header for c in listings.NODES.columns]
    for accept in (None, "*/*", "text/html,application/xhtml+xml,*/*;q=0.8",
                   "text/plain, application/json"):
        assert get(port, "/node-list", accept)[1]["content-type"].startswith("text/plain")
    for accept in ("application/json", "application/json, */*",
                   "text/plain;q=0.5, application/json"):
        assert get(port, "/node-list", accept)[1]["content-type"].startswith("application/json")
    data = get_json(port, "/node-list")
    ready = [n for n in data if n["state"] == "ready"]
    assert len(ready) >= 2
    assert all(list(n) == list(listings.NODES.keys) for n in data)
    node = ready[0]
    assert node["provider"] == "fake1" and node["label"] == ["small"]
    assert node["pool"] == "main" and node["locked"] in ("locked", "unlocked")
    assert len(node["age"].split(":")) == 4   # Nodepool's DD:HH:MM:SS, in JSON too


def test_node_id_and_fields_select(web):
    port = web.web.port
    nodes = get_json(port, "/node-list")
    one = get_json(port, f"/node-list?node_id={nodes[0]['id']}&fields=id,state")
    assert one == [{"id": nodes[0]["id"], "state": nodes[0]["state"]}]
    assert get_json(port, "/node-list?node_id=0009999999") == []
    status, _, body = get(port, "/node-list?fields=id,state,label")
    assert header_line(body) == ["ID", "Label", "State"]   # table order, not the asked one
    status, _, body = get(port, "/node-list?fields=id,bogus")
    assert status == 400 and "bogus" in body and "valid fields: id, provider" in body
    status, _, body = get(port, "/node-list?node_id=../etc")
    assert status == 400 and "node_id" in body


def test_request_list_label_list_and_image_lists(web, env, zk_client):
    port = web.web.port
    rid = env.requestor.submit(["other"])   # no pool offers it: declined, then failed
    wait_for(lambda: web.ctx.cache.get_request(rid) is not None, what="request cached")
    rows = wait_for(lambda: [r for r in get_json(port, "/request-list") if r["id"] == rid],
                    what="the request in /request-list")
    assert list(rows[0]) == list(listings.REQUESTS.keys)
    assert rows[0]["node_types"] == ["other"]
    assert rows[0]["reason"].startswith(("waiting", "failed"))   # from its timeline
    assert get_json(port, "/label-list") == [{"label": "large"}, {"label": "small"}]
    assert get_json(port, "/image-list") == [] and get_json(port, "/dib-image-list") == []
    # A build and its upload in Nodepool's image layout.
    build = {"state": "ready", "state_time": 1700000000.5, "builder": "nb01",
             "formats": "qcow2,raw"}
    upload = {"state": "ready", "state_time": 1700000100, "external_id": "glance-1",
              "external_name": "ubuntu-1700000000"}
    base = "/nodepool/images/ubuntu/builds/0000000007"
    zk_client.create(base, json.dumps(build).encode(), makepath=True)
    zk_client.create(f"{base}/providers/fake1/images/0000000001", json.dumps(upload).encode(),
                     makepath=True)
    assert wait_for(lambda: get_json(port, "/dib-image-list"), what="the build listed") == [
        {"id": "ubuntu-0000000007", "image": "ubuntu", "builder": "nb01",
         "formats": ["qcow2", "raw"], "state": "ready", "age": 1700000000}]
    assert wait_for(lambda: get_json(port, "/image-list"), what="the upload listed") == [
        {"id": "0000000007", "upload_id": "0000000001", "provider": "fake1",
         "image": "ubuntu", "external_name": "ubuntu-1700000000",
         "external_id": "glance-1", "state": "ready", "age": 1700000100}]
    status, _, body = get(port, "/image-list")
    assert "glance-1" in body and "00:00:00:00" not in body   # text shows the age


def test_image_status_shows_pause_and_build_request(web, zk_client):
    port = web.web.port
    assert get_json(port, "/image-status") == []
    zk_client.create("/nodepool/images/ubuntu/pause", makepath=True)
    zk_client.create("/nodepool/images/ubuntu/request-build")
    _, stat = zk_client.get("/nodepool/images/ubuntu/request-build")
    rows = wait_for(lambda: get_json(port, "/image-status"), what="the image listed")
    assert rows == [{"image": "ubuntu", "paused": True, "build_request": "pending",
                     "build_request_age": int(stat.created)}]
    status, _, body = get(port, "/image-status?fields=image,build_request")
    assert status == 200 and header_line(body) == ["Image", "Build Request"]
    assert "pending" in body and "True" not in body


def test_the_cli_lists_the_same_columns_as_the_web(web, env, capsys):
    port = web.web.port
    for command, path in (("list --detail", "/node-list"), ("request-list", "/request-list"),
                          ("label-list", "/label-list"), ("image-list", "/image-list"),
                          ("dib-image-list", "/dib-image-list"),
                          ("image-status", "/image-status")):
        assert cli.main(["-c", env.config_path, *command.split()]) == 0
        out = capsys.readouterr().out
        assert header_line(out) == header_line(get(port, path)[2]), command
    assert cli.main(["-c", env.config_path, "label-list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == get_json(port, "/label-list")


def test_cache_headers_and_one_second_cache(web, env):
    port = web.web.port
    status, headers, body = get(port, "/request-list")
    assert headers["access-control-allow-origin"] == "*"
    assert headers["cache-control"] == "public, max-age=1"
    assert headers["vary"] == "Accept"
    stamp = headers["last-modified"]
    assert headers["expires"] and stamp.endswith("GMT")
    rid = env.requestor.submit(["other"])
    wait_for(lambda: web.ctx.cache.get_request(rid) is not None, what="request cached")
    again = get(port, "/request-list")
    if again[1]["last-modified"] == stamp:   # same cache entry: the same answer
        assert again[2] == body
    wait_for(lambda: rid in get(port, "/request-list")[2], what="the cache expires")
    status, headers, _ = get(port, "/request-list")
    status2, headers2, body2 = get(port, "/request-list",
                                   headers={"If-Modified-Since": headers["last-modified"]})
    assert status2 == 304 and body2 == "" or \
        (status2 == 200 and headers2["last-modified"] != headers["last-modified"])


def test_errors_are_one_line(web):
    port = web.web.port
    status, headers, body = get(port, "/no-such-thing")
    assert status == 404 and body == "not found: /no-such-thing\n"
    assert headers["access-control-allow-origin"] == "*"
    status, headers, body = get(port, "/node-list", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"

    def broken(request):
        raise RuntimeError("secret detail")
    web.web.app.route("/broken", broken)
    status, _, body = get(port, "/broken")
    assert status == 500 and body == "internal error serving /broken: RuntimeError\n"
    assert "Traceback" not in body and "secret" not in body


def test_routes_plug_in_with_one_line(web):
    web.web.app.route("/hello", lambda r: Response(body=f"hi {r.param('who')}\n"))
    web.web.app.route_prefix("/echo/", lambda r: Response(body=r.remainder))
    assert get(web.web.port, "/hello?who=zuul")[2] == "hi zuul\n"
    assert get(web.web.port, "/echo/200-0000000001")[2] == "200-0000000001"


def test_stop_closes_the_port(env):
    env.write_config(web=True)
    launcher = env.start_launcher(webapp=True)
    port = launcher.web.port
    assert get(port, "/ready")[0] in (200, 503)
    launcher.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def config_on_a_taken_port(env) -> tuple[socket.socket, int]:
    """A listening socket on a free loopback port, and the config's webapp on that port."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env.write_config()
    with open(env.config_path, "a") as f:
        f.write(f"webapp:\n  listen_address: 127.0.0.1\n  port: {port}\n")
    return taken, port


def test_port_in_use_is_one_line_and_exit_4(env, tmp_path):
    taken, port = config_on_a_taken_port(env)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nodepool.launcher.main", "-f", "-c",
                           env.config_path], capture_output=True, text=True, timeout=60)
    taken.close()
    assert proc.returncode == 4, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "nodepool-launcher:" in line]
    assert errors == [f"nodepool-launcher: web endpoints: cannot listen on 127.0.0.1:{port}: "
                      f"address already in use (see webapp: in the config, or --no-webapp)"]
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 60


def test_no_webapp_binds_nothing(env):
    taken, port = config_on_a_taken_port(env)
    proc = subprocess.Popen([sys.executable, "-m", "nodepool.launcher.main", "-f", "--no-webapp",
                             "-c", env.config_path], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:   # the port is taken, yet the launcher starts
            lines.append(line)
            if "Launcher nl" in line or "started with" in line:
                break
        assert any("started with" in line for line in lines), lines
        assert not any("Web endpoints listening" in line for line in lines)
    finally:
        proc.terminate()
        proc.wait(60)
        taken.close()
    assert proc.returncode == 0


def test_ready_reasons_in_order():
    """The decision over plain data: each condition in turn, the first failing one said."""
    from types import SimpleNamespace as NS

    from nodepool.web.endpoints import ready_reason

    class Proof:
        def __init__(self, ok):
            self.ok = ok

        def current_session(self):
            return 1

        def proven(self, session):
            return self.ok

    worker = NS(name="rax-dfw", passes=0)
    launcher = NS(ctx=None, proof=None, stopping=False, passes=0, worker_snapshot=(worker,))
    assert ready_reason(launcher) == "starting: not connected to ZooKeeper yet"
    launcher.ctx = NS(zk=NS(connected=False))
    assert ready_reason(launcher) == "ZooKeeper is not connected"
    launcher.ctx.zk.connected, launcher.proof = True, Proof(False)
    assert ready_reason(launcher) == "ZooKeeper is not answering (the session is not proven alive)"
    launcher.proof = Proof(True)
    assert ready_reason(launcher) == "the launcher loop has not finished its first pass"
    launcher.passes = 1
    assert ready_reason(launcher) == "provider(s) rax-dfw have not finished a loop pass yet"
    worker.passes = 1
    assert ready_reason(launcher) is None
    launcher.stopping = True
    assert ready_reason(launcher) == "stopping"
