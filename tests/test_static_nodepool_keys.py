"""Static driver keys read as Nodepool reads them (issue 16): network_cli is keyscanned,
`max-servers: 0` disables a pool, the legacy `ssh-port` is read. Real sshd and ZooKeeper."""

import pytest
from plugins.launcher_env import LauncherEnv
from requestor import wait_for
from sshd import SshServer, ensure_sshd
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.config import parse_config
from nodepool.launcher.daemon import Launcher

ONE_HOST = ZK_HEADER + """
labels:
  - name: metal
providers:
  - name: lab
    driver: static
    pools:
      - name: main
{pool_extra}
        nodes:
          - name: {addr}
            labels: metal
            connection-port: {sshport}
            connection-type: {kind}
            timeout: 2
            max-parallel-jobs: {slots}
"""


@pytest.fixture
def host(tmp_path):
    ensure_sshd()
    server = SshServer(tmp_path).start()
    yield server
    server.stop()


def start(zk_tls, zk_client, tmp_path, host, kind="ssh", pool_extra="", slots=1) -> LauncherEnv:
    env = LauncherEnv(zk_tls, tmp_path, zk_client)
    with open(env.config_path, "w") as f:
        f.write(nodepool_yaml(zk_tls, ONE_HOST, addr=host.address, sshport=host.port, kind=kind,
                              pool_extra=pool_extra, slots=slots))
    launcher = Launcher(env.config_path, hostname="nl-static")
    launcher.start()
    env.launchers.append(launcher)
    return env


def nodes(env):
    if not env.kazoo.exists("/nodepool/nodes"):
        return []
    found = (env.requestor.node(i) for i in env.kazoo.get_children("/nodepool/nodes"))
    return [n for n in found if n]


def test_network_cli_static_host_is_keyscanned_like_ssh(zk_tls, zk_client, tmp_path, host):
    env = start(zk_tls, zk_client, tmp_path, host, kind="network_cli")
    try:
        wait_for(lambda: [n for n in nodes(env) if n["state"] == "ready"], timeout=20,
                 what="the network_cli host registered")
        (node,) = [n for n in nodes(env) if n["state"] == "ready"]
        assert node["connection_type"] == "network_cli"
        assert sorted(node["host_keys"]) == sorted(host.public_keys)
    finally:
        env.stop()


def test_max_servers_zero_disables_the_static_pool(zk_tls, zk_client, tmp_path, host):
    env = start(zk_tls, zk_client, tmp_path, host, pool_extra="        max-servers: 0")
    try:
        wait_for(lambda: [n for n in nodes(env) if n["state"] == "ready"], timeout=20,
                 what="the host registered (Nodepool registers it too)")
        rq = env.requestor
        rid = rq.submit(["metal"])
        request = rq.wait(rid)
        assert request["state"] == "failed" and request["nodes"] == []
        assert [n["state"] for n in nodes(env)] == ["ready"]   # not handed out
    finally:
        env.stop()


def test_positive_max_servers_does_not_limit_a_static_pool(zk_tls, zk_client, tmp_path, host):
    """Nodepool's static driver ignores max-servers above 0: the slots are the limit."""
    env = start(zk_tls, zk_client, tmp_path, host, pool_extra="        max-servers: 1", slots=2)
    try:
        wait_for(lambda: len([n for n in nodes(env) if n["state"] == "ready"]) == 2,
                 timeout=20, what="both slots registered")
        rq = env.requestor
        rid = rq.submit(["metal", "metal"])
        request = rq.wait(rid)
        assert request["state"] == "fulfilled" and len(request["nodes"]) == 2
    finally:
        env.stop()


# One static pool of the "lab" provider; its hosts follow.
POOL_HEAD = """
zookeeper-servers:
  - host: zk.example.org
labels:
  - name: metal
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
"""

SSH_PORT = POOL_HEAD + """
          - name: old.example.org
            labels: metal
            ssh-port: 2022
          - name: both.example.org
            labels: metal
            ssh-port: 2022
            connection-port: 2222
"""


def test_legacy_ssh_port_is_read_and_connection_port_wins():
    pool = parse_config(SSH_PORT, "static.yaml").providers["lab"].pools["main"]
    ports = {n.name: n.connection_port for n in pool.nodes}
    assert ports == {"old.example.org": 2022, "both.example.org": 2222}


