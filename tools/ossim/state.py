"""The fake cloud's state: every object, address pools, quota usage and lazy status transitions."""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
from typing import Any, Callable

from .config import SimConfig
from .faults import FaultQueue
from .models import FloatingIP, Image, Network, Port, Server, Subnet, iso, new_id, new_mac

PROJECT_ID = "8c1b2d6a5c0e4f2f9f6b1a2d3c4e5f60"
USER_ID = "2f6e4b1c9a8d4e7f8a1b2c3d4e5f6a7b"
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


class AddressPool:
    """Hands out addresses of one subnet, skipping the network address and the gateway."""

    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr)
        self.gateway = str(self.net.network_address + 1)
        self._next = 2
        self._free: collections.deque[int] = collections.deque()
        self._used: set[int] = set()

    def allocate(self, wanted: str | None = None) -> str | None:
        if wanted is not None:
            offset = int(ipaddress.ip_address(wanted)) - int(self.net.network_address)
            if offset < 2 or offset >= self.net.num_addresses - 1 or offset in self._used:
                return None
            self._used.add(offset)
            return wanted
        # Reuse released addresses oldest first so a recently freed one is not handed out again at once.
        while self._free:
            offset = self._free.popleft()
            if offset not in self._used:
                self._used.add(offset)
                return str(self.net.network_address + offset)
        while self._next < self.net.num_addresses - 1:
            offset, self._next = self._next, self._next + 1
            if offset not in self._used:
                self._used.add(offset)
                return str(self.net.network_address + offset)
        return None

    def release(self, address: str) -> None:
        offset = int(ipaddress.ip_address(address)) - int(self.net.network_address)
        if offset in self._used:
            self._used.discard(offset)
            self._free.append(offset)


