"""The short chaos soak (tools/soak) passes: every invariant holds through launcher kills and pauses,
a ZooKeeper leader loss, cloud fault bursts and a quota cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DURATION = 120  # seconds of load and chaos; with start-up, drain and stop about 2.5 minutes
SEED = int(os.environ.get("SOAK_SEED", "20261202"))  # a fixed plan; SOAK_SEED explores others
RUN_TIMEOUT = 330.0  # a failing run may wait out its drain bound (90 s) and launcher stops


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_short_chaos_soak_violates_no_invariant(tmp_path: Path) -> None:
    run_dir = tmp_path / "soak"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "soak"), "--duration", str(DURATION),
         "--seed", str(SEED), "--drain-timeout", "90", "--run-dir", str(run_dir)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the soak stops everything it started
        out, err = proc.communicate(timeout=60)
    summary = out.strip().splitlines()[-1] if out.strip() else "(no summary line)"
    violations = [line for line in err.splitlines() if line.startswith("VIOLATION")]
    assert proc.returncode == 0, (
        f"soak exit {proc.returncode} (seed {SEED}, run dir {run_dir}):\n{summary}\n"
        + "\n".join(violations) + "\n--- stderr tail ---\n" + "\n".join(err.splitlines()[-30:]))
    assert summary.startswith("soak PASS:"), summary
