"""A reload that removes or changes static hosts (issue 16): their idle ready nodes are
unregistered and never handed out; an in-use node is left to its user and not
registered again once returned; a changed host is registered with its new attributes."""

import pytest
from plugins.launcher_env import LauncherEnv, passes_go_by
from requestor import wait_for
from sshd import SshServer, ensure_sshd
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.launcher.daemon import Launcher

TWO_HOSTS = ZK_HEADER + """
labels:
  - name: metal
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
{hosts}
"""

HOST = """\
          - name: {addr}
            labels: metal
            connection-port: {sshport}
            username: {user}
            timeout: 2
            max-parallel-jobs: {slots}
"""


def config(zk_tls, entries) -> str:
    hosts = "".join(HOST.format(addr=h.address, sshport=h.port, user=user, slots=slots)
                    for h, user, slots in entries)
    return nodepool_yaml(zk_tls, TWO_HOSTS, hosts=hosts)


@pytest.fixture
def hosts(tmp_path):
    ensure_sshd()
    servers = [SshServer(tmp_path).start(), SshServer(tmp_path).start()]
    yield servers
    for s in servers:
        s.stop()


def nodes(env):
    if not env.kazoo.exists("/nodepool/nodes"):
        return []
    found = ((i, env.requestor.node(i)) for i in env.kazoo.get_children("/nodepool/nodes"))
    return [dict(n, id=i) for i, n in found if n]


def of(env, host, state=None):
    return [n for n in nodes(env) if n["connection_port"] == host.port and
            (state is None or n["state"] == state)]


def test_reload_unregisters_removed_hosts_and_updates_changed_ones(zk_tls, zk_client,
                                                                   tmp_path, hosts):
    a, b = hosts
    env = LauncherEnv(zk_tls, tmp_path, zk_client)
    with open(env.config_path, "w") as f:
        f.write(config(zk_tls, [(a, "zuul", 2), (b, "zuul", 1)]))
    launcher = Launcher(env.config_path, hostname="nl-static")
    launcher.start()
    env.launchers.append(launcher)
    rq = env.requestor
    try:
        wait_for(lambda: len(of(env, a, "ready")) == 2 and len(of(env, b, "ready")) == 1,
                 timeout=20, what="three slots registered")
        (idle_b,) = of(env, b, "ready")
        # Take both of a's slots' nodes... one of them: a request for one node takes the
        # oldest spare; take until a node of host a is in use.
        in_use = None
        while in_use is None:
            rid = rq.submit(["metal"])
            (nid,) = rq.accept(rid, rq.wait(rid))
            node = rq.node(nid)
            if node["connection_port"] == a.port:
                in_use = nid
            else:
                rq.finish([nid])
                wait_for(lambda: len(of(env, b, "ready")) == 1, timeout=20,
                         what="b's slot registered again")
                idle_b = of(env, b, "ready")[0]
        (idle_a,) = of(env, a, "ready")

        with open(env.config_path, "w") as f:
            f.write(config(zk_tls, [(b, "ops", 1)]))     # a removed, b's user changed
        launcher.check_config()

        wait_for(lambda: rq.node(idle_a["id"]) is None, timeout=20,
                 what="the removed host's ready node unregistered")
        wait_for(lambda: rq.node(idle_b["id"]) is None, timeout=20,
                 what="the changed host's old node unregistered")
        new_b = wait_for(lambda: of(env, b, "ready"), timeout=20, what="b registered again")
        assert new_b[0]["username"] == "ops"
        assert rq.node(in_use)["state"] == "in-use"          # left to its user
        rid = rq.submit(["metal"])
        (nid,) = rq.accept(rid, rq.wait(rid))
        assert rq.node(nid)["username"] == "ops"
        rq.finish([in_use])
        wait_for(lambda: rq.node(in_use) is None, timeout=20, what="returned node deleted")
        passes_go_by(launcher, "lab")
        assert of(env, a) == []                              # not registered again
    finally:
        env.stop()


def test_outdated_names_what_changed_and_passes_what_did_not():
    from nodepool.drivers.adapter import Instance, InstanceStatus
    from nodepool.drivers.static.standing import outdated
    from nodepool.model import Node

    inst = Instance(external_id="h", status=InstanceStatus.READY, interface_ip="h",
                    username="zuul", connection_port=22, connection_type="ssh",
                    python_path="auto", host_keys=None,
                    metadata={"labels": ["metal"], "standing": "h-0"})
    node = Node(type=["metal"], interface_ip="h", username="zuul", connection_port=22,
                connection_type="ssh", python_path="auto", external_id="h",
                driver_data={"standing": "h-0"})
    assert outdated(node, {"h-0": inst}) is None
    assert "removed" in outdated(node, {})
    node.username = "other"
    assert "(username)" in outdated(node, {"h-0": inst})
    node.username, node.type = "zuul", ["metal", "big"]
    assert "(labels)" in outdated(node, {"h-0": inst})
    node.type, node.external_id = ["metal"], "h-0"     # written before external_id = host
    assert "registered again as 'h'" in outdated(node, {"h-0": inst})
    assert outdated(Node(type=["metal"]), {}) is None    # not a node we registered
