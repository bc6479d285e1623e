"""tools/quickstart end to end: ZooKeeper, the simulator with real nodes and the launcher;
ssh into the held node, delete it, stop."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from ossim import ControlClient, wait_for  # tools/ is on sys.path (tests/conftest.py)
from quickstart_lib.procs import alive  # every thread gone, not only the main one

REPO = Path(__file__).resolve().parent.parent

QUICKSTART = REPO / "tools" / "quickstart"
START_TIMEOUT = 50  # seconds; a start takes about 7 s here (setup already done)
# A whole stop: the launcher (up to 40 s, then SIGKILL), the simulator (30 s), ZooKeeper (10 s).
STOP_TIMEOUT = 100


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def require_root() -> None:
    # Never skipped: developers and CI run as root; without root there are no real nodes to ssh into.
    if os.geteuid() != 0:
        pytest.fail("the quickstart test needs root (real nodes: network namespaces, a bridge, sshd)")


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on: held open together, so none is handed out twice."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@dataclass
class Quickstart:
    """One quickstart on ports and in a state directory of its own (not a developer's, not the session's ZooKeeper)."""

    state: Path
    zk_port: int
    zk_tls_port: int
    sim_port: int
    web_port: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CI": "true", "QUICKSTART_DIR": str(self.state),
                "QUICKSTART_ZK_PORT": str(self.zk_port), "QUICKSTART_ZK_TLS_PORT": str(self.zk_tls_port),
                "QUICKSTART_SIM_PORT": str(self.sim_port), "QUICKSTART_WEB_PORT": str(self.web_port)}

    def run(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(QUICKSTART), *args], env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def nodepool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / ".venv" / "bin" / "nodepool"), "-c", str(self.state / "nodepool.yaml"),
                               *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)

    def pids(self) -> dict[str, int]:
        """The pids of everything it started, from its own records."""
        pids = {name: json.loads((self.state / f"{name}.pid").read_text())["pid"] for name in ("launcher", "ossim")}
        pids["zookeeper"] = json.loads((self.state / "zk" / "zk.json").read_text())["pid"]
        return pids

    def sim_id(self) -> str:
        """The simulator's id, from its log: it names its bridge ossim<id> and its namespaces ossim-<id>-N."""
        match = re.search(r"real nodes on bridge ossim(\w+)", (self.state / "ossim.log").read_text())
        assert match, "the simulator did not start with real nodes"
        return match.group(1)

    def kazoo(self) -> KazooClient:
        zk = json.loads((self.state / "zk" / "zk.json").read_text())
        client = KazooClient(hosts=zk["tls_hosts"], use_ssl=True, certfile=zk["cert"], keyfile=zk["key"],
                             ca=zk["ca"])
        client.start(timeout=10)
        return client


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Quickstart]:
    require_root()
    qs = Quickstart(tmp_path / "quickstart", *free_ports(4))
    yield qs
    qs.run("stop", timeout=120)  # whatever the test did: nothing of it may keep running


