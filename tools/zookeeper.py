"""Install, configure, start and stop a local ZooKeeper (plain and TLS) for tests and development."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ZK_HOME_CANDIDATES = ("/usr/share/zookeeper", "/opt/zookeeper")
JAVA_DIR = Path("/usr/share/java")
# Debian's zkEnv.sh classpath lacks these Netty jars (TLS needs them); slf4j-simple makes it log.
EXTRA_JARS = ("netty-codec.jar", "netty-resolver.jar",
              "netty-transport-native-unix-common.jar", "slf4j-simple.jar")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL = 0.05  # seconds between checks of a condition that has a deadline
LOOPBACK = "127.0.0.1"


class ZooKeeperError(RuntimeError):
    """ZooKeeper could not be installed, started or stopped; the message says why."""


class PortTakenError(ZooKeeperError):
    """The server could not listen on one of its ports."""


def find_zkserver() -> Path | None:
    """The path of zkServer.sh ($ZOOKEEPER_HOME first), or None when ZooKeeper is missing."""
    for home in filter(None, (os.environ.get("ZOOKEEPER_HOME"), *ZK_HOME_CANDIDATES)):
        if (script := Path(home) / "bin" / "zkServer.sh").is_file():
            return script
    return None


def install(extra_packages: Sequence[str] = ()) -> list[str]:
    """apt-get install what ZooKeeper needs and extra_packages if missing; return what it installed."""
    missing = [pkg for pkg, present in (
        ("zookeeper", find_zkserver() is not None),
        ("default-jre-headless", shutil.which("java") is not None),
        ("openssl", shutil.which("openssl") is not None)) if not present]
    for pkg in extra_packages:
        query = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True)
        if query.stdout.strip() != b"install ok installed":
            missing.append(pkg)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise ZooKeeperError(
            f"missing Debian packages: {' '.join(missing)}; installing them needs root: run "
            f"`sudo apt-get update && sudo apt-get install -y {' '.join(missing)}`, or this as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"zookeeper.py: apt-get install {' '.join(missing)}", file=sys.stderr, flush=True)
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        result = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise ZooKeeperError(f"`{' '.join(cmd)}` failed with exit code "
                                 f"{result.returncode}:\n{_tail(result.stdout, 30)}")
    return missing


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR, as ZooKeeper binds: TIME_WAIT leftovers are no conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])  # the end of a log, for error messages


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ZooKeeperError(f"`openssl {' '.join(args)}` failed: {result.stderr.strip()}")


def make_certificates(tls_dir: Path) -> dict[str, Path]:
    """Create (once per tls_dir) a CA, and a server and a client certificate it signed for localhost."""
    names = ("ca.pem", "ca.key", "server.pem", "server.key", "keystore.pem", "client.pem", "client.key")
    paths = {name: tls_dir / name for name in names}
    if all(p.is_file() and p.stat().st_size > 0 for p in paths.values()):
        return paths
    tls_dir.mkdir(parents=True, exist_ok=True)
    ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")  # genpkey writes PKCS#8
    _openssl("genpkey", *ec, "-out", str(paths["ca.key"]))
    _openssl("req", "-x509", "-new", "-key", str(paths["ca.key"]), "-out", str(paths["ca.pem"]),
             "-days", "3650", "-subj", "/CN=nodepool test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ext = tls_dir / "leaf.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    for role in ("server", "client"):
        key, csr = paths[f"{role}.key"], tls_dir / f"{role}.csr"
        _openssl("genpkey", *ec, "-out", str(key))
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN=localhost/OU={role}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(paths["ca.pem"]),
                 "-CAkey", str(paths["ca.key"]), "-set_serial", "0x" + os.urandom(16).hex(),
                 "-days", "3650", "-extfile", str(ext), "-out", str(paths[f"{role}.pem"]))
        csr.unlink()
    # ZooKeeper's PEM keystore: the certificate followed by its PKCS#8 key.
    paths["keystore.pem"].write_text(paths["server.pem"].read_text() + paths["server.key"].read_text())
    for name in ("ca.key", "server.key", "client.key", "keystore.pem"):
        paths[name].chmod(0o600)
    return paths


def pid_alive(pid: int) -> bool:
    """True while any thread of pid is not a zombie (a JVM's main thread exits first)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            return True
    return False


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM pid, wait up to timeout for it to end, then SIGKILL it and wait again."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL / 2)
        if not pid_alive(pid):
            return
    raise ZooKeeperError(f"pid {pid} survived SIGKILL for {timeout:.0f}s")


def four_letter(port: int, word: str = "srvr", timeout: float = 2.0) -> str:
    """Send a four-letter command to 127.0.0.1:port and return the answer."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(word.encode())
        return b"".join(iter(lambda: sock.recv(4096), b"")).decode(errors="replace")


def tls_handshake(port: int, ca: str, cert: str, key: str, timeout: float = 2.0) -> None:
    """Complete a verified TLS handshake with 127.0.0.1:port presenting the client certificate."""
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        context.wrap_socket(sock, server_hostname=LOOPBACK).close()  # handshakes on connect


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGTERMs the server when the thread that started it dies."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class ZooKeeperServer:
    """A standalone ZooKeeper on 127.0.0.1 with its data, certificates and log in base_dir.

    port=0 and tls_port=0 pick free ports; tls_port=None means no TLS port.
    die_with_parent: the kernel stops the server if the starting thread dies hard.
    """

    def __init__(self, base_dir: str | os.PathLike[str], port: int = 0,
                 tls_port: int | None = None, start_timeout: float = START_TIMEOUT,
                 die_with_parent: bool = True, *, tls_dir: str | os.PathLike[str] | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.host, self.port, self.tls_port = LOOPBACK, port, tls_port
        self._want = (port, tls_port)
        self.start_timeout, self.die_with_parent = start_timeout, die_with_parent
        self.pid: int | None = None
        # tls_dir: certificates made once there (an ensemble's members share one CA and keystore)
        self.tls_dir = Path(tls_dir).resolve() if tls_dir else self.base_dir / "tls"
        tls = self.tls_dir if tls_port is not None else None  # client side of TLS:
        self.ca: str | None = str(tls / "ca.pem") if tls else None
        self.cert: str | None = str(tls / "client.pem") if tls else None
        self.key: str | None = str(tls / "client.key") if tls else None
        self.log_path = self.base_dir / "zookeeper.log"
        self.config_path = self.base_dir / "zoo.cfg"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def plain_hosts(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls_hosts(self) -> str:
        if self.tls_port is None:
            raise ZooKeeperError(f"ZooKeeper in {self.base_dir} has no TLS port (tls_port=None)")
        return f"{self.host}:{self.tls_port}"

    def info(self) -> dict[str, Any]:
        """What a client needs (the CLI writes it to zk.json)."""
        return {"pid": self.pid, "host": self.host, "port": self.port, "tls_port": self.tls_port,
                "plain_hosts": self.plain_hosts, "tls_hosts": self.tls_port and self.tls_hosts,
                "ca": self.ca, "cert": self.cert, "key": self.key,
                "config": str(self.config_path), "log": str(self.log_path)}

    def _config_lines(self) -> list[str]:
        lines = [f"dataDir={self.base_dir / 'data'}", f"clientPort={self.port}",
                 f"clientPortAddress={LOOPBACK}",
                 # short ticks let tests expire a session in about a second
                 "tickTime=500", "minSessionTimeout=1000", "maxSessionTimeout=60000",
                 # every test client comes from 127.0.0.1: no per-address limit
                 "maxClientCnxns=0", "preAllocSize=4096", "admin.enableServer=false",
                 "4lw.commands.whitelist=ruok,srvr,mntr,stat"]
        if self.tls_port is not None:
            keystore = self.tls_dir / "keystore.pem"
            lines += [f"secureClientPort={self.tls_port}", f"secureClientPortAddress={LOOPBACK}",
                      "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                      f"ssl.keyStore.location={keystore}", "ssl.keyStore.type=PEM",
                      f"ssl.trustStore.location={self.ca}", "ssl.trustStore.type=PEM"]
        return lines

    @staticmethod
    def _environment() -> dict[str, str]:
        flags = ["-Dorg.slf4j.simpleLogger.showDateTime=true",
                 "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS"]
        if (JAVA_DIR / "zookeeper.jar").is_file():  # Debian's layout
            jars = [JAVA_DIR / j for j in ("zookeeper.jar", *EXTRA_JARS) if (JAVA_DIR / j).is_file()]
            # JVMFLAGS come after zkEnv.sh's -cp on the java command line, so this one wins.
            flags.append("-cp " + ":".join(map(str, jars)))
        flags.append(os.environ.get("JVMFLAGS", ""))  # the caller's own flags last
        return {**os.environ, "JMXDISABLE": "true", "JVMFLAGS": " ".join(flags).strip()}

    def start(self) -> ZooKeeperServer:
        """Start and wait until it serves; on failure raise ZooKeeperError and leave no process."""
        script = self._prepare()
        # Ports we picked can be taken before the server binds them: then pick again.
        for attempts_left in reversed(range(3 if self._want[0] == 0 and self._want[1] in (0, None) else 1)):
            self.port = self._want[0] or free_port()
            self.tls_port = None if self._want[1] is None else self._want[1] or free_port()
            try:
                self._spawn(script)
                self._await_serving(time.monotonic() + self.start_timeout)
                return self
            except PortTakenError:
                if not attempts_left:
                    raise
        return self

    def _prepare(self) -> Path:
        """Check it can start, make its directories and certificates; return zkServer.sh's path."""
        if self.pid is not None:
            raise ZooKeeperError(f"ZooKeeper in {self.base_dir} is already started (pid {self.pid})")
        if (script := find_zkserver()) is None:
            raise ZooKeeperError("ZooKeeper is not installed (no bin/zkServer.sh in "
                                 f"{', '.join(ZK_HOME_CANDIDATES)}): run `python3 {__file__} install`")
        (self.base_dir / "data").mkdir(parents=True, exist_ok=True)
        if self._want[1] is not None:
            make_certificates(self.tls_dir)
        return script

    def _ports(self) -> list[int]:
        """Every port the server will listen on (checked free before it is launched)."""
        return [p for p in (self.port, self.tls_port) if p is not None]

    def _check_ports(self, log: str) -> None:
        taken = [p for p in self._ports() if _port_in_use(p)]
        if taken or "Address already in use" in log:
            where = " and ".join(f"{LOOPBACK}:{p}" for p in taken) or "one of its ports"
            raise PortTakenError(
                f"cannot start ZooKeeper in {self.base_dir}: {where} is already in use (another "
                "ZooKeeper? see `ss -ltnp`): choose another port, or 0 for a free one"
                + (f". Server log {self.log_path}:\n{log}" if log else ""))

    def _spawn(self, script: Path) -> None:
        """Write zoo.cfg and launch the JVM on the current ports, without waiting for it."""
        self._check_ports("")  # else srvr could be answered by the server holding the port
        self.config_path.write_text("\n".join(self._config_lines()) + "\n")
        with open(self.log_path, "wb") as log:  # this run's log only
            self._proc = subprocess.Popen(
                [str(script), "start-foreground", str(self.config_path)],
                cwd=self.base_dir, env=self._environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
        self.pid = self._proc.pid  # zkServer.sh start-foreground execs java: the JVM's pid

    def _await_serving(self, deadline: float) -> None:
        """Wait until the spawned server serves; else stop it and raise ZooKeeperError."""
        assert self._proc is not None, "_spawn first"
        timeout = max(0.0, deadline - time.monotonic())
        try:
            while (code := self._proc.poll()) is None:
                if (problem := self._not_ready_reason()) is None:
                    return
                if time.monotonic() > deadline:
                    raise ZooKeeperError(
                        f"ZooKeeper (pid {self.pid}) did not serve within {timeout:.0f}s: "
                        f"{problem}. Server log {self.log_path}:\n{self.log_tail()}")
                time.sleep(POLL)
            self._check_ports(self.log_tail())
            raise ZooKeeperError(f"ZooKeeper exited with code {code} before serving. "
                                 f"Server log {self.log_path}:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _not_ready_reason(self) -> str | None:
        """None when the server serves on every port, else what is still wrong."""
        try:
            answer = four_letter(self.port, "srvr", timeout=1.0)
        except OSError as exc:
            return f"srvr on {self.plain_hosts}: {exc}"
        if "Mode:" not in answer:
            return f"srvr on {self.plain_hosts} answered without a Mode: line: {answer.strip()!r}"
        if self.tls_port is not None:
            try:
                tls_handshake(self.tls_port, self.ca or "", self.cert or "", self.key or "")
            except OSError as exc:  # ssl.SSLError is an OSError
                return f"TLS handshake with {self.tls_hosts}: {exc}"
        return None

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the server, SIGKILL it after timeout; stopping a stopped server does nothing."""
        if self.pid is not None:
            stop_pid(self.pid, timeout)
        if self._proc is not None:
            self._proc.wait(timeout=timeout)  # reap it
        self._proc, self.pid = None, None


def runs_config(pid: Any, config: str) -> bool:
    """True when pid is a live ZooKeeper started with this zoo.cfg (a recycled pid does not count)."""
    try:
        argv = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, TypeError, ValueError):
        return False
    ours = {b"org.apache.zookeeper.server.quorum.QuorumPeerMain", config.encode()} <= set(argv)
    return ours and pid_alive(int(pid))


def _running_state(base_dir: Path) -> dict[str, Any] | None:
    """zk.json's content when the server it describes is running, else None."""
    try:
        state: dict[str, Any] = json.loads((base_dir / "zk.json").read_text())
        return state if runs_config(state["pid"], state["config"]) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="apt-get install zookeeper, java, openssl if missing")
    inst.add_argument("--also", nargs="*", default=[], metavar="PKG", help="more Debian packages")
    for name in ("start", "stop", "status"):
        cmd = sub.add_parser(name, help={"start": "start a server, or say it runs", "stop": "stop it",
                                         "status": "show it (exit code 3: not running)"}[name])
        cmd.add_argument("--dir", required=True, type=Path, help="state directory: data, certs, log")
        if name == "start":
            cmd.add_argument("--port", type=int, default=0, help="plain port (default 0: a free one)")
            cmd.add_argument("--tls-port", type=int, help="TLS port, 0: a free one (default: no TLS)")
            cmd.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds to wait")
    import zkensemble  # here: it imports this module
    zkensemble.add_cli(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "ensemble":
            return zkensemble.cli(args)
        if args.command == "install":
            installed = install(args.also)
            print(f"installed: {' '.join(installed)}" if installed else "nothing to install")
            return 0
        base_dir: Path = args.dir.resolve()
        state = _running_state(base_dir)
        if args.command == "start" and state:
            print(f"already running (pid {state['pid']}); to change ports, stop it", file=sys.stderr)
            print(json.dumps(state, indent=2))
        elif args.command == "start":
            server = ZooKeeperServer(base_dir, args.port, args.tls_port, args.timeout,
                                     die_with_parent=False)  # it outlives this command
            server.start()
            try:
                (base_dir / "zk.json").write_text(json.dumps(server.info(), indent=2) + "\n")
            except BaseException:  # a server whose pid is nowhere recorded must not run on
                server.stop()
                raise
            print(json.dumps(server.info(), indent=2))
        elif args.command == "stop":
            if state:
                stop_pid(state["pid"])
            print(f"stopped pid {state['pid']}" if state else "not running")
            (base_dir / "zk.json").unlink(missing_ok=True)
        elif state:
            print(json.dumps(state, indent=2))
            print(four_letter(state["port"]).strip())
        else:
            print("not running")
            return 3
        return 0
    except (ZooKeeperError, OSError) as exc:
        print(f"zookeeper.py {args.command}: error: {exc}", file=sys.stderr)
        return 1


def __getattr__(name: str) -> Any:
    """zookeeper.ZooKeeperEnsemble, from tools/zkensemble.py (imported on first use: it imports us)."""
    if name in ("ZooKeeperEnsemble", "EnsembleMember"):
        import zkensemble
        return getattr(zkensemble, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.modules.setdefault("zookeeper", sys.modules[__name__])  # zkensemble's `import zookeeper`: this one
    sys.exit(main())
