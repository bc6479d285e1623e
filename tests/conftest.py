"""Shared fixtures: one real ZooKeeper (plain and TLS) per test session, a chroot and TLS client per test."""

from __future__ import annotations

import atexit
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# The contract suite lives in the package (drivers elsewhere run it): rewrite its asserts.
pytest.register_assert_rewrite("nodepool.testing.adapter_contract",
                               "nodepool.testing.contract_harness")

from kazoo.client import KazooClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import zookeeper  # noqa: E402  (tools/ is not a package; it must run before the venv exists)
from zkhelpers import chroot_for, delete_tree, started_client  # noqa: E402

# Fixtures shared by several test modules live in plugins, never in a test module that others import:
# the OpenStack simulator rig (sim, conn, ctl, images, providers, make_adapter) and the launcher on
# the fake cloud (env).
# tests/data holds files tests use, among them another project's tests (a driver package's).
collect_ignore = ["data"]

pytest_plugins = ["pytester", "plugins.errorwatch", "plugins.ossim", "plugins.launcher_env", "plugins.ensemble",
                  "plugins.motoaws", "imagewatch"]


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zookeeper.ZooKeeperServer]:
    """A started ZooKeeper with a plain and a TLS port on 127.0.0.1, for the whole session.

    Its data, certificates and zookeeper.log stay in pytest's basetemp (the last 3 runs are kept).
    """
    server = zookeeper.ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"), port=0, tls_port=0)
    atexit.register(server.stop)  # if the session ends without running its teardown
    try:
        server.start()
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)


@pytest.fixture(scope="session")
def _zk_admin(zk_server: zookeeper.ZooKeeperServer) -> Iterator[KazooClient]:
    """A client at the real root (plain port) that creates and deletes the per-test chroots."""
    with started_client(zk_server.plain_hosts) as client:
        yield client


@pytest.fixture
def zk_chroot(request: pytest.FixtureRequest, _zk_admin: KazooClient) -> Iterator[str]:
    """A fresh znode path like /test-<test name>-<8 hex>, created before and deleted after the test."""
    path = chroot_for(request)
    _zk_admin.create(path)
    yield path
    delete_tree(_zk_admin, path)


@pytest.fixture
def zk_client(zk_server: zookeeper.ZooKeeperServer, zk_chroot: str) -> Iterator[KazooClient]:
    """A started KazooClient on the TLS port, rooted at zk_chroot; stopped and closed after the test."""
    with started_client(zk_server.tls_hosts + zk_chroot, use_ssl=True, verify_certs=True,
                        certfile=zk_server.cert, keyfile=zk_server.key, ca=zk_server.ca) as client:
        yield client


@pytest.fixture
def zk_tls(zk_server: zookeeper.ZooKeeperServer, zk_chroot: str) -> dict[str, Any]:
    """What code that builds its own client needs: TLS hosts, the test's chroot, cert, key, CA."""
    return {"hosts": zk_server.tls_hosts, "chroot": zk_chroot,
            "cert": zk_server.cert, "key": zk_server.key, "ca": zk_server.ca}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a test fails and the session's ZooKeeper has died, show the end of its log."""
    report = yield
    server = getattr(item, "funcargs", {}).get("zk_server")
    if report.failed and isinstance(server, zookeeper.ZooKeeperServer) and server.pid is not None \
            and not zookeeper.pid_alive(server.pid):
        report.sections.append(("ZooKeeper died", f"pid {server.pid} is gone; end of "
                                f"{server.log_path}:\n{server.log_tail(40)}"))
    return report


@pytest.fixture
def zk(zk_tls: dict[str, Any]) -> Iterator[Any]:
    """The project's own ZooKeeperClient, connected over TLS to the test's chroot."""
    from zkhelpers import make_client
    client = make_client(zk_tls)
    try:
        yield client
    finally:
        client.disconnect()
