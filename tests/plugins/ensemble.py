"""A real 3-server ZooKeeper ensemble for tests that lose servers (a pytest plugin; conftest names it).

Fixtures:

* `zk_ensemble` (session): a started `ZooKeeperEnsemble` (tools/zkensemble.py) with TLS, started by
  the first test that asks for it and stopped at the end of the session. A test may kill, restart,
  pause and resume members: before the test's own fixtures are torn down (and so before the next
  test), paused members are resumed, killed ones started again and all three must serve.
* `ensemble_tls` (test): `{"hosts", "chroot", "cert", "key", "ca"}` shaped like conftest's `zk_tls`,
  hosts listing all three TLS ports; the chroot is created for the test and deleted after it.
"""

from __future__ import annotations

import atexit
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from zkensemble import ZooKeeperEnsemble  # tools/: tests/conftest.py puts it on sys.path
from zkhelpers import chroot_for, delete_tree, started_client


@pytest.fixture(scope="session")
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    """Three ZooKeeper servers on 127.0.0.1 with plain and TLS ports, for the whole session.

    Members' data, zoo.cfg and zookeeper.log are in pytest's basetemp (zk-ensemble0/serverN/).
    """
    ensemble = ZooKeeperEnsemble(tmp_path_factory.mktemp("zk-ensemble"), size=3, tls=True)
    atexit.register(ensemble.stop)  # if the session ends without running its teardown
    try:
        yield ensemble.start()
    finally:
        ensemble.stop()
        atexit.unregister(ensemble.stop)


@pytest.fixture(scope="session")
def _ensemble_admin(zk_ensemble: ZooKeeperEnsemble) -> Iterator[KazooClient]:
    """A client at the real root (plain ports) that creates and deletes the per-test chroots."""
    with started_client(zk_ensemble.plain_hosts) as client:
        yield client


@pytest.fixture
def ensemble_tls(request: pytest.FixtureRequest, zk_ensemble: ZooKeeperEnsemble,
                 _ensemble_admin: KazooClient) -> Iterator[dict[str, Any]]:
    """TLS hosts of all three members, a fresh chroot (deleted after the test), cert, key and CA."""
    chroot = chroot_for(request)
    _ensemble_admin.retry(_ensemble_admin.create, chroot)
    yield {"hosts": zk_ensemble.tls_hosts, "chroot": chroot, **zk_ensemble.certs}
    zk_ensemble.restore()  # a quorum first: deleting needs one
    delete_tree(_ensemble_admin, chroot)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """Before any fixture of the test is torn down, bring back what it killed or paused."""
    ensemble = getattr(item, "funcargs", {}).get("zk_ensemble")
    failed: Exception | None = None
    try:
        if isinstance(ensemble, ZooKeeperEnsemble) and any(ensemble.pids):
            ensemble.restore()
    except Exception as exc:  # the fixtures are still torn down; then the test errors with this
        failed = exc
    result = yield
    if failed is not None:
        raise failed
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a test using the ensemble fails, show each member's state and the end of its log."""
    report = yield
    ensemble = getattr(item, "funcargs", {}).get("zk_ensemble")
    if report.failed and call.when == "call" and isinstance(ensemble, ZooKeeperEnsemble):
        text = "\n".join(f"server.{m.myid} pid {m.pid} {m.plain_hosts}: Mode {m.mode()}; end of "
                         f"{m.log_path}:\n{m.log_tail(10)}" for m in ensemble.members)
        report.sections.append(("ZooKeeper ensemble", text))
    return report
