"""SIGKILL of a launcher process mid-launch: the next launcher finishes the work, leaking nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from plugins.ossim import LAUNCHER_CONFIG
from requestor import Requestor, wait_for
from zkhelpers import nodepool_yaml

from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]


@pytest.fixture
def config(zk_tls: dict, tmp_path: Any) -> str:
    path = tmp_path / "nodepool.yaml"
    # A short session timeout: a killed launcher's locks and lease go within ~2 s.
    path.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG) + "zookeeper-timeout: 2\n")
    return str(path)


@pytest.fixture
def killed_launcher(config: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-m", "nodepool.launcher.main", "-f", "--no-webapp", "-c", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_sigkill_mid_launch_leaves_nothing_the_next_launcher_cannot_finish(
        config: str, killed_launcher: subprocess.Popen, zk_client: Any, ctl: Any) -> None:
    ctl.set_timings(boot_delay=1.5)
    rq = Requestor(zk_client)
    rid = rq.submit(["small"])

    def building_with_server():
        if not zk_client.exists("/nodepool/nodes"):
            return None
        for nid in zk_client.get_children("/nodepool/nodes"):
            node = rq.node(nid)
            if node and node["state"] == "building" and node["external_id"]:
                return nid, node
        return None

    node_id, node = wait_for(building_with_server, timeout=30, what="server being built")
    killed_launcher.send_signal(signal.SIGKILL)
    killed_launcher.wait(timeout=10)
    assert rq.get(rid)["state"] == "pending"     # left behind by the dead launcher

    successor = Launcher(config, hostname="nl-successor")
    successor.start()
    try:
        req = rq.wait(rid, timeout=40)
        assert req["state"] == "fulfilled"
        # The server the dead launcher started was resumed and handed over: no second one.
        assert [s["id"] for s in ctl.servers()] == [node["external_id"]]
        assert req["nodes"] == [node_id]
        assert rq.node(node_id)["external_id"] == node["external_id"]
        rq.finish(rq.accept(rid, req))
        wait_for(lambda: ctl.servers() == [], timeout=20, what="server deleted after use")
    finally:
        successor.stop()
