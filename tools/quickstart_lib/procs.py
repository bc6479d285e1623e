"""The quickstart's background processes: started detached with a pid file, found and stopped by that pid only."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import zookeeper  # noqa: E402  (tools/zookeeper.py: one pid check for every tool)
from zookeeper import pid_alive as alive  # noqa: E402,F401  (re-exported to cli)

POLL = 0.05  # seconds between checks of a condition that has a deadline
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_children: dict[int, subprocess.Popen[bytes]] = {}  # started by this process: reaped when stopped


class QuickstartError(RuntimeError):
    """A step failed; the message says what, and where its log is."""


def stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM pid, then SIGKILL after timeout: tools/zookeeper.py's, with our error."""
    try:
        zookeeper.stop_pid(pid, timeout)
    except zookeeper.ZooKeeperError as e:
        raise QuickstartError(str(e)) from None


def _unblock() -> None:
    """In the child before exec: a blocked signal mask is inherited, and the service must get its SIGTERM."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def rotate(log: Path) -> None:
    """Keep the previous run's log as <log>.1 (one generation): a service that died leaves its evidence."""
    if log.is_file() and log.stat().st_size > 0:
        log.replace(log.with_name(log.name + ".1"))


def start_detached(argv: Sequence[str], log: Path, pid_file: Path, marker: str,
                   env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start argv in its own session (a terminal's Ctrl-C reaches only us, and we stop it in order).

    Output goes to log (the previous one becomes <log>.1); pid_file records the pid and `marker`, an
    argument that only our process has on its command line (its state-dir path), so a recycled pid
    never passes for it.
    """
    rotate(log)
    # Ctrl-C between the start and the pid file would leave a process nobody can find: hold signals till then.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, cwd=cwd,
                                    preexec_fn=_unblock)  # safe: this process runs no other threads
        _children[proc.pid] = proc
        pid_file.write_text(json.dumps({"pid": proc.pid, "marker": marker, "argv": list(argv)}) + "\n")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return proc.pid


def running_pid(pid_file: Path) -> int | None:
    """The pid recorded in pid_file when that process still runs and is ours, else None."""
    try:
        record = json.loads(pid_file.read_text())
        pid, marker = int(record["pid"]), str(record["marker"])
        if (proc := _children.get(pid)) is not None:
            # Our own child: ask it. Its /proc cmdline reads empty for a moment during its exec.
            return pid if proc.poll() is None else None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if marker in argv and alive(pid) else None


def stop(pid_file: Path, timeout: float) -> int | None:
    """SIGTERM the recorded process, SIGKILL it after timeout; return its pid (None: it was not running)."""
    pid = running_pid(pid_file)
    if pid is not None:
        stop_pid(pid, timeout)
        if (proc := _children.pop(pid, None)) is not None:
            proc.wait(timeout=5)  # ours: reap it
    pid_file.unlink(missing_ok=True)
    return pid


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             failed: Callable[[], str | None] = lambda: None) -> object:
    """Poll condition until truthy; raise QuickstartError naming `what` when failed() says why, or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if result := condition():
            return result
        if problem := failed():
            raise QuickstartError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            raise QuickstartError(f"{what}: not done within {timeout:g}s")
        time.sleep(POLL)


def port_in_use(port: int) -> bool:
    """True when something on this machine listens on (or holds) 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The end of a log, indented, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"    (cannot read {path}: {exc})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty)"
