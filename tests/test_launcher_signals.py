"""The real `nodepool-launcher` process: what each signal does, ZooKeeper away at start,
and which libraries' lines reach the default log (issue 16)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from requestor import wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One `nodepool-launcher -f` with its stderr in a file; stopped by pid at the end."""

    def __init__(self, config: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodepool.launcher.main", "-f", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        wait_for(lambda: needle in self.text() or self.proc.poll() is not None,
                 timeout=timeout, what=f"{needle!r} in the launcher's log")
        assert needle in self.text(), f"launcher exited {self.proc.returncode}:\n{self.text()}"

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def write_config(path: Path, zk_tls: dict, web_port: int, zk_port: int | None = None) -> Path:
    path.write_text(nodepool_yaml(zk_tls, ZK_HEADER, port=zk_port) + "zookeeper-timeout: 2\n"
                    f"webapp:\n  listen_address: 127.0.0.1\n  port: {web_port}\n"
                    "labels: []\nproviders: []\n")
    return path


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
        d.proc.wait()


def ready_daemon(zk_tls: dict, tmp_path: Path, daemons: list[Daemon]) -> tuple[Daemon, int]:
    """A launcher on the test's ZooKeeper whose /ready says OK, and its web port."""
    web = free_port()
    daemon = Daemon(write_config(tmp_path / "nodepool.yaml", zk_tls, web), tmp_path / "log")
    daemons.append(daemon)
    wait_for(lambda: get(web, "/ready") == (200, "OK"), timeout=30, what="/ready OK")
    return daemon, web


def test_hup_checks_the_config_and_usr2_dumps_stacks_and_neither_stops_it(
        zk_tls: dict, tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon, web = ready_daemon(zk_tls, tmp_path, daemons)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: checking the configuration files now")
    daemon.signal(signal.SIGUSR2)
    daemon.wait_log("Thread stack dump (SIGUSR2):")
    daemon.wait_log("Thread launcher (")   # the loop thread, with its frames
    assert daemon.proc.poll() is None and get(web, "/ready") == (200, "OK")
    assert daemon.stop() == 0


def test_default_log_has_no_info_lines_of_apscheduler_or_kazoo(
        zk_tls: dict, tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon, _ = ready_daemon(zk_tls, tmp_path, daemons)
    daemon.signal(signal.SIGUSR2)   # a line of ours after the scheduler's jobs were added
    daemon.wait_log("Thread stack dump (SIGUSR2):")
    assert daemon.stop() == 0
    lines = daemon.text().splitlines()
    assert any(" INFO nodepool." in line for line in lines)
    noisy = [line for line in lines if " INFO apscheduler" in line or " INFO kazoo" in line]
    assert noisy == []


class Forwarder:
    """A TCP port that forwards to ZooKeeper once opened: ZooKeeper 'coming back'."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self.sock: socket.socket | None = None

    def open(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def test_zookeeper_away_at_start_is_retried_and_ready_says_why(
        zk_tls: dict, tmp_path: Path, daemons: list[Daemon]) -> Any:
    host, port = zk_tls["hosts"].split(",")[0].rsplit(":", 1)
    zk = Forwarder((host, int(port)))
    web = free_port()
    config = write_config(tmp_path / "nodepool.yaml", zk_tls, web, zk_port=zk.port)
    daemon = Daemon(config, tmp_path / "log")
    daemons.append(daemon)
    try:
        daemon.wait_log("retrying in 1s")
        daemon.wait_log("retrying in 2s")   # the backoff grows; the process stays
        status, body = get(web, "/ready")
        assert status == 503 and body.startswith("waiting for ZooKeeper: could not connect")
        zk.open()
        daemon.wait_log("ZooKeeper answered: starting", timeout=60)
        wait_for(lambda: get(web, "/ready") == (200, "OK"), timeout=30, what="/ready OK")
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.text()
    finally:
        zk.close()


def test_stop_signal_while_waiting_for_zookeeper_ends_at_once(
        zk_tls: dict, tmp_path: Path, daemons: list[Daemon]) -> None:
    config = write_config(tmp_path / "nodepool.yaml", zk_tls, free_port(), zk_port=free_port())
    daemon = Daemon(config, tmp_path / "log")
    daemons.append(daemon)
    daemon.wait_log("retrying in 1s")
    # At most one connection attempt (zookeeper-timeout: 2) is still to run out.
    assert daemon.stop(timeout=15) == 0
    assert "Traceback" not in daemon.text()