def test_quickstart_serves_a_real_node_to_ssh_into_and_stop_leaves_nothing(quickstart: Quickstart) -> None:
    qs = quickstart
    result = qs.run()   # bounded by its own timeout; how long the start takes is no assertion
    assert result.returncode == 0, f"tools/quickstart failed:\n{result.stdout}\n{result.stderr}"
    node = json.loads((qs.state / "node.json").read_text())
    assert node["type"] == ["debian-bookworm"] and node["username"] == "root"
    with urllib.request.urlopen(f"http://127.0.0.1:{qs.web_port}/ready", timeout=10) as ready:
        assert ready.read() == b"OK"   # the launcher's web endpoints, on the port given

    # The ssh command it printed logs in, checking the host key the launcher scanned.
    printed = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("ssh -i ")]
    assert len(printed) == 1, result.stdout
    *ssh, destination = shlex.split(printed[0])
    login = subprocess.run([*ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", destination, "hostname"],
                           cwd=REPO, capture_output=True, text=True, timeout=20)
    assert login.returncode == 0, f"{printed[0]} failed: {login.stderr}"
    ctl = ControlClient(f"http://127.0.0.1:{qs.sim_port}")
    server = ctl.server(node["external_id"])
    assert server is not None
    assert login.stdout.strip() == node["hostname"] == server["name"] == f"debian-bookworm-quickstart-{node['id']}"

    # Releasing the node deletes its server, its namespace and its record.
    namespace = server["node"]["namespace"]
    assert namespace in namespaces()
    deleted = qs.nodepool("delete", node["id"])
    assert deleted.returncode == 0, deleted.stderr
    kazoo = qs.kazoo()
    try:
        wait_for(lambda: kazoo.exists(f"/nodepool/nodes/{node['id']}") is None, timeout=20,
                 what="the node's znode to go")
    finally:
        kazoo.stop()
        kazoo.close()
    wait_for(lambda: ctl.server(node["external_id"]) is None, timeout=20, what="the server to go")
    assert namespace not in namespaces()

    # stop ends every process it started: the launcher, the simulator with every node's sshd, ZooKeeper.
    sim_id = qs.sim_id()
    pids = qs.pids()
    sshds = [int(p.read_text()) for p in Path(f"/run/ossim/{sim_id}").glob("*/sshd.pid")]
    assert len(sshds) >= 4, "min-ready keeps 4 nodes (2 per label) booted"
    stopped = qs.run("stop", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = {name: pid for name, pid in [*pids.items(), *(("sshd", p) for p in sshds)] if alive(pid)}
    assert left == {}, f"still running after stop: {left}"
    # Each stopped on its SIGTERM, cleanly (not by the SIGKILL that follows a timeout).
    assert "Launcher stopped" in (qs.state / "launcher.log").read_text()
    assert "ossim: stopped" in (qs.state / "ossim.log").read_text()
    assert [ns for ns in namespaces() if ns.startswith(f"ossim-{sim_id}-")] == []
    assert subprocess.run(["ip", "link", "show", f"ossim{sim_id}"], capture_output=True).returncode != 0
    assert qs.run("status").returncode == 3


@pytest.mark.timeout(START_TIMEOUT + STOP_TIMEOUT + 30)  # a start and a whole stop, on a loaded machine
def test_ctrl_c_in_the_foreground_stops_everything(quickstart: Quickstart) -> None:
    qs = quickstart
    proc = subprocess.Popen([str(QUICKSTART), "--foreground"], env=qs.env, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:  # a thread, so the wait for a line has a deadline
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not any("Ctrl-C stops everything" in line for line in seen):
            assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "no 'Ctrl-C stops everything' within the deadline:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        pids, sim_id = qs.pids(), qs.sim_id()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {STOP_TIMEOUT}s of Ctrl-C; quickstart said:\n{''.join(seen)}\n"
                        f"launcher.log ends:\n{log_tail(qs.state / 'launcher.log')}")
        assert code == 130, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {name: pid for name, pid in pids.items() if alive(pid)} == {}
    assert "Launcher stopped" in (qs.state / "launcher.log").read_text()
    assert "ossim: stopped" in (qs.state / "ossim.log").read_text()
    assert [ns for ns in namespaces() if ns.startswith(f"ossim-{sim_id}-")] == []


def test_taken_ports_fail_before_anything_starts_and_are_named_all_at_once(quickstart: Quickstart) -> None:
    qs = quickstart
    with socket.socket() as taken, socket.socket() as also_taken:
        taken.bind(("127.0.0.1", qs.sim_port))
        taken.listen()
        also_taken.bind(("127.0.0.1", qs.zk_port))
        also_taken.listen()
        result = qs.run()
    assert result.returncode == 1
    assert f"127.0.0.1:{qs.zk_port} (ZooKeeper plain port) is already in use" in result.stderr
    assert f"127.0.0.1:{qs.sim_port} (OpenStack simulator) is already in use" in result.stderr
    assert "--sim-port" in result.stderr and "--zk-port" in result.stderr
    assert qs.run("status").returncode == 3  # ZooKeeper was not started either


def test_a_launcher_that_died_is_started_alone_and_its_log_is_kept(quickstart: Quickstart) -> None:
    qs = quickstart
    first = qs.run()
    assert first.returncode == 0, f"tools/quickstart failed:\n{first.stdout}\n{first.stderr}"
    pids = qs.pids()
    os.kill(pids["launcher"], signal.SIGKILL)  # dies without a word of its own
    wait_for(lambda: not alive(pids["launcher"]), timeout=10, what="the killed launcher to go")
    dead_log = (qs.state / "launcher.log").read_text()
    assert dead_log
    # The new launcher may wait for the killed one's ZooKeeper session (and its leases) to expire.
    again = qs.run(timeout=150)
    assert again.returncode == 0, f"second start failed:\n{again.stdout}\n{again.stderr}"
    # As doc/quickstart.md says: ZooKeeper and the simulator run on; only the launcher starts again.
    assert again.stdout.count("already running") == 2, again.stdout
    now = qs.pids()
    assert now["zookeeper"] == pids["zookeeper"] and now["ossim"] == pids["ossim"]
    assert now["launcher"] != pids["launcher"]
    assert (qs.state / "launcher.log.1").read_text() == dead_log  # the dead one's evidence
    assert "launcher.log.1" in again.stdout
