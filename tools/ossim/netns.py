"""Small wrappers around ip(8), sshd files and process killing used by the real nodes."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time


def run(cmd: list[str], check: bool = True, quiet: bool = False) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def batch(namespace: str, lines: list[str]) -> None:
    """Run several ip commands inside a namespace with one exec."""
    proc = subprocess.run(["ip", "-n", namespace, "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip -n {namespace} -batch failed: {proc.stderr.strip()}")


def preflight(sshd: str) -> list[str]:
    """What is missing for real nodes, worded so a person knows what to do."""
    problems = []
    if os.geteuid() != 0:
        problems.append("they need root (network namespaces, a bridge, sshd); run as root")
    if not os.path.exists(sshd):
        problems.append(f"{sshd} is missing; install it with `apt-get install -y openssh-server`")
    for tool in ("ip", "unshare", "ssh-keygen"):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` is not on PATH (iproute2, util-linux, openssh-client)")
    return problems


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for line in run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        token = line.split()[0] if line.split() else ""
        if token in ("local", "broadcast", "unreachable", "blackhole", "prohibit", "throw"):
            token = line.split()[1]
        if token == "default":
            continue
        try:
            used.append(ipaddress.ip_network(token, strict=False))
        except ValueError:
            continue
    return used  # type: ignore[return-value]


def free_slash16() -> str:
    """A 10.x.0.0/16 that nothing on this machine uses yet."""
    used = _networks_in_use()
    for second in range(200, 255):
        candidate = ipaddress.ip_network(f"10.{second}.0.0/16")
        if not any(candidate.overlaps(net) for net in used):
            return str(candidate)
    raise RuntimeError("no free 10.x.0.0/16 (x in 200-254) on this machine; pass real_cidr explicitly")


def mac_for(address: str) -> str:
    """A fixed, locally administered MAC for an IPv4 address: 02:00 and the address's four bytes.

    An address that comes back (a server deleted and the next one created on its address) comes
    back with the same MAC, so the neighbour (ARP) entries that outlived the old node stay true.
    With random MACs the host kept sending to the gone node's MAC until its REACHABLE entry timed
    out (15-45 s): sshd 'did not listen within 15s', keyscans hung.
    """
    return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def forget_neighbour(bridge: str, address: str) -> None:
    """Drop the host's neighbour entry for an address that leaves its node (a floating IP may move)."""
    run(["ip", "neigh", "flush", "to", address, "dev", bridge], check=False)


def write_sshd_files(workdir: str, host_key: str, keys: list[str]) -> str:
    """Write sshd_config and authorized_keys for one node; return the config path."""
    authorized = os.path.join(workdir, "authorized_keys")
    with open(authorized, "w") as fh:
        fh.write("".join(k.strip() + "\n" for k in keys if k.strip()))
    config = os.path.join(workdir, "sshd_config")
    # Listening on every address is safe here: inside the namespace only the node's own addresses exist,
    # and a floating IP attached later must be reachable too.
    with open(config, "w") as fh:
        fh.write(f"""ListenAddress 0.0.0.0:22
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
LogLevel ERROR
Subsystem sftp internal-sftp
""")
    return config


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_sshd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"sshd" in fh.read()
    except OSError:
        return False


def stop_sshd(process: subprocess.Popen[bytes] | None, pid_file: str) -> None:
    """Kill sshd by its PidFile (then by the Popen handle) and reap it."""
    pids = set()
    try:
        with open(pid_file) as fh:
            pids.add(int(fh.read().strip()))
    except (OSError, ValueError):
        pass
    if process is not None and process.poll() is None:
        pids.add(process.pid)
    for pid in pids:
        if _is_sshd(pid) or (process is not None and pid == process.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    if process is not None:
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=2)


def kill_namespace_pids(namespace: str) -> None:
    """Kill what still runs inside (ssh sessions); `ip netns del` would leave it running."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        pids = [int(p) for p in run(["ip", "netns", "pids", namespace], check=False).split() if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)  # the kernel needs a moment to reap; re-list rather than assume


def tail(path: str, limit: int = 400) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()[-limit:].strip() or "(no output)"
    except OSError:
        return "(no log)"


def cleanup_stale(root: str) -> None:
    """Remove bridges, namespaces and sshds left by simulators whose process died without cleaning up."""
    for sim_id in os.listdir(root):
        folder = os.path.join(root, sim_id)
        if sim_id.startswith(".") or not os.path.isdir(folder):
            continue
        try:
            with open(os.path.join(folder, "owner")) as fh:
                pid_text, bridge = fh.read().split()
        except (OSError, ValueError):
            continue
        if _alive(int(pid_text)):
            continue
        for entry in os.listdir(folder):
            pid_file = os.path.join(folder, entry, "sshd.pid")
            if os.path.exists(pid_file):
                stop_sshd(None, pid_file)
        for namespace in run(["ip", "netns", "list"], check=False).split():
            if namespace.startswith(f"ossim-{sim_id}-"):
                kill_namespace_pids(namespace)
                run(["ip", "netns", "del", namespace], check=False)
        run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(folder, ignore_errors=True)
