"""tools/bench-cloud-call at its smallest: it starts the simulator, lists, prints, stops.

No timing is asserted (the figures are the tool's to print): one line per gap, each
naming as many listings as asked, and no simulator left running.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench-cloud-call"


def test_bench_cloud_call_prints_one_line_per_gap_and_stops_its_simulator():
    done = subprocess.run([sys.executable, str(TOOL), "--calls", "3", "--gaps", "0,0.01",
                           "--statsd"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for gap, line in zip(("0", "0.01"), lines):
        assert re.fullmatch(rf"gap {re.escape(gap)} s: 3 listings, thread CPU per call "
                            r"median \d+\.\d\d ms, mean \d+\.\d\d ms", line), line
    left = subprocess.run(["pgrep", "-f", "tools/ossim --port 0 .*bench-cloud-call-"],
                          capture_output=True, text=True)
    assert left.stdout == "", left.stdout
