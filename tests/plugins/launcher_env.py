"""A launcher on the in-memory fake cloud, a real ZooKeeper chroot, and a requestor."""

from __future__ import annotations

import textwrap

import pytest
from kazoo.client import KazooClient
from requestor import Requestor, wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.launcher.daemon import Launcher
from nodepool.launcher.spread import ProviderFilter
from nodepool.testing.fake_adapter import FakeAdapter, FakeCloud

BASE = ZK_HEADER + """
zookeeper-timeout: 10
labels:
  - name: small
    min-ready: {min_ready}
  - name: large
    min-ready: 0
  - name: other
providers:
  - name: fake1
    cloud: fake
    rate: 0
    boot-timeout: 10
    launch-timeout: {launch_timeout}
    launch-retries: {retries}
    cloud-images:
      - name: img
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        node-attributes:
          executor-zone: z1
        labels:
          - name: small
            cloud-image: img
            flavor-name: small
          - name: large
            cloud-image: img
            flavor-name: large
"""


def passes_go_by(launcher: Launcher, provider: str, count: int = 2, timeout: float = 15.0) -> None:
    """Return once `count` more loop passes of the launcher's worker for `provider` have ended.

    For "nothing happened": what the cache knew when this was called, at least one whole
    pass (one that began after the call) has acted on. The worker is woken each poll, so an
    idle worker passes too. Waits for the worker to exist first.
    """
    worker = wait_for(lambda: launcher.workers.get(provider), timeout=timeout,
                      what=f"{launcher.hostname} runs {provider}")
    target = worker.passes + count

    def passed() -> bool:
        worker.wake()
        return worker.passes >= target
    wait_for(passed, timeout=timeout, what=f"{count} more passes of {provider} on {launcher.hostname}")


def cache_has_request(launcher: Launcher, request_id: str) -> None:
    """Wait until the launcher's cache (what its workers act on) holds the request."""
    wait_for(lambda: launcher.ctx.cache.get_request(request_id) is not None,
             what=f"request {request_id} in {launcher.hostname}'s cache")


class LauncherEnv:
    """Writes a config, builds launchers on one shared FakeCloud, cleans up after."""

    def __init__(self, zk_tls: dict, tmp_path, kazoo: KazooClient):
        self.zk_tls = zk_tls
        self.tmp_path = tmp_path
        self.kazoo = kazoo
        self.cloud = FakeCloud()
        self.launchers: list[Launcher] = []
        self.config_path = str(tmp_path / "nodepool.yaml")
        self.requestor = Requestor(kazoo)

    def write_config(self, min_ready: int = 0, max_servers: int = 10, retries: int = 3,
                     launch_timeout: int = 60, extra: str = "", web: bool = False) -> str:
        text = nodepool_yaml(self.zk_tls, BASE, min_ready=min_ready, max_servers=max_servers,
                             retries=retries, launch_timeout=launch_timeout)
        if web:   # an ephemeral port on loopback: launcher.web.port says which
            text += "webapp:\n  listen_address: 127.0.0.1\n  port: 0\n"
        with open(self.config_path, "w") as f:
            f.write(text + textwrap.dedent(extra))
        return self.config_path

    def start_launcher(self, hostname: str = "nl01", webapp: bool = False,
                       serves: ProviderFilter = ProviderFilter(), **kwargs) -> Launcher:
        """`webapp=True` serves the web endpoints (write_config(web=True) binds port 0);
        `serves`: the providers it may own (--providers, --exclude-providers)."""
        launcher = Launcher(self.config_path, hostname=hostname, webapp=webapp, serves=serves,
                            adapter_factory=lambda provider: FakeAdapter(provider, self.cloud),
                            **kwargs)
        launcher.start()
        self.launchers.append(launcher)
        return launcher

    def stop(self) -> None:
        for launcher in self.launchers:
            launcher.stop()


@pytest.fixture
def env(zk_tls, zk_client, tmp_path):
    e = LauncherEnv(zk_tls, tmp_path, zk_client)
    yield e
    e.stop()
