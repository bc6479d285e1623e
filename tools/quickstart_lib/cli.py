"""The commands of tools/quickstart: start (the default), stop and status."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import services
from .procs import STOP_SIGNALS, QuickstartError, alive, tail
from .settings import (
    HOLD_REASON,
    PROVIDER,
    REPO,
    Settings,
    SettingsError,
    add_options,
    resolve,
)

COMMANDS = ("start", "stop", "status")
STEPS = 8
REQUEST_TIMEOUT = 60.0  # seconds `nodepool request` waits; nodes boot in well under a second here


def say(text: str) -> None:
    print(f"quickstart: {text}", flush=True)


def step(number: int, text: str) -> None:
    say(f"[{number}/{STEPS}] {text}")


def show(path: Path | str) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


def here_command(s: Settings, command: str) -> str:
    """`tools/quickstart <command>` with the options that find this state directory."""
    tool = show(REPO / "tools" / "quickstart")
    extra = "" if s.state_dir == (REPO / ".quickstart").resolve() else f" --state-dir {show(s.state_dir)}"
    return f"{tool} {command}{extra}"


def nodepool_argv(s: Settings, *args: str) -> list[str]:
    return [services.venv_bin("nodepool"), "-c", str(s.config), *args]


def nodepool_command(s: Settings, *args: str) -> str:
    return " ".join([show(services.venv_bin("nodepool")), "-c", show(s.config), *args])


# -- start ------------------------------------------------------------------------------------------

def run_setup(s: Settings) -> None:
    """tools/run-tests' own setup (Debian packages, .venv, pip install), via its --setup-only."""
    log = s.log("setup")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(REPO / "tools" / "run-tests"), "--setup-only"], cwd=REPO, text=True,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        for line in proc.stderr:
            print("    " + line.rstrip(), flush=True)
            out.write(line)
            out.flush()
    if proc.wait() != 0:
        raise QuickstartError(f"setup failed: `tools/run-tests --setup-only` exited with {proc.returncode} "
                              f"(its output is above and in {show(log)})")


def make_key(s: Settings) -> None:
    if s.key.is_file() and Path(f"{s.key}.pub").is_file():
        say(f"      {show(s.key)} exists")
        return
    s.key.unlink(missing_ok=True)
    result = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nodepool-quickstart",
                             "-f", str(s.key)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise QuickstartError(f"ssh-keygen failed: {result.stderr.strip()}")
    say(f"      made {show(s.key)} and {show(s.key)}.pub")