class CloudState:
    """All objects behind one lock; handlers hold it for the length of one API call."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.project_id = PROJECT_ID
        self.user_id = USER_ID
        self.faults = FaultQueue()
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=2000)
        self.tokens: set[str] = set()
        self.token_users: dict[str, str] = {}   # token -> the user name it was issued to
        self.realnodes: Any = None  # realnodes.RealNodes when real nodes are on
        self.on_server_gone: list[Callable[[Server], None]] = []
        self.flavors = {f.id: f for f in config.flavors}
        self.keypair_seq = 0
        self._seed()

    # -- setup ---------------------------------------------------------------------------

    def _seed(self) -> None:
        """Networks, subnets and the configured images: made once, kept (same ids) across resets."""
        self.images: dict[str, Image] = {}
        self.networks: dict[str, Network] = {}
        self.subnets: dict[str, Subnet] = {}
        self.pools: dict[str, AddressPool] = {}
        for name in self.config.images:
            image = Image(id=new_id(), name=name, status="active", disk_format="qcow2", container_format="bare",
                          visibility="public", size=21430272, checksum="c8fc807773e5354afe61636071771906",
                          builtin=True)
            image.os_hash_value = "0" * 128
            self.images[image.id] = image
        fixed_cidr, floating_cidr = self.config.fixed_cidr, self.config.floating_cidr
        if self.config.real_nodes and self.config.real_cidr:
            # One /16 on the bridge: fixed addresses in its lower half, floating in its upper half,
            # so a FIP added inside a namespace is reachable from the host without any routing.
            halves = list(ipaddress.ip_network(self.config.real_cidr).subnets(prefixlen_diff=1))
            fixed_cidr, floating_cidr = str(halves[0]), str(halves[1])
        self.private = self._add_network("private", "private-subnet", fixed_cidr, external=False)
        self.public = self._add_network("public", "public-subnet", floating_cidr, external=True)
        self.security_groups = {new_id(): "default"}
        self._clear()

    def _clear(self) -> None:
        """Drop everything users made: servers, ports, FIPs, keypairs, uploaded images."""
        self.keypairs: dict[str, Any] = {}
        self.ports: dict[str, Port] = {}
        self.fips: dict[str, FloatingIP] = {}
        self.servers: dict[str, Server] = {}
        self.images = {i.id: i for i in self.images.values() if i.builtin}
        for subnet_id, pool in list(self.pools.items()):
            self.pools[subnet_id] = AddressPool(str(pool.net))

    def _add_network(self, name: str, subnet_name: str, cidr: str, external: bool) -> Network:
        net = Network(id=new_id(), name=name, external=external)
        pool = AddressPool(cidr)
        subnet = Subnet(id=new_id(), name=subnet_name, network_id=net.id, cidr=str(pool.net),
                        gateway_ip=pool.gateway)
        net.subnet_ids.append(subnet.id)
        self.networks[net.id] = net
        self.subnets[subnet.id] = subnet
        self.pools[subnet.id] = pool
        return net

    def reset(self) -> list[Server]:
        """Forget everything made since start; return the servers whose real nodes must go."""
        with self.lock:
            servers = list(self.servers.values())
            self.faults.clear()
            self.calls.clear()
            self.requests.clear()
            self._clear()
            return servers

    # -- lookups ---------------------------------------------------------------------------

    def subnet_of(self, network_id: str) -> Subnet:
        return self.subnets[self.networks[network_id].subnet_ids[0]]

    def server_ports(self, server: Server) -> list[Port]:
        return [self.ports[p] for p in server.port_ids if p in self.ports]

    def fips_of_port(self, port_id: str) -> list[FloatingIP]:
        return [f for f in self.fips.values() if f.port_id == port_id]

    def usage(self) -> dict[str, int]:
        """What counts against Nova quota: every server not yet gone, as Nova counts it."""
        used = {"instances": 0, "cores": 0, "ram": 0}
        for server in self.servers.values():
            flavor = self.flavors.get(server.flavor_id)
            used["instances"] += 1
            used["cores"] += flavor.vcpus if flavor else 0
            used["ram"] += flavor.ram if flavor else 0
        return used

    def volume_usage(self) -> dict[str, int]:
        """What counts against Cinder quota: the volumes of every server not yet gone."""
        volumes = [v for server in self.servers.values() for v in server.volumes]
        return {"volumes": len(volumes), "gigabytes": sum(int(v.get("size") or 0) for v in volumes)}

    # -- ports and addresses ---------------------------------------------------------------

    def create_port(self, network_id: str, device_id: str = "", device_owner: str = "",
                    fixed_ip: str | None = None, name: str = "") -> Port | None:
        subnet = self.subnet_of(network_id)
        address = self.pools[subnet.id].allocate(fixed_ip)
        if address is None:
            return None
        port = Port(id=new_id(), network_id=network_id, mac=new_mac(),
                    fixed_ips=[{"subnet_id": subnet.id, "ip_address": address}],
                    device_id=device_id, device_owner=device_owner, name=name)
        self.ports[port.id] = port
        return port

    def delete_port(self, port_id: str) -> None:
        port = self.ports.pop(port_id, None)
        if port is None:
            return
        for fixed in port.fixed_ips:
            self.pools[fixed["subnet_id"]].release(fixed["ip_address"])
        for fip in self.fips_of_port(port_id):
            self.set_fip_port(fip, None)

    def set_fip_port(self, fip: FloatingIP, port: Port | None) -> None:
        """Associate or detach a FIP; on real nodes the address follows it into the namespace."""
        old_port = self.ports.get(fip.port_id) if fip.port_id else None
        fip.port_id = port.id if port else None
        fip.fixed_ip = port.ip if port else None
        fip.updated = time.time()
        fip.revision += 1
        if self.realnodes is None:
            return
        for p, add in ((old_port, False), (port, True)):
            server = self.servers.get(p.device_id) if p else None
            if server is not None and server.node is not None:
                self.realnodes.set_extra_address(server.node, fip.address, add)

    # -- time ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every server whose time has come; called before each API call is answered."""
        now = time.monotonic()
        with self.lock:
            for server in list(self.servers.values()):
                if server.deleting_at is not None:
                    self._advance_delete(server, now)
                elif server.status == "BUILD" and server.plan != "stuck" and now >= server.ready_at:
                    self._advance_build(server)
            for image in self.images.values():
                if image.status == "saving" and image.active_at is not None and now >= image.active_at:
                    image.status = "active"
                    image.updated = time.time()

    def _advance_build(self, server: Server) -> None:
        node = server.node
        if server.plan == "active" and node is not None:
            if node.error:
                self.fail_server(server, f"Build of instance {server.id} aborted: {node.error}")
            elif node.ready:
                self._activate(server)
            return  # still booting: ACTIVE only once sshd listens
        if server.plan == "error":
            self.fail_server(server, server.plan_message or NO_VALID_HOST)
        else:
            self._activate(server)

    def _activate(self, server: Server) -> None:
        server.status, server.task_state, server.power_state = "ACTIVE", None, 1
        server.launched = server.updated = time.time()
        for port in self.server_ports(server):
            port.status, port.updated = "ACTIVE", time.time()
            port.revision += 1

    def fail_server(self, server: Server, message: str, code: int = 500) -> None:
        server.status, server.task_state, server.power_state = "ERROR", None, 0
        server.updated = time.time()
        server.fault = {"code": code, "created": _now_iso(), "message": message}
        # A failed build gives its network back, so an ERROR server shows no addresses.
        if server.launched is None:
            for port in self.server_ports(server):
                self.delete_port(port.id)
            server.port_ids = []
        if server.node is not None and self.realnodes is not None:
            self.realnodes.teardown(server.node)

    def _advance_delete(self, server: Server, now: float) -> None:
        assert server.deleting_at is not None
        if server.delete_plan == "hang":
            return
        due = server.deleting_at + server.delete_delay
        if now < due:
            return
        if server.delete_plan == "error":
            server.deleting_at = None
            server.delete_plan = "gone"
            self.fail_server(server, "Failed to delete instance: the hypervisor did not answer in time")
            return
        if server.node is not None and not server.node.gone:
            return  # the namespace and sshd must be gone before the server is
        if now < due + server.deleted_window:
            server.status, server.task_state, server.power_state = "DELETED", None, 0
            return
        self.remove_server(server)

    def remove_server(self, server: Server) -> None:
        for port in self.server_ports(server):
            self.delete_port(port.id)
        self.servers.pop(server.id, None)
        for callback in self.on_server_gone:
            callback(server)

    def record_call(self, key: str, entry: dict[str, Any]) -> None:
        with self.lock:
            self.calls[key] += 1
            self.requests.append(entry)


def _now_iso() -> str:
    return iso(time.time())
