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
