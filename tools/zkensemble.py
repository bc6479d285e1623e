"""A local ZooKeeper ensemble on 127.0.0.1: members are ZooKeeperServers with quorum lines (zookeeper.py's CLI)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from zookeeper import (
    LOOPBACK,
    POLL,
    START_TIMEOUT,
    STOP_TIMEOUT,
    PortTakenError,
    ZooKeeperError,
    ZooKeeperServer,
    find_zkserver,
    four_letter,
    free_port,
    make_certificates,
    pid_alive,
    runs_config,
    stop_pid,
)

# tickTime=500 comes from ZooKeeperServer's lines (sessions of 1-60 s). A follower may take
# initLimit ticks (5 s) to sync with a new leader and must hear from it every syncLimit ticks
# (2.5 s); a connection to a peer that does not answer (paused) gives up after 1 s, not 5.
# standaloneEnabled=false: an ensemble of one is a leader too, not a standalone server.
QUORUM_LINES = ("initLimit=10", "syncLimit=5", "cnxTimeout=1000", "standaloneEnabled=false")
SERVING_MODES = ("leader", "follower")
STATE_FILE = "ensemble.json"


def distinct_free_ports(count: int) -> list[int]:
    """count different ports that nothing is bound to on 127.0.0.1 right now."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def srvr_mode(port: int, timeout: float = 1.0) -> str | None:
    """The Mode: that srvr on 127.0.0.1:port reports (leader, follower, standalone), None if none."""
    try:
        answer = four_letter(port, "srvr", timeout=timeout)
    except OSError:
        return None
    for line in answer.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class EnsembleMember(ZooKeeperServer):
    """One server of a ZooKeeperEnsemble: a ZooKeeperServer with a myid and server.N lines."""

    def __init__(self, base_dir: Path, myid: int, tls_dir: Path, tls: bool,
                 start_timeout: float, die_with_parent: bool) -> None:
        super().__init__(base_dir, port=0, tls_port=0 if tls else None, start_timeout=start_timeout,
                         die_with_parent=die_with_parent, tls_dir=tls_dir)
        self.myid = myid
        self.quorum_port = self.election_port = 0
        self.servers: list[str] = []  # every member's server.N=127.0.0.1:QUORUM:ELECTION line

    def assign(self, port: int, tls_port: int | None, quorum_port: int, election_port: int,
               servers: list[str]) -> None:
        """Fix this member's ports: every later start (a restart too) uses the same ones."""
        self._want = (port, tls_port)
        self.port, self.tls_port, self.quorum_port, self.election_port = (
            port, tls_port, quorum_port, election_port)
        self.servers = servers

    def launch(self, script: Path) -> None:
        """Launch the JVM without waiting: a member serves only once a quorum is up."""
        self._prepare()
        self._spawn(script)

    def await_serving(self, deadline: float) -> None:
        """Wait until it serves as leader or follower; else stop it and raise ZooKeeperError."""
        self._await_serving(deadline)

    def _prepare(self) -> Path:
        script = super()._prepare()
        (self.base_dir / "data" / "myid").write_text(f"{self.myid}\n")
        return script

    def _config_lines(self) -> list[str]:
        return [*super()._config_lines(), *QUORUM_LINES, *self.servers]

    def _ports(self) -> list[int]:
        return [*super()._ports(), self.quorum_port, self.election_port]

    def mode(self) -> str | None:
        """What srvr says this member is (leader, follower), None when it does not serve."""
        return srvr_mode(self.port) if self.pid is not None else None

    def _not_ready_reason(self) -> str | None:
        if (problem := super()._not_ready_reason()) is not None:
            return problem
        mode = self.mode()
        return None if mode in SERVING_MODES else f"srvr on {self.plain_hosts} says Mode: {mode}"

    def signal(self, sig: int) -> None:
        if self.pid is not None:
            os.kill(self.pid, sig)

    def wait_gone(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait until the process has ended (after a signal), then forget it: it can start again."""
        deadline = time.monotonic() + timeout
        while self.pid is not None and pid_alive(self.pid):
            if time.monotonic() > deadline:
                raise ZooKeeperError(f"ZooKeeper member {self.myid} (pid {self.pid}) still runs "
                                     f"{timeout:.0f}s after it was signalled")
            time.sleep(POLL / 2)
        if self._proc is not None:
            self._proc.wait(timeout=timeout)  # reap it
        self._proc, self.pid = None, None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "myid": self.myid, "quorum_port": self.quorum_port,
                "election_port": self.election_port}


class ZooKeeperEnsemble:
    """size ZooKeeper servers on 127.0.0.1 forming one quorum; data, certificates and logs in base_dir.

    base_dir/serverN/ holds member N's zoo.cfg, data (with myid) and zookeeper.log; base_dir/tls/
    the certificates all members share. Every port (client, TLS, quorum, election) is a free one,
    picked at start() and kept for restarts of a member.
    """

    def __init__(self, base_dir: str | os.PathLike[str], size: int = 3, tls: bool = True, *,
                 die_with_parent: bool = True) -> None:
        if size < 1:
            raise ValueError(f"an ensemble needs at least one server, got size={size}")
        self.base_dir = Path(base_dir).resolve()
        self.size, self.tls = size, tls
        self.tls_dir = self.base_dir / "tls"
        self.members = [EnsembleMember(self.base_dir / f"server{n}", n, self.tls_dir, tls,
                                       START_TIMEOUT, die_with_parent) for n in range(1, size + 1)]
        self.paused: set[int] = set()

    @property
    def plain_hosts(self) -> str:
        return ",".join(m.plain_hosts for m in self.members)

    @property
    def tls_hosts(self) -> str:
        if not self.tls:
            raise ZooKeeperError(f"the ensemble in {self.base_dir} has no TLS ports (tls=False)")
        return ",".join(m.tls_hosts for m in self.members)

    @property
    def certs(self) -> dict[str, str | None]:
        """The client side of TLS: CA, client certificate and key paths (None without TLS)."""
        first = self.members[0]
        return {"ca": first.ca, "cert": first.cert, "key": first.key}

    @property
    def pids(self) -> list[int | None]:
        return [m.pid for m in self.members]

    def info(self) -> dict[str, Any]:
        """What a client needs (the CLI writes it to ensemble.json)."""
        return {"hosts": self.plain_hosts, "tls_hosts": self.tls_hosts if self.tls else None,
                "certs": self.certs, "pids": self.pids, "members": [m.info() for m in self.members]}

    def _assign_ports(self) -> None:
        ports = iter(distinct_free_ports(4 * self.size))
        chosen = [(next(ports), next(ports) if self.tls else None, next(ports), next(ports))
                  for _ in self.members]
        servers = [f"server.{m.myid}={LOOPBACK}:{qp}:{ep}"
                   for m, (_, _, qp, ep) in zip(self.members, chosen)]
        for member, (port, tls_port, qp, ep) in zip(self.members, chosen):
            member.assign(port, tls_port, qp, ep, servers)

    def start(self, timeout: float = START_TIMEOUT) -> ZooKeeperEnsemble:
        """Start every member; return once each serves as leader or follower, else raise and stop all."""
        if any(pid is not None for pid in self.pids):
            raise ZooKeeperError(f"the ensemble in {self.base_dir} is already started (pids {self.pids})")
        if (script := find_zkserver()) is None:
            raise ZooKeeperError("ZooKeeper is not installed: run `python3 tools/zookeeper.py install`")
        if self.tls:
            make_certificates(self.tls_dir)
        for attempts_left in reversed(range(3)):  # a port picked can be taken before it is bound
            self._assign_ports()
            try:
                for member in self.members:  # all at once: none serves before a quorum is up
                    member.launch(script)
                deadline = time.monotonic() + timeout
                for member in self.members:
                    member.await_serving(deadline)
                return self
            except PortTakenError:
                self.stop()
                if not attempts_left:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def leader(self, timeout: float = 10.0) -> int:
        """The index in members of the member whose srvr says Mode: leader (waits for an election)."""
        deadline = time.monotonic() + timeout
        while True:
            modes = [None if i in self.paused else m.mode() for i, m in enumerate(self.members)]
            if "leader" in modes:
                return modes.index("leader")
            if time.monotonic() > deadline:
                raise ZooKeeperError(f"no member of the ensemble in {self.base_dir} is the leader "
                                     f"after {timeout:.0f}s; srvr modes: {modes}")
            time.sleep(POLL)

    def kill(self, i: int, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> None:
        """Send member i a signal that ends it (SIGKILL by default) and wait until it is gone."""
        member = self.members[i]
        member.signal(sig)
        if i in self.paused and sig != signal.SIGKILL:
            member.signal(signal.SIGCONT)  # a stopped process acts on no other signal
        self.paused.discard(i)
        member.wait_gone(timeout)

    def start_member(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Start member i again (after kill) on its data and ports; return once it serves."""
        member = self.members[i]
        if member.pid is not None and not pid_alive(member.pid):
            member.wait_gone()  # it died on its own
        member.start_timeout = timeout
        member.start()

    def pause(self, i: int) -> None:
        """SIGSTOP member i: its connections stay open but nothing answers (a hung server)."""
        self.members[i].signal(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """SIGCONT member i and wait until it serves again (it may have to rejoin the quorum)."""
        self.members[i].signal(signal.SIGCONT)
        self.paused.discard(i)
        self.wait_serving([i], timeout)

    def wait_serving(self, indexes: list[int] | None = None, timeout: float = START_TIMEOUT) -> None:
        """Wait until the given members (all by default) serve as leader or follower."""
        indexes = list(range(self.size)) if indexes is None else indexes
        deadline = time.monotonic() + timeout
        while (modes := {i: self.members[i].mode() for i in indexes}) and \
                not all(mode in SERVING_MODES for mode in modes.values()):
            if time.monotonic() > deadline:
                raise ZooKeeperError(f"members of the ensemble in {self.base_dir} do not serve "
                                     f"after {timeout:.0f}s; srvr modes: {modes}")
            time.sleep(POLL)

    def restore(self, timeout: float = START_TIMEOUT) -> None:
        """Undo what a test did: resume paused members, start killed ones, wait until all serve."""
        for i in sorted(self.paused):
            self.members[i].signal(signal.SIGCONT)
        self.paused.clear()
        dead = [m for m in self.members if m.pid is None or not pid_alive(m.pid)]
        if dead and (script := find_zkserver()) is not None:
            for member in dead:  # all before waiting: with all of them gone, none serves alone
                if member.pid is not None:
                    member.wait_gone()  # it died on its own
                member.launch(script)
            deadline = time.monotonic() + timeout
            for member in dead:
                member.await_serving(deadline)
        self.wait_serving(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every member by pid (SIGTERM, SIGKILL after timeout); a stopped ensemble stays so."""
        for i in sorted(self.paused):
            self.members[i].signal(signal.SIGCONT)
        self.paused.clear()
        for member in self.members:  # all at once, then wait for each
            if member.pid is not None:
                try:
                    member.signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for member in self.members:
            member.stop(timeout)

    def __enter__(self) -> ZooKeeperEnsemble:
        return self if any(pid is not None for pid in self.pids) else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def add_cli(sub: Any) -> None:
    """The `ensemble start|stop|status` subcommands, under tools/zookeeper.py's parser."""
    ens = sub.add_parser("ensemble", help="a local 3-server ensemble: start, stop, status")
    actions = ens.add_subparsers(dest="action", required=True)
    for name, text in (("start", "start an ensemble, or say it runs"), ("stop", "stop every member"),
                       ("status", "show it and each member's srvr Mode (exit code 3: not running)")):
        cmd = actions.add_parser(name, help=text)
        cmd.add_argument("--dir", required=True, type=Path, help="state directory: data, certs, logs")
        if name == "start":
            cmd.add_argument("--size", type=int, default=3, help="number of servers (default 3)")
            cmd.add_argument("--no-tls", dest="tls", action="store_false", help="no TLS client ports")
            cmd.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds to wait")


def _recorded(base_dir: Path) -> tuple[dict[str, Any] | None, list[int]]:
    """ensemble.json's content (None if missing) and the pids in it that still run our members."""
    try:
        state: dict[str, Any] = json.loads((base_dir / STATE_FILE).read_text())
        members = list(state["members"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, []
    return state, [m["pid"] for m in members if runs_config(m.get("pid"), str(m.get("config")))]


def cli(args: argparse.Namespace) -> int:
    """Run `zookeeper.py ensemble ACTION --dir DIR`; errors are zookeeper.main's to report."""
    base_dir: Path = args.dir.resolve()
    state, running = _recorded(base_dir)
    if args.action == "start" and running:
        if len(running) < len(state["members"]):  # type: ignore[index]
            raise ZooKeeperError(f"only pids {running} of the ensemble in {base_dir} run: "
                                 f"run `zookeeper.py ensemble stop --dir {args.dir}` first")
        print(f"already running (pids {running}); to change it, stop it", file=sys.stderr)
        print(json.dumps(state, indent=2))
    elif args.action == "start":
        ensemble = ZooKeeperEnsemble(base_dir, args.size, args.tls, die_with_parent=False)
        ensemble.start(args.timeout)
        try:
            (base_dir / STATE_FILE).write_text(json.dumps(ensemble.info(), indent=2) + "\n")
        except BaseException:  # members whose pids are nowhere recorded must not run on
            ensemble.stop()
            raise
        print(json.dumps(ensemble.info(), indent=2))
    elif args.action == "stop":
        for pid in running:
            os.kill(pid, signal.SIGTERM)  # all at once, then wait for each
        for pid in running:
            stop_pid(pid)
        print(f"stopped pids {running}" if running else "not running")
        (base_dir / STATE_FILE).unlink(missing_ok=True)
    elif running:
        print(json.dumps(state, indent=2))
        for member in state["members"]:  # type: ignore[index]
            print(f"server.{member['myid']} {LOOPBACK}:{member['port']} pid {member['pid']}: "
                  f"Mode: {srvr_mode(member['port'])}")
    else:
        print("not running")
        return 3
    return 0