TWO_USERS = POOL_HEAD + """
          - name: shared.example.org
            labels: metal
          - name: shared.example.org
            labels: metal
            username: ops
"""


def test_one_host_with_two_users_is_two_hosts_with_distinct_slot_ids():
    from nodepool.drivers.static import StaticAdapter

    provider = parse_config(TWO_USERS, "static.yaml").providers["lab"]
    ids = [i.metadata["standing"] for i in StaticAdapter(provider).standing_instances()]
    # The default user keeps the id written before the user was part of the key.
    assert ids == ["shared.example.org-0", "ops@shared.example.org-0"]


def test_a_node_under_its_pre_upgrade_id_still_occupies_its_slot():
    from nodepool.drivers.static import StaticAdapter
    from nodepool.model import Node

    ops_only = TWO_USERS.replace("""          - name: shared.example.org
            labels: metal
          - name""", "          - name")
    provider = parse_config(ops_only, "static.yaml").providers["lab"]
    adapter = StaticAdapter(provider)
    assert [i.metadata["standing"] for i in adapter.standing_instances()] == [
        "ops@shared.example.org-0"]
    # Written with the old (name, port) key, the slot's id was shared.example.org-0.
    old = Node(state="in-use", type=["metal"], interface_ip="shared.example.org",
               username="ops", connection_port=22, slot=0,
               driver_data={"standing": "shared.example.org-0"})
    assert adapter.standing_slot(old) == "ops@shared.example.org-0"   # not registered twice
    assert adapter.standing_outdated(old) is not None   # a ready one would be unregistered


def test_provider_keys_a_static_provider_ignores_are_warned_with_their_path(caplog):
    text = SSH_PORT.replace("    driver: static\n",
                            "    driver: static\n    rate: 2\n    boot-timeout: 30\n")
    with caplog.at_level("WARNING", logger="nodepool.config"):
        parse_config(text, "static.yaml")
    lines = [r.getMessage() for r in caplog.records if r.name == "nodepool.config"]
    assert any(line.startswith("providers[0].rate: has no effect") for line in lines), lines
    assert any(line.startswith("providers[0].boot-timeout: has no effect") for line in lines)
    assert not any("launch-timeout" in line for line in lines)


def test_config_validate_prints_the_warnings_and_the_file_stays_valid(capsys, tmp_path):
    from nodepool import cli
    path = tmp_path / "static.yaml"
    path.write_text(SSH_PORT.replace("    driver: static\n", "    driver: static\n    rate: 2\n"))
    code = cli.main(["-c", str(path), "config-validate"])
    out, err = capsys.readouterr()
    assert code == 0 and "configuration is valid" in out
    assert f"{path}: warning: providers[0].rate: has no effect" in err


WINRM = POOL_HEAD + """
          - name: win01.example.org
            labels: metal
            connection-type: winrm
          - name: win02.example.org
            labels: metal
            connection-type: winrm
            connection-port: 5986
"""


def test_winrm_host_without_a_port_gets_22_as_in_nodepool_and_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="nodepool.config"):
        pool = parse_config(WINRM, "static.yaml").providers["lab"].pools["main"]
    assert [n.connection_port for n in pool.nodes] == [22, 5986]
    lines = [r.getMessage() for r in caplog.records if r.name == "nodepool.config"]
    assert lines == ["providers[0].pools[0].nodes[0].connection-type: winrm host without "
                     "connection-port gets port 22, as in Nodepool (whose documentation says "
                     "5986 for winrm); set connection-port"]


def test_a_node_nodepool_registered_occupies_its_slot_and_is_handed_out_as_it_is():
    """Nodepool's static driver writes no slot key (external_id = host name): taking over
    from it, the slot is not registered a second time."""
    from nodepool.drivers.static import StaticAdapter
    from nodepool.model import Node

    adapter = StaticAdapter(parse_config(TWO_USERS, "static.yaml").providers["lab"])
    theirs = Node(state="ready", type=["metal"], external_id="shared.example.org",
                  hostname="shared.example.org", interface_ip="shared.example.org",
                  username="ops", connection_port=22, slot=0, launcher="static driver")
    assert adapter.standing_slot(theirs) == "ops@shared.example.org-0"
    assert adapter.standing_outdated(theirs) is None
