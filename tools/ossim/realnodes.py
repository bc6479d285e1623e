"""Real nodes: one network namespace with its own sshd and hostname per ACTIVE server, on a private bridge."""

from __future__ import annotations

import concurrent.futures
import fcntl
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from . import netns
from .server_views import hostname_of

log = logging.getLogger("ossim.realnodes")
SSHD = "/usr/sbin/sshd"
STATE_ROOT = "/run/ossim"  # one folder per running simulator, so a crashed one can be cleaned up later
READY_TIMEOUT = 15.0  # seconds sshd gets to listen before the boot counts as failed


@dataclass
class Node:
    server_id: str
    name: str
    namespace: str
    veth: str
    ip: str
    workdir: str
    keys: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    error: str | None = None
    gone: bool = False
    torn_down: bool = False  # teardown requested: a boot still running stops early
    configured: bool = False  # addresses are in the namespace; later FIP changes go straight in
    extra: set[str] = field(default_factory=set)
    host_keys: list[str] = field(default_factory=list)


class RealNodes:
    """Owns the bridge, the namespaces and the sshd processes of one simulator."""

    def __init__(self, cidr: str | None, authorized_keys: tuple[str, ...], workers: int = 16) -> None:
        self.sim_id = secrets.token_hex(3)
        self.bridge = f"ossim{self.sim_id}"
        self.cidr = cidr
        self.authorized_keys = list(authorized_keys)
        self.nodes: dict[str, Node] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ossim-node")
        self.workdir = os.path.join(STATE_ROOT, self.sim_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Create the bridge; return the /16 it serves."""
        problems = netns.preflight(SSHD)
        if problems:
            raise RuntimeError("real nodes unavailable: " + "; ".join(problems))
        os.makedirs(STATE_ROOT, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        # Pick the range and create the bridge under one lock, so parallel simulators never share a /16.
        with open(os.path.join(STATE_ROOT, ".lock"), "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            netns.cleanup_stale(STATE_ROOT)
            self.cidr = self.cidr or netns.free_slash16()
            net = ipaddress.ip_network(self.cidr)
            os.makedirs(self.workdir)
            with open(os.path.join(self.workdir, "owner"), "w") as fh:
                fh.write(f"{os.getpid()} {self.bridge}\n")
            gateway = str(net.network_address + 1)
            # A MAC of its own: a bridge without one takes its lowest port's, so it changed as nodes came
            # and went, and every node's neighbour entry for the gateway then named a MAC gone with a port.
            netns.run(["ip", "link", "add", self.bridge, "address", netns.mac_for(gateway), "type", "bridge"])
            netns.run(["ip", "addr", "add", f"{gateway}/{net.prefixlen}", "dev", self.bridge])
            netns.run(["ip", "link", "set", self.bridge, "up"])
        log.info("real nodes on bridge %s, %s", self.bridge, self.cidr)
        return self.cidr

    def stop(self) -> None:
        """Tear every node down (sshd first), then the bridge and the state folder."""
        with self._lock:
            nodes = list(self.nodes.values())
        for node in nodes:
            node.torn_down = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for node in nodes:
            self._teardown(node)
        netns.run(["ip", "link", "del", self.bridge], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def namespaces(self) -> list[str]:
        with self._lock:
            return [n.namespace for n in self.nodes.values() if not n.gone]

    # -- per node ------------------------------------------------------------------------------

    def boot(self, server: object, ip: str) -> Node:
        """Start a node for a server in the background; the caller holds the state lock."""
        server_id, name = getattr(server, "id"), getattr(server, "name")
        with self._lock:
            self._seq += 1
            seq = self._seq
        node = Node(server_id=server_id, name=name, namespace=f"ossim-{self.sim_id}-{seq}",
                    veth=f"ov{self.sim_id}{seq:x}", ip=ip, workdir=os.path.join(self.workdir, str(seq)),
                    keys=self.authorized_keys + list(getattr(server, "public_keys")))
        with self._lock:
            self.nodes[node.namespace] = node
        setattr(server, "node", node)
        self._pool.submit(self._boot_logged, node)
        return node

    def teardown(self, node: Node) -> None:
        node.torn_down = True
        try:
            self._pool.submit(self._teardown, node)
        except RuntimeError:
            self._teardown(node)  # the pool is shutting down: stop() tears down inline anyway

    def set_extra_address(self, node: Node, address: str, add: bool) -> None:
        """A floating IP attached to the node's port becomes a second address inside its namespace."""
        try:
            self._pool.submit(self._set_extra, node, address, add)
        except RuntimeError:
            pass

    def _set_extra(self, node: Node, address: str, add: bool) -> None:
        with node.lock:
            if node.torn_down or not node.configured:
                (node.extra.add if add else node.extra.discard)(address)  # the boot adds node.extra
                return
            verb = "add" if add else "del"
            netns.run(["ip", "-n", node.namespace, "addr", verb, f"{address}/32", "dev", "eth0"], check=False)
            if not add:
                netns.forget_neighbour(self.bridge, address)  # it names this node's MAC; the next holder has another
            (node.extra.add if add else node.extra.discard)(address)

    def _boot_logged(self, node: Node) -> None:
        try:
            self._boot(node)
        except Exception as exc:  # the server must go to ERROR, never stay in BUILD silently
            log.exception("node %s (%s) failed to boot", node.namespace, node.name)
            node.error = f"real node failed: {exc}"

    def _boot(self, node: Node) -> None:
        net = ipaddress.ip_network(self.cidr or "")
        with node.lock:
            if node.torn_down:
                return
            os.makedirs(node.workdir)
            netns.run(["ip", "netns", "add", node.namespace])
            netns.run(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0",
                       "address", netns.mac_for(node.ip), "netns", node.namespace])
            netns.run(["ip", "link", "set", node.veth, "master", self.bridge, "up"])
            # No default route inside: the node reaches only this bridge's /16, nothing beyond this machine.
            netns.batch(node.namespace, [f"addr add {node.ip}/{net.prefixlen} dev eth0",
                                         *[f"addr add {a}/32 dev eth0" for a in sorted(node.extra)],
                                         "link set eth0 up", "link set lo up"])
            node.configured = True
            key = os.path.join(node.workdir, "ssh_host_ed25519_key")
            netns.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{hostname_of(node.name)}",
                       "-f", key])
            with open(key + ".pub") as fh:
                node.host_keys = [fh.read().strip()]
            config = netns.write_sshd_files(node.workdir, key, node.keys)
            with open(os.path.join(node.workdir, "sshd.log"), "wb") as err:
                node.process = subprocess.Popen(
                    ["ip", "netns", "exec", node.namespace, "unshare", "--uts", "sh", "-c",
                     'echo "$1" > /proc/sys/kernel/hostname && exec "$2" -D -e -f "$3"',
                     "sh", hostname_of(node.name), SSHD, config],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not node.torn_down:
            if node.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {node.process.returncode}: "
                                   + netns.tail(os.path.join(node.workdir, "sshd.log")))
            if _listening(node.ip):
                node.ready = True
                return
            time.sleep(0.002)  # polling a local connect; it answers within ~100 ms
        if not node.torn_down:
            raise RuntimeError(f"sshd did not listen on {node.ip}:22 within {READY_TIMEOUT:.0f}s")

    def _teardown(self, node: Node) -> None:
        with node.lock:
            if node.gone:
                return
            node.torn_down = True
            netns.stop_sshd(node.process, os.path.join(node.workdir, "sshd.pid"))
            if os.path.exists(f"/run/netns/{node.namespace}"):
                netns.kill_namespace_pids(node.namespace)
                netns.run(["ip", "netns", "del", node.namespace], check=False)
            netns.run(["ip", "link", "del", node.veth], check=False, quiet=True)
            for address in node.extra:  # floating IPs: their next node has another MAC (its own address keeps it)
                netns.forget_neighbour(self.bridge, address)
            shutil.rmtree(node.workdir, ignore_errors=True)
            node.gone = True
        with self._lock:
            self.nodes.pop(node.namespace, None)


def _listening(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=0.2):
            return True
    except OSError:
        return False

