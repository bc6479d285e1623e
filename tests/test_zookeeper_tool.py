"""Tests of tools/zookeeper.py and of the ZooKeeper fixtures, against real servers."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zookeeper  # tools/zookeeper.py: conftest.py puts tools/ on sys.path
from kazoo.client import KazooClient

TOOL = Path(__file__).resolve().parent.parent / "tools" / "zookeeper.py"


def started(client: KazooClient) -> KazooClient:
    client.start(timeout=10)
    return client


@pytest.fixture
def root_client(zk_server: zookeeper.ZooKeeperServer) -> Iterator[KazooClient]:
    """A plain-port client at the real root, to look at the tree from outside the chroots."""
    client = started(KazooClient(hosts=zk_server.plain_hosts))
    yield client
    client.stop()
    client.close()


@pytest.fixture(scope="module")
def chroots_seen(_zk_admin: KazooClient) -> Iterator[list[str]]:
    """Chroots that tests here used; by the end of the module the fixture must have deleted them all."""
    seen: list[str] = []
    yield seen
    assert [path for path in seen if _zk_admin.exists(path)] == []


def zookeeper_pids(config: Path) -> list[int]:
    """Pids of live ZooKeeper processes started with this zoo.cfg."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in argv and zookeeper.pid_alive(int(proc.name)):
            pids.append(int(proc.name))
    return pids


def test_plain_and_tls_ports_serve_the_same_data(
        zk_server: zookeeper.ZooKeeperServer, zk_client: KazooClient, zk_chroot: str) -> None:
    zk_client.create("/shared", b"written over TLS")
    plain = started(KazooClient(hosts=zk_server.plain_hosts + zk_chroot))
    try:
        assert plain.get("/shared")[0] == b"written over TLS"
        plain.set("/shared", b"written in plain")
    finally:
        plain.stop()
        plain.close()
    zk_client.sync("/shared")
    assert zk_client.get("/shared")[0] == b"written in plain"


def test_chroot_is_a_fresh_znode_named_after_the_test(
        zk_chroot: str, zk_client: KazooClient, root_client: KazooClient, _zk_admin: KazooClient,
        chroots_seen: list[str]) -> None:
    chroots_seen.append(zk_chroot)
    assert re.fullmatch(r"/test-test_chroot_is_a_fresh_znode_named_after_the_test-[0-9a-f]{8}", zk_chroot)
    assert root_client.get_children(zk_chroot) == []
    zk_client.create("/a/b", b"x", makepath=True)
    zk_client.create("/a/ephemeral", ephemeral=True)
    # the session-long admin client outlives the test: teardown must delete its ephemeral node
    _zk_admin.create(f"{zk_chroot}/a/from-another-session", ephemeral=True)
    assert root_client.get(f"{zk_chroot}/a/b")[0] == b"x"
    assert not root_client.exists("/a")


def test_chroots_isolate_clients(
        zk_tls: dict[str, Any], zk_client: KazooClient, root_client: KazooClient) -> None:
    neighbour_root = f"{zk_tls['chroot']}-neighbour"
    root_client.create(neighbour_root)
    neighbour = KazooClient(hosts=zk_tls["hosts"] + neighbour_root, use_ssl=True,
                            certfile=zk_tls["cert"], keyfile=zk_tls["key"], ca=zk_tls["ca"])
    try:
        started(neighbour)
        zk_client.create("/node", b"mine")
        assert neighbour.exists("/node") is None
        neighbour.create("/node", b"theirs")
        assert zk_client.get("/node")[0] == b"mine"
        assert root_client.get(f"{neighbour_root}/node")[0] == b"theirs"
    finally:
        neighbour.stop()
        neighbour.close()
        root_client.delete(neighbour_root, recursive=True)


def test_cli_start_status_stop_leaves_no_process(tmp_path: Path) -> None:
    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(TOOL), *args, "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    start = tool("start", "--tls-port", "0")
    assert start.returncode == 0, start.stderr
    info = json.loads(start.stdout)
    try:
        assert info == json.loads((tmp_path / "zk.json").read_text())
        assert zookeeper.pid_alive(info["pid"])
        assert tool("status").returncode == 0
        client = started(KazooClient(hosts=info["tls_hosts"], use_ssl=True,
                                     certfile=info["cert"], keyfile=info["key"], ca=info["ca"]))
        client.create("/hello", b"world")
        client.stop()
        client.close()
        assert "Mode: standalone" in zookeeper.four_letter(info["port"])

        stop = tool("stop")
        assert stop.returncode == 0, stop.stderr
        assert not zookeeper.pid_alive(info["pid"])
        assert zookeeper_pids(tmp_path / "zoo.cfg") == []
        assert tool("status").returncode == 3
        for port in (info["port"], info["tls_port"]):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if zookeeper.pid_alive(info["pid"]):
            zookeeper.stop_pid(info["pid"])


def test_start_on_a_port_in_use_fails_clearly_and_leaves_no_process(
        zk_server: zookeeper.ZooKeeperServer, tmp_path: Path) -> None:
    server = zookeeper.ZooKeeperServer(tmp_path, port=zk_server.port)
    with pytest.raises(zookeeper.PortTakenError, match=f"127.0.0.1:{zk_server.port} is already in use"):
        server.start()
    assert server.pid is None
    assert zookeeper_pids(tmp_path / "zoo.cfg") == []


