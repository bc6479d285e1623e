"""With ZooKeeper unreachable, /ready says so (503) and the lists serve the cache's last view."""

from __future__ import annotations

import http.client
import json
from typing import Any

from requestor import wait_for
from test_launcher_ensemble import EnsembleEnv, ens_env  # noqa: F401 (the fixture)

WEB = "webapp:\n  listen_address: 127.0.0.1\n  port: 0\n"


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_ready_is_503_while_zookeeper_is_down_and_lists_keep_the_last_view(
        ens_env: EnsembleEnv, zk_ensemble: Any) -> None:  # noqa: F811
    ens_env.write_config(min_ready=1, extra=WEB)
    launcher = ens_env.start_launcher(webapp=True)
    port = launcher.web.port
    wait_for(lambda: get(port, "/ready") == (200, "OK"), timeout=30, what="ready")
    nodes = wait_for(lambda: json.loads(get(port, "/node-list")[1]), timeout=30,
                     what="a min-ready node listed")
    for i in range(zk_ensemble.size):
        zk_ensemble.pause(i)   # every server hung: the launcher's connection is lost
    try:
        status, body = wait_for(lambda: (r := get(port, "/ready"))[0] == 503 and r,
                                timeout=30, what="/ready says 503")
        assert body.startswith("ZooKeeper is not")   # connected, or answering (hung)
        status, body = get(port, "/node-list")
        assert status == 200
        assert {n["id"] for n in json.loads(body)} >= {n["id"] for n in nodes}
        for path in ("/image-list", "/dib-image-list", "/image-status"):
            status, body = get(port, path)   # needs a fresh read: refused at once
            assert status == 503 and "ZooKeeper is not" in body, path
    finally:
        zk_ensemble.restore()
    wait_for(lambda: get(port, "/ready") == (200, "OK"), timeout=60, what="ready again")
