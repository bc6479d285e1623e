"""A used static slot is scanned again before it is handed out (real sshd hosts): a host
whose keys changed is registered with its new keys, one that went down is not handed out."""

import logging

import pytest
from plugins.launcher_env import LauncherEnv, cache_has_request, passes_go_by
from requestor import wait_for
from sshd import SshServer, ensure_sshd
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.launcher.daemon import Launcher

ONE_HOST = ZK_HEADER + """
labels:
  - name: metal
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
          - name: {sshaddr}
            labels: metal
            connection-port: {sshport}
            timeout: 2
"""


@pytest.fixture
def host(tmp_path):
    ensure_sshd()
    servers = [SshServer(tmp_path / "first").start()]
    yield servers       # a test may replace the server (same address and port)
    for s in servers:
        s.stop()


@pytest.fixture
def env(zk_tls, zk_client, tmp_path, host):
    env = LauncherEnv(zk_tls, tmp_path, zk_client)
    with open(env.config_path, "w") as f:
        f.write(nodepool_yaml(zk_tls, ONE_HOST, sshaddr=host[0].address, sshport=host[0].port))
    launcher = Launcher(env.config_path, hostname="nl-rescan")
    launcher.start()
    env.launchers.append(launcher)
    yield env
    env.stop()


def ready_nodes(env):
    rq = env.requestor
    ids = env.kazoo.get_children("/nodepool/nodes") if env.kazoo.exists("/nodepool/nodes") \
        else []
    return [n for n in (rq.node(i) for i in ids) if n and n["state"] == "ready"]


def use_the_host(env) -> tuple[str, dict]:
    rq = env.requestor
    rid = rq.submit(["metal"])
    req = rq.wait(rid)
    assert req["state"] == "fulfilled", req
    (node_id,) = rq.accept(rid, req)
    return node_id, rq.node(node_id)


def test_host_with_new_keys_after_a_use_gets_them(env, host, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nodepool.nodescan")
    rq = env.requestor
    wait_for(lambda: len(ready_nodes(env)) == 1, what="the host registered")
    node_id, node = use_the_host(env)
    assert sorted(node["host_keys"]) == sorted(host[0].public_keys)
    # While the job runs the host is reinstalled: same address and port, new keys.
    old = host[0]
    old.stop()
    host[0] = SshServer(tmp_path / "second", address=old.address, port=old.port).start()
    rq.finish([node_id])
    wait_for(lambda: [n for n in ready_nodes(env)], timeout=20, what="slot registered again")
    (again,) = ready_nodes(env)
    assert sorted(again["host_keys"]) == sorted(host[0].public_keys)
    assert not set(again["host_keys"]) & set(old.public_keys)
    # It was checked against the keys it had (not scanned as if new), and found changed.
    assert "presents another ssh-ed25519 key than last time" in caplog.text
    _, handed = use_the_host(env)
    assert sorted(handed["host_keys"]) == sorted(host[0].public_keys)


def test_unchanged_host_keeps_its_keys(env, host):
    rq = env.requestor
    wait_for(lambda: len(ready_nodes(env)) == 1, what="the host registered")
    for _ in range(3):
        node_id, node = use_the_host(env)
        assert sorted(node["host_keys"]) == sorted(host[0].public_keys)
        rq.finish([node_id])


def test_host_down_after_a_use_is_not_handed_out(env, host, tmp_path):
    rq = env.requestor
    wait_for(lambda: len(ready_nodes(env)) == 1, what="the host registered")
    node_id, _ = use_the_host(env)
    old = host[0]
    old.stop()
    rq.finish([node_id])
    wait_for(lambda: rq.node(node_id) is None, timeout=20, what="the used node deleted")
    waiting = rq.submit(["metal"])
    (launcher,) = env.launchers
    cache_has_request(launcher, waiting)
    passes_go_by(launcher, "lab")
    assert rq.get(waiting)["state"] == "requested"
    assert ready_nodes(env) == []
    # Back up (same keys): the slot is registered again and the request served.
    old.start()
    req = rq.wait(waiting, timeout=30)
    assert req["state"] == "fulfilled"
    assert sorted(rq.node(req["nodes"][0])["host_keys"]) == sorted(old.public_keys)