def test_server_that_cannot_bind_exits_and_the_error_shows_its_log(
        zk_server: zookeeper.ZooKeeperServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Skip the tool's own check so that the JVM itself meets the taken TLS port.
    monkeypatch.setattr(zookeeper, "_port_in_use", lambda port: False)
    server = zookeeper.ZooKeeperServer(tmp_path, port=0, tls_port=zk_server.tls_port)
    with pytest.raises(zookeeper.PortTakenError) as caught:
        server.start()
    assert "Address already in use" in str(caught.value)  # from the server's log
    assert str(tmp_path / "zookeeper.log") in str(caught.value)
    assert server.pid is None
    assert zookeeper_pids(tmp_path / "zoo.cfg") == []


# The ensemble (tools/zkensemble.py) through the zk_ensemble and ensemble_tls fixtures
# (tests/plugins/ensemble.py): between tests the plugin restarts whatever a test killed.

def tls_client(hosts: str, tls: dict[str, Any], timeout: float = 4.0) -> KazooClient:
    return started(KazooClient(hosts=hosts + tls["chroot"], timeout=timeout, use_ssl=True,
                               certfile=tls["cert"], keyfile=tls["key"], ca=tls["ca"]))


def closed(*clients: KazooClient) -> None:
    for client in clients:
        client.stop()
        client.close()


def test_ensemble_members_serve_the_same_data_over_plain_and_tls(
        zk_ensemble: Any, ensemble_tls: dict[str, Any]) -> None:
    assert len(ensemble_tls["hosts"].split(",")) == 3
    assert ensemble_tls["hosts"] == ",".join(f"127.0.0.1:{m.tls_port}" for m in zk_ensemble.members)
    ports = [p for m in zk_ensemble.members
             for p in (m.port, m.tls_port, m.quorum_port, m.election_port)]
    assert len(set(ports)) == 12
    writer = started(KazooClient(hosts=zk_ensemble.members[0].plain_hosts + ensemble_tls["chroot"]))
    readers = [tls_client(m.tls_hosts, ensemble_tls) for m in zk_ensemble.members]
    try:
        writer.create("/shared", b"written on server 1")
        for reader in readers:
            reader.sync("/shared")
            assert reader.get("/shared")[0] == b"written on server 1"
    finally:
        closed(writer, *readers)
    leader = zk_ensemble.leader()
    modes = [zookeeper.four_letter(m.port) for m in zk_ensemble.members]
    assert "Mode: leader" in modes[leader]
    assert all("Mode: follower" in mode for i, mode in enumerate(modes) if i != leader)


def test_killed_leader_is_replaced_the_session_survives_and_it_comes_back(
        zk_ensemble: Any, ensemble_tls: dict[str, Any]) -> None:
    client = tls_client(ensemble_tls["hosts"], ensemble_tls, timeout=4.0)  # a 4 s session
    try:
        client.create("/before", b"1")
        session = client.client_id
        old = zk_ensemble.leader()
        killed_pid = zk_ensemble.members[old].pid
        zk_ensemble.kill(old)
        assert not zookeeper.pid_alive(killed_pid) and zk_ensemble.members[old].pid is None
        new = zk_ensemble.leader(timeout=10)
        assert new != old
        client.retry(client.create, "/after", b"2")
        assert client.client_id == session  # the same session, on another server
        zk_ensemble.start_member(old)
        assert zk_ensemble.members[old].mode() == "follower"
        back = started(KazooClient(hosts=zk_ensemble.members[old].plain_hosts + ensemble_tls["chroot"]))
        try:
            back.sync("/after")
            assert (back.get("/before")[0], back.get("/after")[0]) == (b"1", b"2")
        finally:
            closed(back)
    finally:
        closed(client)


def test_paused_follower_does_not_stop_writes_and_serves_after_resume(
        zk_ensemble: Any, ensemble_tls: dict[str, Any]) -> None:
    follower = (zk_ensemble.leader() + 1) % 3
    client = tls_client(zk_ensemble.members[(follower + 1) % 3].tls_hosts, ensemble_tls)
    try:
        zk_ensemble.pause(follower)
        client.create("/while-paused", b"x")  # the other two are a quorum
        zk_ensemble.resume(follower)
        assert zk_ensemble.members[follower].mode() in ("leader", "follower")
    finally:
        closed(client)


def test_cli_ensemble_start_prints_hosts_and_stop_leaves_no_process(tmp_path: Path) -> None:
    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(TOOL), "ensemble", *args, "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    start = tool("start", "--no-tls")
    assert start.returncode == 0, start.stderr
    info = json.loads(start.stdout)
    try:
        assert info == json.loads((tmp_path / "ensemble.json").read_text())
        assert info["tls_hosts"] is None and info["certs"] == {"ca": None, "cert": None, "key": None}
        ports = [m["port"] for m in info["members"]]
        assert info["hosts"] == ",".join(f"127.0.0.1:{p}" for p in ports)
        assert sorted(zookeeper.four_letter(p).split("Mode: ")[1].split()[0] for p in ports) == \
            ["follower", "follower", "leader"]
        client = started(KazooClient(hosts=info["hosts"]))
        client.create("/hello", b"world")
        closed(client)
        assert tool("status").returncode == 0

        stop = tool("stop")
        assert stop.returncode == 0, stop.stderr
        assert not any(zookeeper.pid_alive(pid) for pid in info["pids"])
        assert [pid for m in info["members"] for pid in zookeeper_pids(Path(m["config"]))] == []
        assert tool("status").returncode == 3
    finally:
        for pid in info["pids"]:
            if zookeeper.pid_alive(pid):
                zookeeper.stop_pid(pid)
