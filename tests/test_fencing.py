"""Fencing: a launcher paused past its session timeout makes no cloud call once its lease is gone.

The owner runs as a real process on the OpenStack simulator (its own cloud
user, so the simulator's request log tells its calls apart), with launches
under way and used nodes to delete. It is stopped with SIGSTOP until its
ZooKeeper session has expired and a second launcher has taken the provider
over, then continued. The simulator's record shows no call of the old owner
after the moment its lease znode went away. A second test shows the
ZooKeeper half: a node write under a lock whose session expired fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ossim import Simulator, Timings
from plugins.ossim import CLOUD, LAUNCHER_CONFIG
from requestor import Requestor, wait_for
from zkhelpers import expire_session, make_client, nodepool_yaml

from nodepool.launcher.daemon import Launcher
from nodepool.launcher.effects import ZkEffects
from nodepool.launcher.tasks import DeleteTask
from nodepool.model import Node, NodeState
from nodepool.zk import cache as zkcache
from nodepool.zk import locks, nodes

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

LEASE = "/nodepool/launcher/provider-lease/sim-cloud"
SESSION_TIMEOUT = 2   # zookeeper-timeout: the paused owner's session expires after ~2 s


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """A simulator of its own: slow boots (launches stay under way across the pause) and a
    cloud user per launcher."""
    timings = Timings(boot_delay=1.5, delete_delay=0.05)
    with Simulator(timings=timings, extra_users=("nl-old", "nl-new")) as simulator:
        yield simulator


def clouds_yaml(sim: Simulator, directory: Path, user: str) -> str:
    return sim.write_clouds_yaml(str(directory / f"clouds-{user}.yaml"), CLOUD, username=user)


@pytest.fixture
def old_owner(zk_tls: dict, tmp_path: Path, sim: Simulator) -> Iterator[tuple[Any, Path, str]]:
    config = tmp_path / "nodepool.yaml"
    config.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG) +
                      f"zookeeper-timeout: {SESSION_TIMEOUT}\n")
    log = tmp_path / "old-owner.log"
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": clouds_yaml(sim, tmp_path, "nl-old")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nodepool.launcher.main", "-f",
                                 "--no-webapp", "-c", str(config), "--debug"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env=env, stdin=subprocess.DEVNULL)
    try:
        yield proc, log, str(config)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)


def calls_of(ctl: Any, user: str, after: float = 0.0) -> list[dict]:
    return [r for r in ctl.requests(limit=2000) if r.get("user") == user and r["time"] > after]


def test_paused_owner_makes_no_cloud_call_after_its_lease_is_gone(
        old_owner, zk_client, sim: Simulator, tmp_path: Path, monkeypatch) -> None:
    proc, log, config = old_owner
    ctl = sim.client()
    ctl.reset()
    rq = Requestor(zk_client)
    # Two nodes in use by us, to be returned used while the owner is paused...
    in_use = []
    for _ in range(2):
        rid = rq.submit(["small"])
        in_use += rq.accept(rid, rq.wait(rid, timeout=30))
    # ... and two launches under way (the servers take 1.5 s to boot).
    booting = [rq.submit(["small"]) for _ in range(2)]
    wait_for(lambda: len([s for s in ctl.servers() if s["status"] == "BUILD"]) == 2,
             timeout=20, what="two servers booting")
    lease_owner_session = zk_client.exists(LEASE).ephemeralOwner

    os.kill(proc.pid, signal.SIGSTOP)
    rq.finish(in_use)                        # used: to be deleted by whoever owns the provider
    gone = wait_for(lambda: zk_client.exists(LEASE) is None and time.time(), timeout=30,
                    what="the paused owner's lease gone with its session")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", clouds_yaml(sim, tmp_path, "nl-new"))
    new_owner = Launcher(config, hostname="nl-new")
    new_owner.start()
    try:
        for rid in booting:
            assert rq.wait(rid, timeout=30)["state"] == "fulfilled"
        wait_for(lambda: all(rq.node(n) is None for n in in_use), timeout=30,
                 what="the used nodes deleted by the new owner")
        assert zk_client.exists(LEASE).ephemeralOwner != lease_owner_session

        resumed = time.time()
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: "Provider sim-cloud stopped" in log.read_text(), timeout=30,
                 what="the old owner noticing its lease is lost and stopping the provider")
        assert proc.poll() is None, "the old owner exited"
        before = calls_of(ctl, "nl-old")
        late = calls_of(ctl, "nl-old", after=gone)
        assert before, "the old owner made no cloud call at all: the test proves nothing"
        # The one call the design lets through (doc/internals.md, "Fencing"): a read
        # whose check passed before the stop landed between that check and its send
        # (the SDK's Python, about a millisecond), sent the moment the process resumes.
        in_flight = [c for c in late if c["method"] == "GET" and c["time"] < resumed + 0.5]
        assert len(in_flight) <= 1 and late == in_flight, \
            f"cloud calls of the old owner after its lease was gone: {late}"
        assert calls_of(ctl, "nl-new", after=gone), "the new owner did the work"
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]
    finally:
        new_owner.stop()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_node_write_under_a_lock_of_an_expired_session_fails(zk_tls: dict, zk) -> None:
    """The ZooKeeper half of fencing: writes are conditional on our lock contender."""
    cache = zkcache.ZooKeeperCache(zk)
    cache.start()
    try:
        effects = ZkEffects(cache, lambda: zk.kazoo, "tester", lambda: None)
        node = nodes.create_node(zk.kazoo, Node(type=["a"], state=NodeState.READY))
        lock = locks.lock_node(zk.kazoo, node.id, identifier="tester")
        expire_session(zk_tls, zk.kazoo)     # our contender goes with the session
        wait_for(lambda: zk.connected and not cache.is_node_locked(node.id), timeout=20,
                 what="a new session, the lock gone")
        node.state = NodeState.DELETING
        task = DeleteTask(node=node, lock=lock, sm=None, started=0.0)
        task.write = effects.write_node_async(node, lock=lock)
        wait_for(task.write.ready, timeout=5, what="the write answered")
        assert task.confirm_write(cache_log(), lambda t: None) == "lost"
        other = make_client(zk_tls)
        try:
            assert nodes.get_node(other.kazoo, node.id).state == NodeState.READY
        finally:
            other.disconnect()
    finally:
        cache.stop()


def cache_log():
    import logging
    return logging.getLogger("test.fencing")
