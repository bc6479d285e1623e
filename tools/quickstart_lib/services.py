"""The three services of the quickstart: ZooKeeper (tools/zookeeper.py), the simulator (tools/ossim), the launcher."""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys

from .procs import (
    QuickstartError,
    alive,
    port_in_use,
    running_pid,
    start_detached,
    stop,
    tail,
    wait_for,
)
from .settings import CLOUD, LOGGING, REPO, TEMPLATE, VENV, Settings

ZK_TOOL = REPO / "tools" / "zookeeper.py"
OSSIM = REPO / "tools" / "ossim"
SIM_START_TIMEOUT = 30.0  # seconds: real nodes need a bridge first
SIM_STOP_TIMEOUT = 30.0  # tearing down real nodes is quick; a stuck one gets SIGKILL
ZK_STOP_TIMEOUT = 10.0
LAUNCHER_STOP_TIMEOUT = 40.0  # it takes up to 30 s to hand its work back


def venv_bin(name: str) -> str:
    return str(VENV / "bin" / name)


def check_ports(s: Settings, zk: bool, sim: bool) -> None:
    """Before starting anything: fail if a port we are about to listen on is taken, naming every such port."""
    wanted = [(s.zk_port, "ZooKeeper plain port", "--zk-port or QUICKSTART_ZK_PORT"),
              (s.zk_tls_port, "ZooKeeper TLS port", "--zk-tls-port or QUICKSTART_ZK_TLS_PORT")] if zk else []
    wanted += [(s.sim_port, "OpenStack simulator", "--sim-port or QUICKSTART_SIM_PORT")] if sim else []
    taken = [(port, what, option) for port, what, option in wanted if port_in_use(port)]
    if taken:  # all of them at once: fixing one at a time and re-running is tedious
        raise QuickstartError("\n".join(
            f"127.0.0.1:{port} ({what}) is already in use by another process (see `ss -ltnp "
            f"'sport = :{port}'`): stop it, or choose another port with {option}" for port, what, option in taken))


# -- ZooKeeper ------------------------------------------------------------------------------------

def zk_state(s: Settings) -> dict | None:
    """What `zookeeper.py status` reports for our ZooKeeper (pid, ports, cert paths), None when stopped."""
    out = subprocess.run([sys.executable, str(ZK_TOOL), "status", "--dir", str(s.zk_dir)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        return None
    state, _ = json.JSONDecoder().raw_decode(out.stdout)  # the JSON comes first, then `srvr`
    return state


def start_zk(s: Settings) -> dict:
    """Start ZooKeeper with TLS on the fixed ports, with empty data: the simulator it pairs with starts empty too."""
    shutil.rmtree(s.zk_dir / "data", ignore_errors=True)
    out = subprocess.run([sys.executable, str(ZK_TOOL), "start", "--dir", str(s.zk_dir),
                          "--port", str(s.zk_port), "--tls-port", str(s.zk_tls_port)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise QuickstartError(f"ZooKeeper did not start: {out.stderr.strip()}")
    return json.loads(out.stdout)


def stop_zk(s: Settings) -> str:
    state = zk_state(s)
    out = subprocess.run([sys.executable, str(ZK_TOOL), "stop", "--dir", str(s.zk_dir)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise QuickstartError(f"stopping ZooKeeper failed: {out.stderr.strip()}")
    if state:
        # `zookeeper.py stop` returns when the JVM's main thread is gone; its ports close a moment later.
        wait_for(lambda: not alive(state["pid"]), ZK_STOP_TIMEOUT, f"ZooKeeper (pid {state['pid']}) to exit")
    return out.stdout.strip()


# -- the OpenStack simulator ------------------------------------------------------------------------

def sim_pid(s: Settings) -> int | None:
    return running_pid(s.pid_file("ossim"))


def start_sim(s: Settings) -> int:
    """Start tools/ossim (real nodes when root) and wait until it writes clouds.yaml and listens."""
    s.clouds_yaml.unlink(missing_ok=True)
    argv = [venv_bin("python"), str(OSSIM), "--port", str(s.sim_port),
            "--clouds-yaml", str(s.clouds_yaml), "--cloud-name", CLOUD,
            "--authorized-key", f"{s.key}.pub", "--boot-delay", "0", "--delete-delay", "0"]
    if s.real_nodes:
        argv.append("--real-nodes")
    log = s.log("ossim")
    pid = start_detached(argv, log, s.pid_file("ossim"), marker=str(s.clouds_yaml), cwd=REPO)

    def exited() -> str | None:
        if running_pid(s.pid_file("ossim")) is None:
            return f"it exited; log {log}:\n{tail(log)}"
        return None

    wait_for(lambda: "ossim: listening" in log.read_text(errors="replace"), SIM_START_TIMEOUT,
             f"the OpenStack simulator (pid {pid}) did not start", exited)
    return pid


# -- the launcher -----------------------------------------------------------------------------------

def write_config(s: Settings, zk: dict) -> None:
    """Fill etc/quickstart/nodepool.yaml's placeholders into <state dir>/nodepool.yaml."""
    values = {"zk_tls_port": zk["tls_port"], "zk_cert": zk["cert"], "zk_key": zk["key"], "zk_ca": zk["ca"],
              "cloud_name": CLOUD, "host_key_checking": "true" if s.real_nodes else "false",
              "web_port": s.web_port}
    try:
        text = string.Template(TEMPLATE.read_text()).substitute(values)
    except (KeyError, ValueError) as exc:
        raise QuickstartError(f"{TEMPLATE}: placeholder {exc} cannot be filled "
                              f"(known: {', '.join(sorted(values))})") from None
    if s.config.is_file() and s.config.read_text() == text:
        return  # unchanged: a running launcher need not notice a new mtime
    s.config.write_text(text)
    check = subprocess.run([venv_bin("nodepool-launcher"), "-c", str(s.config), "--check-config"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check.returncode != 0:
        raise QuickstartError(f"{s.config} (from {TEMPLATE}) is not valid:\n{check.stdout}{check.stderr}")


def launcher_pid(s: Settings) -> int | None:
    return running_pid(s.pid_file("launcher"))


def start_launcher(s: Settings) -> int:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(s.clouds_yaml), "PYTHONUNBUFFERED": "1"}
    argv = [venv_bin("nodepool-launcher"), "-f", "-c", str(s.config), "-l", str(LOGGING)]
    return start_detached(argv, s.log("launcher"), s.pid_file("launcher"), marker=str(s.config),
                          env=env, cwd=s.state_dir)


def any_running(s: Settings) -> bool:
    return bool(launcher_pid(s) or sim_pid(s) or zk_state(s))


# -- stopping, in order -----------------------------------------------------------------------------

def stop_all(s: Settings, say) -> None:
    """Launcher first (it hands its work back), then the simulator (it removes the real nodes), then ZooKeeper."""
    for name, what, timeout in (("launcher", "nodepool-launcher", LAUNCHER_STOP_TIMEOUT),
                                ("ossim", "the OpenStack simulator", SIM_STOP_TIMEOUT)):
        pid = stop(s.pid_file(name), timeout)
        say(f"{what}: " + (f"stopped (pid {pid})" if pid else "not running"))
    say(f"ZooKeeper: {stop_zk(s)}")
    # The simulator forgot its servers: the held node and its known_hosts entry are gone with it.
    for path in (s.node_file, s.known_hosts):
        path.unlink(missing_ok=True)
