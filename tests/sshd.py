"""Test helper: real sshd processes on loopback addresses with generated host keys."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("tests.sshd")

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
ALL_KEY_TYPES: tuple[str, ...] = ("ed25519", "ecdsa", "rsa")

# Each server gets its own 127.0.0.X so that tests can tell servers apart in
# logs and so that a port freed by one test is not confused with another.
_addresses = itertools.count(2)


def ensure_sshd() -> str:
    """Return the sshd path, installing openssh-server with apt-get if we can."""
    if not os.path.exists(SSHD):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(
                f"{SSHD} is missing and cannot be installed from here (needs root and "
                "apt-get): run 'apt-get install openssh-server' and retry")
        log.info("installing openssh-server for %s", SSHD)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"],
            env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            # A machine that never ran 'apt-get update' has no package lists.
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            proc = subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"],
                env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(SSHD):
            raise RuntimeError(
                f"could not install openssh-server for {SSHD}: {proc.stderr.strip()[-500:]}")
    if not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            raise RuntimeError(
                f"sshd needs its privilege separation directory {PRIVSEP_DIR}: {exc}") from exc
    for tool in ("ssh-keygen",):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: run 'apt-get install openssh-client'")
    return SSHD


def next_address() -> str:
    """A loopback address no other server of this process uses."""
    n = next(_addresses)
    if n > 254 * 254:
        raise RuntimeError("out of 127.0.X.Y addresses")
    return f"127.0.{n // 254}.{n % 254 + 1}"


def free_port(address: str) -> int:
    """A TCP port nothing listens on at `address` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(address: str, port: int) -> bool:
    """True if a TCP connect to address:port succeeds."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class SshServer:
    """One sshd with its own config, host keys, pid file and log under `workdir`."""

    def __init__(self, workdir: Path, key_types: tuple[str, ...] = ALL_KEY_TYPES,
                 address: str | None = None, port: int | None = None) -> None:
        self.sshd = ensure_sshd()
        self.address = address or next_address()
        self.port = port or free_port(self.address)
        self.workdir = workdir / f"sshd-{self.address}-{self.port}"
        self.workdir.mkdir(parents=True)
        self.key_types = key_types
        self.pid_file = self.workdir / "sshd.pid"
        self.log_file = self.workdir / "sshd.log"
        self.config_file = self.workdir / "sshd_config"
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_keys = [self._generate_key(kt) for kt in key_types]
        self._write_config()

    def _generate_key(self, key_type: str) -> Path:
        path = self.workdir / f"ssh_host_{key_type}_key"
        cmd = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "", "-f", str(path)]
        if key_type == "rsa":
            cmd[4:4] = ["-b", "2048"]
        subprocess.run(cmd, check=True, capture_output=True)
        return path

    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self.address}:{self.port}",
            *(f"HostKey {key}" for key in self.host_keys),
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "LogLevel INFO",
        ]
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def public_keys(self) -> list[str]:
        """The host keys as '<type> <base64>', in the order they were generated."""
        keys = []
        for key in self.host_keys:
            key_type, blob = Path(f"{key}.pub").read_text().split()[:2]
            keys.append(f"{key_type} {blob}")
        return keys

    def start(self, wait: bool = True, timeout: float = 10.0) -> "SshServer":
        """Start sshd in the foreground (-D); with `wait`, return once it accepts."""
        if self.proc is not None:
            raise RuntimeError(f"sshd on {self.address}:{self.port} already started")
        with open(self.log_file, "ab") as log_out:
            self.proc = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=log_out, stderr=log_out)
        log.debug("started sshd pid=%s host=%s port=%s", self.proc.pid, self.address, self.port)
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Poll a connect until sshd accepts, it dies, or `timeout` passes."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not is_listening(self.address, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd on {self.address}:{self.port} exited with {self.proc.returncode}: "
                    f"{self.log_file.read_text().strip()[-1000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sshd on {self.address}:{self.port} not listening after {timeout}s")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sshd by its pid: SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        log.debug("stopped sshd pid=%s host=%s port=%s", proc.pid, self.address, self.port)
        try:
            self.pid_file.unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def __enter__(self) -> "SshServer":
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
