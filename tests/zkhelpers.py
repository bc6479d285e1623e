"""Helpers for tests that use the project's ZooKeeper client or expire sessions."""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError, NotEmptyError

from nodepool.zk.client import TLSFiles, ZooKeeperClient


def make_client(zk_tls: dict, chroot: str | None = None) -> ZooKeeperClient:
    """A connected nodepool ZooKeeperClient on the test's TLS server and chroot."""
    tls = TLSFiles(cert=zk_tls["cert"], key=zk_tls["key"], ca=zk_tls["ca"])
    client = ZooKeeperClient(zk_tls["hosts"], chroot=chroot or zk_tls["chroot"], tls=tls,
                             timeout=10.0)
    client.connect()
    return client


def expire_session(zk_tls: dict, kazoo: KazooClient) -> None:
    """Expire a session for real: a second client joins it with its id and password, then closes."""
    session_id, password = kazoo.client_id
    twin = KazooClient(hosts=zk_tls["hosts"], use_ssl=True, certfile=zk_tls["cert"],
                       keyfile=zk_tls["key"], ca=zk_tls["ca"], client_id=(session_id, password))
    twin.start(timeout=10)
    twin.stop()
    twin.close()


CONNECT_TIMEOUT = 10.0
CLEANUP_TIMEOUT = 10.0


@contextlib.contextmanager
def started_client(hosts: str, **kwargs) -> Iterator[KazooClient]:
    """A started KazooClient, stopped and closed afterwards."""
    client = KazooClient(hosts=hosts, **kwargs)
    client.start(timeout=CONNECT_TIMEOUT)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def chroot_for(request: pytest.FixtureRequest) -> str:
    """A fresh znode path like /test-<test name>-<8 hex> for the test's own chroot."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80].strip("_.") or "test"
    return f"/test-{name}-{secrets.token_hex(4)}"


def delete_tree(client: KazooClient, path: str, timeout: float = CLEANUP_TIMEOUT) -> None:
    """Delete path and everything under it; a path that is already gone is success.

    Retries while something (a thread the test left running) keeps adding children.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.retry(client.delete, path, recursive=True)
            return
        except NoNodeError:
            return
        except NotEmptyError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not delete {path}: nodes keep being created under it "
                                   "(does the test leave a thread or client running?)") from None


# The ZooKeeper part of every test nodepool.yaml; templates append their own keys.
ZK_HEADER = """
zookeeper-servers:
  - host: {host}
    port: {port}
    chroot: {chroot}
zookeeper-tls:
  cert: {cert}
  key: {key}
  ca: {ca}
"""


def nodepool_yaml(zk_tls: dict, template: str, port: int | str | None = None, **fields) -> str:
    """`template` (which starts with ZK_HEADER) filled for the test's TLS server and chroot."""
    host, tls_port = zk_tls["hosts"].split(",")[0].rsplit(":", 1)
    return template.format(host=host, port=port or tls_port, chroot=zk_tls["chroot"],
                           cert=zk_tls["cert"], key=zk_tls["key"], ca=zk_tls["ca"], **fields)
