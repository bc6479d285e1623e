"""What a booted host brings to its node record, and how the host is checked before
it is handed out (a keyscan, a verify against the keys it had, or a port probe).

Shared by cloud launches (launches.py) and the registration of standing slots
(registration.py): both decide the same way, from the instance the driver gave
and the label's `host-key-checking`.
"""

from __future__ import annotations

import functools
from typing import Callable

from nodepool.drivers.adapter import KNOWN_KEYS, Instance
from nodepool.model import Node
from nodepool.nodescan import NodeScanner

# Connection types whose host keys are scanned, as Nodepool scans them (ssh and
# network_cli both speak ssh); winrm and others have no ssh host keys.
SCANNED_CONNECTIONS = frozenset({"ssh", "network_cli"})

_BOOTED_FIELDS = ("interface_ip", "public_ipv4", "private_ipv4", "public_ipv6", "private_ipv6",
                  "az", "host_id", "hostname", "external_id", "username", "connection_port",
                  "connection_type", "shell_type", "python_path", "slot")

# A check: called as check(host, port, timeout=..., on_done=...), returns a ScanRequest.
Check = Callable[..., object]


def take_instance(node: Node, inst: Instance) -> None:
    """Copy what the driver learnt about the machine into its node."""
    for field in _BOOTED_FIELDS:
        value = getattr(inst, field, None)
        if value is not None:
            setattr(node, field, value)
    node.region = inst.region or node.region


def check_for(scanner: NodeScanner, node: Node, inst: Instance,
              checking: bool) -> Check | None:
    """How to check the host before its node is ready, or None: nothing to check
    (the node's host_keys are then final).

    Host keys from the driver: a list is final (empty: the requestor will not
    check), None means scan them; a driver may ask for the port to be checked
    even so (a static winrm host). A host scanned before is verified against the
    keys it had (`KNOWN_KEYS` in the instance's metadata)."""
    meta = inst.metadata or {}
    checking = meta.get("host_key_checking", checking)
    if inst.host_keys is not None or not checking:
        node.host_keys = list(inst.host_keys or [])
        if meta.get("check_port") and node.interface_ip:
            return scanner.probe
        return None
    if node.connection_type in SCANNED_CONNECTIONS and node.interface_ip:
        known = meta.get(KNOWN_KEYS)
        return functools.partial(scanner.verify, expected=known) if known else scanner.scan
    return None


def check_timeout(inst: Instance, boot_timeout: float) -> float:
    """The host's own `timeout` (a static host's), else the provider's boot-timeout."""
    return float((inst.metadata or {}).get("timeout") or boot_timeout)
