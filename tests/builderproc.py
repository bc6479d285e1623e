"""nodepool-builder as its own process (the console script, as systemd runs it): started
in a `with` that never leaves it running, and stopped by a signal with its exit code checked."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def builder_process(config: Path, log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """The builder on `config`, its stderr in `log`; killed on the way out if still alive.
    The environment (OS_CLIENT_CONFIG_FILE, AWS_*) says which cloud it talks to."""
    exe = Path(sys.executable).parent / "nodepool-builder"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([str(exe), "-c", str(config), "-f", *args],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_by(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` and check how the builder ended: 0 after SIGTERM, killed after SIGKILL."""
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
