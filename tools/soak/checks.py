"""The invariants: live servers within max-servers (watched all along), then after the drain no leak
in the simulator, no orphan in ZooKeeper, and no traceback in any launcher log."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from ossim import ControlClient

from .report import Ledger

TAG_PROVIDER = "nodepool_provider_name"  # the OpenStack driver's server metadata (servers.py)
TAG_NODE = "nodepool_node_id"
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<msg>.*)")


class ServerWatch:
    """Polls the simulator and flags a provider with more live servers than its max-servers.

    Live: listed and not being deleted (a server whose delete was accepted no longer runs;
    the launcher still counts it against the pool until it is gone, so this is the looser bound).
    """

    def __init__(self, ctl: ControlClient, ledger: Ledger, limits: dict[str, int],
                 interval: float = 0.5) -> None:
        self.ctl, self.ledger, self.limits, self.interval = ctl, ledger, limits, interval
        self.stop = threading.Event()
        self.peak: Counter[str] = Counter()  # provider -> most live servers seen
        self.peak_all: Counter[str] = Counter()  # provider -> most listed servers, deleting included
        self.over: set[str] = set()  # providers over their limit right now (one violation per excursion)
        self.thread = threading.Thread(target=self._run, name="soak-server-watch", daemon=True)

    def start(self) -> ServerWatch:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                servers = self.ctl.servers()
            except Exception:
                continue  # the simulator is busy; the next poll will see
            live: dict[str, list[str]] = {}
            listed: Counter[str] = Counter()
            for server in servers:
                provider = server["metadata"].get(TAG_PROVIDER, "(untagged)")
                listed[provider] += 1
                if not server["deleting"] and server["status"] != "DELETED":
                    live.setdefault(provider, []).append(server["id"])
            for provider, count in listed.items():
                self.peak_all[provider] = max(self.peak_all[provider], count)
            for provider, limit in self.limits.items():
                ids = live.get(provider, [])
                self.peak[provider] = max(self.peak[provider], len(ids))
                if len(ids) > limit and provider not in self.over:
                    self.over.add(provider)
                    self.ledger.violation("max-servers-exceeded", f"{provider}: {len(ids)} live "
                                          f"servers, max-servers {limit}", provider=provider,
                                          servers=ids)
                elif len(ids) <= limit:
                    self.over.discard(provider)


def _children(zk: KazooClient, path: str) -> list[str]:
    try:
        return sorted(zk.get_children(path))
    except NoNodeError:
        return []


def _data(zk: KazooClient, path: str) -> tuple[bytes | None, bool]:
    """(data, exists)."""
    try:
        return zk.get(path)[0], True
    except NoNodeError:
        return None, False


def check_after_drain(zk: KazooClient, ctl: ControlClient, ledger: Ledger) -> dict[str, Any]:
    """Cloud and ZooKeeper agree and hold nothing but ready spares; returns what it saw."""
    state = ctl.state()
    servers = {s["id"]: s for s in state["servers"]}
    records: dict[str, dict[str, Any]] = {}
    for nid in _children(zk, "/nodepool/nodes"):
        raw, exists = _data(zk, f"/nodepool/nodes/{nid}")
        if not exists:
            continue
        lock = _children(zk, f"/nodepool/nodes/{nid}/lock")
        try:
            node = json.loads(raw or b"")
        except ValueError:
            ledger.violation("orphan-node-znode", f"/nodepool/nodes/{nid} holds no node record "
                             "(a lock dir of a gone node?)", data=(raw or b"").decode(errors="replace"),
                             children=_children(zk, f"/nodepool/nodes/{nid}"))
            continue
        records[nid] = node
        if lock:
            ledger.violation("node-locked-after-drain", f"node {nid} still has lock contenders",
                             node=nid, contenders=lock, record=node)
        if node.get("state") != "ready" or node.get("allocated_to"):
            ledger.violation("node-left-after-drain", f"node {nid} is {node.get('state')} "
                             f"(allocated_to {node.get('allocated_to')}) after the drain",
                             node=nid, record=node)
        server = servers.get(node.get("external_id") or "")
        if server is None or server["status"] != "ACTIVE" or server["deleting"]:
            ledger.violation("node-without-server", f"node {nid} ({node.get('state')}) has no live "
                             f"server {node.get('external_id')!r} in the simulator", node=nid,
                             record=node, server=server)
    by_server = {n.get("external_id"): nid for nid, n in records.items()}
    for sid, server in servers.items():
        if sid not in by_server:
            ledger.violation("leaked-server", f"server {sid} ({server['status']}, node tag "
                             f"{server['metadata'].get(TAG_NODE)}) has no node record", server=server)
    ports = {p["id"]: p for p in state["ports"]}
    for fip in state["floating_ips"]:
        port = ports.get(fip["port_id"] or "")
        if port is None or port["device_id"] not in servers:
            ledger.violation("leaked-floating-ip", f"floating IP {fip['address']} is attached to no "
                             "server", fip=fip, port=port)
    for port in ports.values():
        if port["device_id"] not in servers:
            ledger.violation("leaked-port", f"port {port['id']} ({port['ip']}) belongs to no server",
                             port=port)
    for server in servers.values():
        for volume in server.get("volumes") or []:  # the simulator keeps volumes on servers only
            if server["id"] not in by_server:
                ledger.violation("leaked-volume", f"volume {volume} of leaked server {server['id']}",
                                 volume=volume)
    left = []
    for rid in _children(zk, "/nodepool/requests"):
        raw, exists = _data(zk, f"/nodepool/requests/{rid}")
        if exists:
            left.append(rid)
            ledger.violation("request-left", f"request {rid} still exists after the drain",
                             request=rid, data=(raw or b"").decode(errors="replace"))
    empty_lock_dirs = 0
    for rid in _children(zk, "/nodepool/requests-lock"):
        contenders = _children(zk, f"/nodepool/requests-lock/{rid}")
        if contenders:
            ledger.violation("request-lock-left", f"request lock {rid} still has contenders after "
                             "the drain", request=rid, contenders=contenders)
        else:
            empty_lock_dirs += 1  # garbage-collected 5 minutes after the request went: expected
    return {"node_records": len(records), "servers": len(servers), "floating_ips": len(state["floating_ips"]),
            "ports": len(ports), "requests_left": len(left), "empty_request_lock_dirs": empty_lock_dirs}


def scan_log(path: Path) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The tracebacks in one launcher log (header record, exception line, innermost frame) and
    the number of records per level."""
    lines = path.read_text(errors="replace").splitlines()
    levels: Counter[str] = Counter()
    found: list[dict[str, Any]] = []
    header = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if (record := RECORD.match(line)) is not None:
            levels[record["level"]] += 1
            header = line
        elif line.startswith("Exception in thread"):
            header = line
        if not line.startswith("Traceback (most recent call last):"):
            i += 1
            continue
        frames: list[str] = []
        exceptions: list[str] = []  # the line after each run of frames (chained ones too)
        after_frames = False
        i += 1
        while i < len(lines) and not (RECORD.match(lines[i]) or
                                      lines[i].startswith("Exception in thread")):
            cur = lines[i]
            if cur.startswith("  File "):
                frames.append(cur.strip())
                after_frames = True
            elif cur.startswith(" ") or not cur.strip():
                pass  # source lines, carets, blank lines
            elif after_frames:
                exceptions.append(cur.strip())
                after_frames = False
            i += 1
        innermost = re.sub(r", line \d+", "", frames[-1]) if frames else "?"
        final = exceptions[-1] if exceptions else "?"
        found.append({"file": path.name, "header": header[:300], "exception": final[:300],
                      "innermost": innermost, "chain": [e[:200] for e in exceptions],
                      "type": final.split(":", 1)[0]})
    return found, levels


def check_logs(paths: list[Path], ledger: Ledger) -> dict[str, Any]:
    """One violation per kind of traceback (type and innermost frame), with its count and first lines."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    levels: Counter[str] = Counter()
    for path in paths:
        if not path.exists():
            continue
        found, counted = scan_log(path)
        levels.update(counted)
        for tb in found:
            groups.setdefault((tb["type"], tb["innermost"]), []).append(tb)
    for (kind, innermost), tbs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        first = tbs[0]
        ledger.violation("launcher-traceback", f"{len(tbs)} traceback(s) {first['exception']} "
                         f"at {innermost}", count=len(tbs), header=first["header"],
                         exception=first["exception"], chain=first["chain"],
                         files=sorted({t["file"] for t in tbs}))
    return {"log_levels": dict(levels), "traceback_kinds": len(groups),
            "tracebacks": sum(len(v) for v in groups.values())}
