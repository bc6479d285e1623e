"""Static nodes as Nodepool records them (issue 16): external_id is the host name, the
slot key lives in driver_data; nodes of the old form are registered again, a launcher
restart mid-registration registers a slot once, winrm hosts get a port check.
Real sshd (or a real TCP listener), real ZooKeeper, the real launcher."""

import dataclasses
import json
import socket

import pytest
from kazoo.recipe.lock import Lock
from plugins.launcher_env import LauncherEnv, passes_go_by
from requestor import wait_for
from sshd import SshServer, ensure_sshd, free_port, next_address
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool import cli
from nodepool.launcher.daemon import Launcher
from nodepool.launcher.tuning import DEFAULT

ONE_HOST = ZK_HEADER + """
labels:
  - name: metal
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
          - name: {addr}
            labels: metal
            connection-port: {hostport}
            connection-type: {kind}
            host-key-checking: {checking}
            timeout: {timeout}
            max-parallel-jobs: {slots}
"""

# A host that did not answer is tried again soon: the tests wait for facts, not 10 s.
FAST = dataclasses.replace(DEFAULT, standing_retry=0.5)


def start(env: LauncherEnv, addr, port, kind="ssh", checking="true", timeout=2, slots=1,
          hostname="nl-static") -> Launcher:
    with open(env.config_path, "w") as f:
        f.write(nodepool_yaml(env.zk_tls, ONE_HOST, addr=addr, hostport=port, kind=kind,
                              checking=checking, timeout=timeout, slots=slots))
    launcher = Launcher(env.config_path, hostname=hostname, tuning=FAST)
    launcher.start()
    env.launchers.append(launcher)
    return launcher


def nodes(env) -> list[dict]:
    if not env.kazoo.exists("/nodepool/nodes"):
        return []
    found = ((i, env.requestor.node(i)) for i in env.kazoo.get_children("/nodepool/nodes"))
    return [dict(n, id=i) for i, n in found if n]


def ready(env) -> list[dict]:
    return [n for n in nodes(env) if n["state"] == "ready"]


@pytest.fixture
def host(tmp_path):
    ensure_sshd()
    server = SshServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def env(zk_tls, zk_client, tmp_path):
    environment = LauncherEnv(zk_tls, tmp_path, zk_client)
    yield environment
    environment.stop()


def test_external_id_is_the_host_name_and_nodepool_list_shows_it(env, host, capsys):
    host.start()
    start(env, host.address, host.port, slots=2)
    wait_for(lambda: len(ready(env)) == 2, timeout=20, what="both slots registered")
    slots = sorted(ready(env), key=lambda n: n["slot"])
    assert [n["external_id"] for n in slots] == [host.address, host.address]
    assert [n["driver_data"]["standing"] for n in slots] == [
        f"{host.address}:{host.port}-0", f"{host.address}:{host.port}-1"]
    assert cli.main(["-c", env.config_path, "list", "--fields", "id,server_id,state"]) == 0
    out = capsys.readouterr().out
    for node in slots:
        row = next(line for line in out.splitlines() if node["id"] in line)
        assert host.address in row and f"-{node['slot']}" not in row, out


def old_form(host, slot: int, state: str) -> dict:
    """A node as this project wrote it before: external_id = the slot key."""
    key = f"{host.address}:{host.port}-{slot}"
    return {"state": state, "state_time": 1.0, "created_time": 1.0, "type": ["metal"],
            "provider": "lab", "pool": "main", "launcher": "old", "allocated_to": None,
            "interface_ip": host.address, "public_ipv4": host.address,
            "hostname": host.address, "external_id": key, "username": "zuul",
            "connection_port": host.port, "connection_type": "ssh", "python_path": "auto",
            "host_keys": [], "slot": slot, "driver_data": {"standing": key}}