def held_node(s: Settings) -> dict | None:
    """The newest node of the label held for the quickstart, from `nodepool list --json`."""
    out = subprocess.run(nodepool_argv(s, "list", "--json"), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise QuickstartError(f"`{nodepool_command(s, 'list', '--json')}` failed: {out.stderr.strip()}")
    held = [n for n in json.loads(out.stdout) if n.get("state") == "hold" and n.get("comment") == HOLD_REASON
            and n.get("provider") == PROVIDER and s.label in (n.get("type") or [])]
    return max(held, key=lambda n: n["id"]) if held else None


def request_node(s: Settings) -> dict:
    node = held_node(s)
    if node is not None:
        say(f"      node {node['id']} is already held for you (from an earlier start); not requesting another")
        return node
    cmd = nodepool_argv(s, "request", s.label, "--hold", "--reason", HOLD_REASON, "--timeout", f"{REQUEST_TIMEOUT:g}")
    say(f"      $ {nodepool_command(s, *cmd[3:])}")
    if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
        raise QuickstartError(f"`nodepool request {s.label}` failed (see above and {show(s.log('launcher'))})")
    node = held_node(s)
    if node is None:
        raise QuickstartError("`nodepool request` succeeded but no node is held for the quickstart")
    return node


def record_node(s: Settings, node: dict) -> None:
    """node.json for scripts and tests; known_hosts from the keys the launcher scanned."""
    s.node_file.write_text(json.dumps({k: node.get(k) for k in (
        "id", "type", "hostname", "interface_ip", "username", "connection_port", "external_id",
        "host_keys")}, indent=2) + "\n")
    keys = node.get("host_keys") or []
    s.known_hosts.write_text("".join(f"{node['interface_ip']} {key}\n" for key in keys))


def ssh_command(s: Settings, node: dict) -> str:
    if node.get("host_keys"):
        check = f"-o UserKnownHostsFile={show(s.known_hosts)} -o StrictHostKeyChecking=yes"
    else:
        check = "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
    port = "" if node.get("connection_port", 22) == 22 else f" -p {node['connection_port']}"
    return f"ssh -i {show(s.key)} {check}{port} {node['username']}@{node['interface_ip']}"


def wait_ready(s: Settings, launcher_pid: int, since: float | None) -> dict:
    result = s.state_dir / "ready.json"
    result.unlink(missing_ok=True)
    argv = [services.venv_bin("python"), str(Path(__file__).with_name("waiter.py")), "--config", str(s.config),
            "--provider", PROVIDER, "--launcher-pid", str(launcher_pid), "--timeout", f"{s.timeout:g}",
            "--result", str(result)]
    if since is not None:
        argv += ["--since", repr(since)]
    code = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        log = s.log("launcher")
        raise QuickstartError(f"the launcher did not get ready; its log {show(log)} ends:\n{tail(log)}")
    return json.loads(result.read_text())


def start_services(s: Settings) -> tuple[dict, int, float | None]:
    """Steps 3-6; return ZooKeeper's state, the launcher's pid and when it started (None: it ran already)."""
    zk, sim, launcher = services.zk_state(s), services.sim_pid(s), services.launcher_pid(s)
    if not (zk and sim) and (zk or sim or launcher):
        # The simulator keeps its servers in memory only: ZooKeeper's nodes are true only together with it.
        say("some services run, some do not: stopping them to start all three afresh")
        services.stop_all(s, lambda text: say("      " + text))
        zk = sim = launcher = None
    services.check_ports(s, zk=not zk, sim=not sim)
    step(3, f"ZooKeeper on 127.0.0.1:{s.zk_port}, TLS on 127.0.0.1:{s.zk_tls_port} (tools/zookeeper.py)")
    if zk:
        say(f"      already running (pid {zk['pid']}, TLS port {zk['tls_port']})")
    else:
        zk = services.start_zk(s)
        say(f"      started (pid {zk['pid']}); log {show(zk['log'])}")
    why = "not root" if os.geteuid() != 0 else "--no-real-nodes"
    mode = "real nodes: each server a network namespace with its own sshd" if s.real_nodes else \
        f"no real nodes ({why}): servers have fake addresses nothing answers on"
    step(4, f"OpenStack simulator on 127.0.0.1:{s.sim_port}, {mode}")
    if sim:
        say(f"      already running (pid {sim})")
    else:
        sim = services.start_sim(s)
        say(f"      started (pid {sim}); log {show(s.log('ossim'))}; clouds.yaml {show(s.clouds_yaml)}")
        s.ports_file.write_text(json.dumps({"zk_port": s.zk_port, "zk_tls_port": s.zk_tls_port,
                                            "sim_port": s.sim_port, "real_nodes": s.real_nodes}) + "\n")
    step(5, f"launcher config {show(s.config)} from {show(services.TEMPLATE)}")
    services.write_config(s, zk)
    step(6, f"nodepool-launcher -f -c {show(s.config)} (OS_CLIENT_CONFIG_FILE={show(s.clouds_yaml)})")
    if launcher:
        say(f"      already running (pid {launcher})")
        return zk, launcher, None
    if s.log("launcher").is_file() and s.log("launcher").stat().st_size > 0:
        say(f"      its previous log is kept as {show(s.log('launcher'))}.1")
    since = time.time()
    launcher = services.start_launcher(s)
    say(f"      started (pid {launcher}); log {show(s.log('launcher'))}")
    return zk, launcher, since


def cmd_start(s: Settings, foreground: bool) -> int:
    started = time.monotonic()
    s.state_dir.mkdir(parents=True, exist_ok=True)
    say(f"state directory {show(s.state_dir)} (pids, logs, key, configs)")
    if s.setup:
        step(1, "Debian packages and .venv, as tools/run-tests sets them up (`tools/run-tests --setup-only`)")
        run_setup(s)
    else:
        step(1, "setup skipped (--no-setup)")
    step(2, f"ssh key pair for the nodes: {show(s.key)}")
    make_key(s)
    zk, launcher, since = start_services(s)
    step(7, "waiting for the launcher's pool workers and min-ready nodes")
    times = wait_ready(s, launcher, since)
    step(8, f"requesting a {s.label} node and holding it for you")
    node = request_node(s)
    record_node(s, node)
    print(flush=True)
    say(f"$ {nodepool_command(s, 'list')}")
    subprocess.run(nodepool_argv(s, "list"), stdin=subprocess.DEVNULL)
    print(flush=True)
    elapsed = time.monotonic() - started
    first = f"; first ready node {times['first_ready']:.1f}s after the launcher started" \
        if since is not None and "first_ready" in times else ""
    say(f"ready in {elapsed:.1f}s{first}.")
    if s.real_nodes:
        say(f"log in to node {node['id']} ({node.get('hostname')}):\n    {ssh_command(s, node)}")
    else:
        say(f"node {node['id']} has the fake address {node['interface_ip']}: nothing answers there. "
            "Run as root to get real nodes you can ssh into.")
    say(f"release the node (the launcher deletes it):\n    {nodepool_command(s, 'delete', node['id'])}")
    say(f"more: {nodepool_command(s, 'list | request-list | info ' + PROVIDER)}")
    say(f"web: http://127.0.0.1:{s.web_port}/node-list (and /ready, /request-list, /label-list)")
    say(f"logs: {show(s.log('launcher'))}, {show(s.log('ossim'))}, {show(zk['log'])}")
    if not foreground:
        say(f"everything keeps running; stop it all with:\n    {here_command(s, 'stop')}"
            f"    (status: {here_command(s, 'status')})")
        return 0
    say("running in the foreground: Ctrl-C stops everything")
    return watch(s)


def watch(s: Settings) -> int:
    """--foreground: wait for Ctrl-C (or SIGTERM); if a service dies first, say which and stop the rest."""
    zk = services.zk_state(s) or {}
    pids = {"nodepool-launcher": (services.launcher_pid(s), s.log("launcher")),
            "the OpenStack simulator": (services.sim_pid(s), s.log("ossim")),
            "ZooKeeper": (zk.get("pid"), s.zk_dir / "zookeeper.log")}
    while True:
        for what, (pid, log) in pids.items():
            if pid is None or not alive(pid):
                raise QuickstartError(f"{what} exited; its log {show(log)} ends:\n{tail(log)}")
        time.sleep(1.0)  # a person is watching: a second is soon enough to notice a death


# -- stop and status --------------------------------------------------------------------------------

def cmd_stop(s: Settings) -> int:
    say(f"stopping the services of {show(s.state_dir)}: the launcher, the simulator, ZooKeeper")
    services.stop_all(s, lambda text: say("  " + text))
    return 0


def recorded_sim_port(s: Settings) -> int:
    """The port the running simulator was started on (the options of `status` may differ)."""
    try:
        return int(json.loads(s.ports_file.read_text())["sim_port"])
    except (OSError, ValueError, KeyError):
        return s.sim_port


def cmd_status(s: Settings) -> int:
    zk, sim, launcher = services.zk_state(s), services.sim_pid(s), services.launcher_pid(s)
    rows = [("ZooKeeper", zk and zk["pid"], zk and f"127.0.0.1:{zk['port']}, TLS {zk['tls_port']}",
             s.zk_dir / "zookeeper.log"),
            ("OpenStack simulator", sim, f"127.0.0.1:{recorded_sim_port(s)}", s.log("ossim")),
            ("nodepool-launcher", launcher, "", s.log("launcher"))]
    say(f"state directory {show(s.state_dir)}")
    for what, pid, where, log in rows:
        state = f"running, pid {pid}" + (f", {where}" if where else "") if pid else "not running"
        say(f"  {what}: {state}; log {show(log)}")
    running = sum(1 for _, pid, _, _ in rows if pid)
    if running == len(rows):
        subprocess.run(nodepool_argv(s, "list"), stdin=subprocess.DEVNULL)
        if (node := held_node(s)) is not None:
            record_node(s, node)
            say(f"held node {node['id']}: {ssh_command(s, node)}")
        return 0
    return 3 if running == 0 else 1


# -- entry ------------------------------------------------------------------------------------------

def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tools/quickstart", description="ZooKeeper, the OpenStack simulator and nodepool-launcher on "
        "this machine, then a held node to ssh into. See doc/quickstart.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    start = sub.add_parser("start", help="start everything and request a node (the default command)")
    start.add_argument("--foreground", action="store_true", help="stay, and stop everything on Ctrl-C")
    start.add_argument("--label", default="debian-bookworm", help="the label to request (default %(default)s)")
    start.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for the launcher to get ready (default %(default)g)")
    start.add_argument("--no-real-nodes", action="store_true", help="fake nodes even as root")
    start.add_argument("--no-setup", action="store_true", help="skip the Debian packages and .venv step")
    sub.add_parser("stop", help="stop every process the quickstart started, by pid")
    sub.add_parser("status", help="what runs (exit 0 all, 1 some, 3 none)")
    for cmd in sub.choices.values():
        add_options(cmd)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["start", *argv]
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP stop a start like Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        s = resolve(args)
    except SettingsError as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "stop":
        return cmd_stop(s)
    if args.command == "status":
        return cmd_status(s)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    code = 1
    try:
        return cmd_start(s, args.foreground)
    except KeyboardInterrupt:
        print(flush=True)
        say("interrupted: stopping everything")
        code = 130
    except QuickstartError as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr, flush=True)
        say("stopping what runs, so nothing is left half-started")
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the stop short
        signal.signal(sig, signal.SIG_IGN)
    if services.any_running(s):
        services.stop_all(s, lambda text: say("  " + text))
    say(f"logs stay in {show(s.state_dir)}")
    return code
