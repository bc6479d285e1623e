"""Drivers as plug-ins: a package of its own adds a driver through the `nodepool.drivers`
entry points; config-validate and a real launcher use it; a broken one names itself."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from requestor import Requestor, wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.drivers.plugins import GROUP, DriverPlugin, discover, installed

SOURCE = Path(__file__).parent / "data" / "plugin_driver"
BUILTIN = ["aws", "openstack", "static"]

# The distributions the test installs: (name, version, top-level package, entry points).
DISTRIBUTIONS = [
    ("np-memdriver", "0.1", "np_memdriver",
     "memory = np_memdriver:PLUGIN\nlazy = np_memdriver:LAZY\n"),
    ("np-broken", "2.0", "np_broken", "broken = np_broken:PLUGIN\n"),
]

CONFIG = ZK_HEADER + """
labels:
  - name: mem-small
  - name: lazy-small
providers:
  - name: mem1
    driver: memory
    rate: 0
    pools:
      - name: main
        max-servers: 4
        labels:
          - name: mem-small
  - name: lazy1
    driver: lazy
    pools:
      - name: main
        labels:
          - name: lazy-small
"""


def install(site: Path) -> Path:
    """The test's packages and their dist-info, as pip leaves them, in `site`."""
    for name, version, package, entry_points in DISTRIBUTIONS:
        shutil.copytree(SOURCE / package, site / package)
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry_points}")
    return site


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return install(tmp_path / "site")


@pytest.fixture
def env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def validate(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    nodepool = Path(sys.executable).parent / "nodepool"   # the console script
    return subprocess.run([str(nodepool), "-c", str(config), "config-validate"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_builtin_drivers_come_from_nodepools_own_entry_points() -> None:
    eps = importlib.metadata.entry_points(group=GROUP)
    ours = sorted(ep.name for ep in eps if ep.dist is not None and ep.dist.name == "nodepool")
    assert set(BUILTIN) <= set(ours)
    assert installed().names() == ours and installed().failures == ()


def test_validating_builtin_configs_imports_no_cloud_sdk() -> None:
    script = ("import sys\n"
              "from nodepool.config import load_config\n"
              "for name in ('nodepool.yaml', 'nodepool-static.yaml'):\n"
              "    load_config('etc/' + name, env={})\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'openstack', 'boto3'}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_third_party_driver_validates_and_a_broken_one_is_named(
        zk_tls: dict, tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "nodepool.yaml"
    config.write_text(nodepool_yaml(zk_tls, CONFIG))
    out = validate(config, env)
    assert out.returncode == 0, out.stderr
    assert "configuration is valid" in out.stdout
    # The broken package does not stop the others, and says who it is.
    assert ("warning: driver entry point 'broken' = np_broken:PLUGIN of distribution "
            "np-broken 2.0: cannot be loaded: ImportError: np_broken needs libbroken, "
            "which is not installed") in out.stderr


def test_unknown_or_broken_driver_fails_with_key_path_name_and_installed_drivers(
        zk_tls: dict, tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "nodepool.yaml"
    config.write_text(nodepool_yaml(zk_tls, CONFIG).replace("driver: lazy", "driver: broken")
                      + "  - name: other\n    driver: kubernetes\n")
    out = validate(config, env)
    assert out.returncode != 0
    listed = "installed drivers: " + ", ".join(sorted([*installed().names(), "lazy", "memory"]))
    assert (f"{config}: providers[1].driver: driver 'broken' failed to load (driver entry "
            f"point 'broken' = np_broken:PLUGIN of distribution np-broken 2.0: cannot be "
            f"loaded: ImportError: np_broken needs libbroken, which is not installed); "
            f"{listed}") in out.stderr
    assert f"{config}: providers[2].driver: unknown driver 'kubernetes'; {listed}" in out.stderr
    assert "Traceback" not in out.stderr


def test_discovery_refuses_a_second_provider_of_a_name_and_what_is_no_plugin(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))
    mem = next(d for d in importlib.metadata.distributions(path=[str(site)])
               if d.metadata["Name"] == "np-memdriver")
    eps = list(mem.entry_points)
    memory = next(ep for ep in eps if ep.name == "memory")
    renamed = importlib.metadata.EntryPoint("other", memory.value, GROUP)
    not_plugin = importlib.metadata.EntryPoint("junk", "np_memdriver:POOL", GROUP)
    found = discover([*eps, memory, renamed, not_plugin])
    try:
        assert found.names() == ["lazy", "memory"]
        assert isinstance(found.get("memory"), DriverPlugin)
        assert [(f.name, f.reason) for f in found.failures] == [
            ("memory", "ignored: distribution np-memdriver 0.1 already provides driver "
                       "'memory'"),
            ("other", "gives a driver named 'memory'; the entry point's name must be the same"),
            ("junk", "is a function, not a nodepool.drivers.plugins.DriverPlugin")]
    finally:
        for name in [m for m in sys.modules if m.startswith("np_memdriver")]:
            monkeypatch.delitem(sys.modules, name)


def test_a_third_party_package_runs_the_contract_suite_on_its_driver(
        site: Path, env: dict[str, str], tmp_path: Path) -> None:
    tests = shutil.copytree(SOURCE / "tests", tmp_path / "np_memdriver_tests")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")   # its own project, not this one
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                          str(tests)], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary


class Daemon:
    """`nodepool-launcher -f` with the test's packages on its path; stopped by pid."""

    def __init__(self, config: Path, env: dict[str, str], log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodepool.launcher.main", "-f", "--no-webapp",
             "-c", str(config)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def launcher(zk_tls: dict, tmp_path: Path, env: dict[str, str]) -> Iterator[Daemon]:
    config = tmp_path / "nodepool.yaml"
    config.write_text(nodepool_yaml(zk_tls, CONFIG))
    daemon = Daemon(config, env, tmp_path / "launcher.log")
    yield daemon
    daemon.stop()


def test_launcher_fulfils_a_request_with_a_third_party_driver(
        launcher: Daemon, zk_client: Any) -> None:
    rq = Requestor(zk_client)
    rid = rq.submit(["mem-small"])
    req = rq.wait(rid, timeout=40)
    assert req["state"] == "fulfilled", launcher.text()
    node_id, = rq.accept(rid, req)
    node = rq.node(node_id)
    assert (node["provider"], node["pool"], node["type"]) == ("mem1", "main", ["mem-small"])
    assert node["interface_ip"] and node["host_keys"] == []
    # The provider whose driver's SDK is missing is not served; the log says why.
    wait_for(lambda: "provider=lazy1 Cannot build its adapter" in launcher.text(),
             timeout=20, what="the lazy provider's adapter failure in the log")
    assert "No module named 'no_such_cloud_sdk'" in launcher.text()
    rq.finish([node_id])
    wait_for(lambda: rq.node(node_id) is None, timeout=20, what="used node deleted")
