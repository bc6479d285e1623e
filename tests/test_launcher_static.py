"""The static driver in the launcher: real sshd hosts, keyscanned, lent out, re-registered."""

import time

import pytest
from plugins.launcher_env import LauncherEnv, cache_has_request, passes_go_by
from requestor import wait_for
from sshd import SshServer, ensure_sshd
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.launcher.daemon import Launcher

STATIC = ZK_HEADER + """
labels:
  - name: metal
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
          - name: {addr1}
            labels: metal
            connection-port: {port1}
            timeout: 2
            max-parallel-jobs: 2
          - name: {addr2}
            labels: [metal]
            connection-port: {port2}
            timeout: 2
"""


def static_yaml(zk_tls, hosts) -> str:
    return nodepool_yaml(zk_tls, STATIC, addr1=hosts[0].address, port1=hosts[0].port,
                         addr2=hosts[1].address, port2=hosts[1].port)


@pytest.fixture
def hosts(tmp_path):
    ensure_sshd()
    servers = [SshServer(tmp_path).start(), SshServer(tmp_path)]  # the second starts later
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def static_env(zk_tls, zk_client, tmp_path, hosts):
    env = LauncherEnv(zk_tls, tmp_path, zk_client)
    with open(env.config_path, "w") as f:
        f.write(static_yaml(zk_tls, hosts))
    launcher = Launcher(env.config_path, hostname="nl-static")
    launcher.start()
    env.launchers.append(launcher)
    yield env
    env.stop()


def all_nodes(env):
    rq = env.requestor
    return [n for n in (rq.node(i) for i in env.kazoo.get_children("/nodepool/nodes")) if n] \
        if env.kazoo.exists("/nodepool/nodes") else []


def ready(env):
    return [n for n in all_nodes(env) if n["state"] == "ready"]


def test_static_hosts_become_ready_nodes_per_slot_with_scanned_keys(static_env, hosts):
    wait_for(lambda: len(ready(static_env)) == 2, what="both slots of the live host ready")
    for node in ready(static_env):
        assert node["interface_ip"] == hosts[0].address
        assert node["connection_port"] == hosts[0].port
        assert sorted(node["host_keys"]) == sorted(hosts[0].public_keys)
        assert node["type"] == ["metal"] and node["provider"] == "lab"
    assert sorted(n["slot"] for n in ready(static_env)) == [0, 1]
    # The host that does not answer yet is not registered ...
    assert all(n["interface_ip"] != hosts[1].address for n in all_nodes(static_env))
    # ... and is put in once it answers.
    hosts[1].start()
    wait_for(lambda: len(ready(static_env)) == 3, timeout=20, what="second host registered")


def test_requests_wait_while_every_host_is_busy_then_slots_are_reused(static_env, hosts):
    rq = static_env.requestor
    wait_for(lambda: len(ready(static_env)) == 2, what="slots ready")
    taken = []
    for _ in range(2):
        rid = rq.submit(["metal"])
        taken += rq.accept(rid, rq.wait(rid))
    waiting = rq.submit(["metal"])
    # Two passes after the launcher knew of it, it still waits: not failed, not declined.
    (launcher,) = static_env.launchers
    cache_has_request(launcher, waiting)
    passes_go_by(launcher, "lab")
    request = rq.get(waiting)
    assert request["state"] == "requested" and request["declined_by"] == []
    rq.finish(taken[:1])        # one job ends: its slot is re-registered and handed over
    req = rq.wait(waiting, timeout=15)
    assert req["state"] == "fulfilled"
    assert rq.node(req["nodes"][0])["interface_ip"] == hosts[0].address


def test_launcher_process_stops_on_sigterm_and_exits_zero(zk_tls, zk_client, tmp_path, hosts):
    """The real entry point: -f, serves, SIGTERM -> components gone, exit 0, bounded time."""
    import os
    import signal
    import subprocess
    import sys

    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(static_yaml(zk_tls, hosts))
    proc = subprocess.Popen([sys.executable, "-m", "nodepool.launcher.main", "-f", "--no-webapp", "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))
    try:
        wait_for(lambda: zk_client.exists("/nodepool/components/pool") and
                 zk_client.get_children("/nodepool/components/pool"), timeout=20,
                 what="launcher registered")
        wait_for(lambda: zk_client.exists("/nodepool/nodes") and
                 len(zk_client.get_children("/nodepool/nodes")) == 2, timeout=20,
                 what="static nodes registered")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, out
        assert time.monotonic() - t0 < 35
        assert zk_client.get_children("/nodepool/components/pool") == []
        assert zk_client.get_children("/nodepool/components/launcher") == []
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