def test_nodes_written_with_the_slot_key_as_external_id_are_registered_again(env, host):
    host.start()
    kazoo = env.kazoo

    def write(data: dict) -> str:
        path = kazoo.create("/nodepool/nodes/", json.dumps(data).encode(), sequence=True,
                            makepath=True)
        return path.rsplit("/", 1)[1]
    idle = write(old_form(host, 0, "ready"))
    busy = write(old_form(host, 1, "in-use"))
    job = Lock(kazoo, f"/nodepool/nodes/{busy}/lock")   # its user holds it
    assert job.acquire(timeout=10)
    launcher = start(env, host.address, host.port, slots=2)

    def slot(n: int) -> list[dict]:
        return [x for x in nodes(env) if x["slot"] == n]
    wait_for(lambda: [x["id"] for x in slot(0) if x["state"] == "ready"] not in ([], [idle]),
             timeout=20, what="slot 0 registered again")
    (new,) = slot(0)
    assert new["external_id"] == host.address and new["id"] != idle
    # The node in use keeps its slot: it is not registered twice while the job runs.
    passes_go_by(launcher, "lab")
    assert [x["id"] for x in slot(1)] == [busy]
    env.requestor.set_node(busy, state="used")
    job.release()
    wait_for(lambda: [x for x in slot(1) if x["state"] == "ready"], timeout=20,
             what="slot 1 registered once its old node was returned")
    (again,) = slot(1)
    assert again["id"] != busy and again["external_id"] == host.address
    assert again["driver_data"]["standing"] == f"{host.address}:{host.port}-1"


def test_launcher_stopped_mid_registration_leaves_nothing_and_registers_the_slot_once(
        env, host):
    """The host does not answer yet. Nothing is written while its check is under way,
    so a launcher stopped then leaves no record. A `building` record of the slot (as
    launchers before this one wrote during the scan) is deleted by the next launcher
    (a static launch is not resumed), which registers the slot once."""
    first = start(env, host.address, host.port, timeout=60)
    worker = wait_for(lambda: first.workers.get("lab"), timeout=20, what="provider started")
    wait_for(lambda: worker.supply.registrations.under_way, timeout=20,
             what="the slot's check under way")
    passes_go_by(first, "lab")
    assert nodes(env) == []
    first.stop()
    env.launchers.remove(first)
    assert nodes(env) == []
    orphan = dict(old_form(host, 0, "building"), external_id=host.address)
    path = env.kazoo.create("/nodepool/nodes/", json.dumps(orphan).encode(), sequence=True)
    orphan_id = path.rsplit("/", 1)[1]
    host.start()
    second = start(env, host.address, host.port, timeout=60, hostname="nl-static-2")
    wait_for(lambda: ready(env) and env.requestor.node(orphan_id) is None, timeout=30,
             what="the orphan deleted and the slot registered by the next launcher")
    passes_go_by(second, "lab")
    (node,) = nodes(env)
    assert node["id"] != orphan_id and node["state"] == "ready"
    assert node["driver_data"] == {"standing": f"{host.address}:{host.port}-0"}
    assert node["external_id"] == host.address


@pytest.fixture
def listener():
    """A real TCP port on loopback (as a winrm service's): listening only once asked."""
    address = next_address()
    port = free_port(address)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    yield address, port, sock
    sock.close()


def test_winrm_host_is_registered_once_its_port_accepts_without_host_keys(env, listener,
                                                                          caplog):
    address, port, sock = listener
    # host-key-checking off does not skip the port check (Nodepool's checkHost).
    start(env, address, port, kind="winrm", checking="false", timeout=1)
    with caplog.at_level("WARNING", logger="nodepool"):
        wait_for(lambda: any("unreachable" in r.getMessage() for r in caplog.records),
                 timeout=20, what="the closed port reported")
    assert ready(env) == []
    sock.listen(16)
    (node,) = wait_for(lambda: ready(env), timeout=20, what="the winrm host registered")
    assert (node["connection_type"], node["connection_port"]) == ("winrm", port)
    assert node["host_keys"] == [] and node["external_id"] == address
