"""A small benchmark run as a functional check: requests fulfilled, nodes deleted, no errors.

The launcher runs as its own process (tools/bench_launcher.py, in-memory cloud) and
the benchmark as another (tools/benchmark), both on the session's ZooKeeper over
TLS in the test's chroot. Correctness only: no assertion on times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
RUN_TIMEOUT = 50.0
STOP_TIMEOUT = 20.0


def _env() -> dict[str, str]:
    # This tree's nodepool, whatever the venv has installed.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _tls_args(zk_tls: dict[str, Any]) -> list[str]:
    return ["--zk-hosts", zk_tls["hosts"], "--zk-chroot", zk_tls["chroot"],
            "--tls-cert", zk_tls["cert"], "--tls-key", zk_tls["key"], "--tls-ca", zk_tls["ca"]]


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else ""


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    return proc.returncode


@pytest.fixture
def launcher(zk_tls: dict[str, Any], tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A launcher process with 20 prefilled ready nodes and min-ready 20 (it launches the rest)."""
    with open(tmp_path / "launcher.stderr", "wb") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "bench_launcher.py"), *_tls_args(zk_tls),
             "--prefill", "20", "--min-ready", "20", "--workdir", str(tmp_path / "launcher")],
            env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            stderr=stderr, start_new_session=True)
    try:
        line = _first_line(proc, READY_TIMEOUT)
        event = json.loads(line) if line.startswith("{") else {"event": line}
        assert event.get("event") == "ready", \
            f"launcher not ready: {event}; {(tmp_path / 'launcher.stderr').read_text()[-2000:]}"
        yield proc
    finally:
        code = _stop(proc)
    assert code == 0, f"launcher exited with {code}; see {tmp_path / 'launcher'}"


def test_benchmark_run_fulfils_every_request_and_every_used_node_is_deleted(
        launcher: subprocess.Popen, zk_tls: dict[str, Any], zk_server: Any,
        tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark"), *_tls_args(zk_tls),
         "--zk-4lw", zk_server.plain_hosts, "--launcher-pid", str(launcher.pid),
         "--concurrency", "10", "--requests", "250", "--nodes-per-request", "2",
         "--timeout", "30", "--delete-timeout", "30", "--name", "test"],
        env=_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=RUN_TIMEOUT, check=False)
    assert proc.stdout.strip(), f"no report; stderr:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    detail = json.dumps(report)  # in full: error_examples and not_deleted say what went wrong
    assert report["made"] == report["fulfilled"] == report["completed"] == 250, detail
    assert report["failures"] == 0 and report["errors"] == {}, detail
    assert report["nodes_used"] == report["nodes_deleted"] == 500, detail
    assert report["all_deleted"] is True, detail
    assert report["latency_ms"]["count"] == 250
    assert report["deletion_started_ms"]["count"] == 500
    assert report["launcher"]["cpu_s"] > 0 and report["launcher"]["peak_rss_mb"] > 0
    assert report["tool"]["zk_requests_per_request"] > 0
    assert set(report["tool"]["gc"]) == {"collections", "total_ms", "max_ms", "full"}
    assert report["zookeeper"]["packets_received"] > 0
    assert proc.returncode == 0, proc.stderr[-3000:]
