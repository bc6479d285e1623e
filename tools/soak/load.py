"""A Zuul-style load: requestors speaking PROTOCOL.md with plain kazoo, each request checked as it is served.

Each requestor is one kazoo session with a few worker threads; a worker takes the next slot
of an evenly spread schedule, creates a request of one or two nodes, waits (data watch plus a
slow re-read) for `fulfilled` or `failed`, checks every handed node (ready, allocated to it, its
server ACTIVE in the simulator with the node's address), locks the nodes, deletes the request,
sets them `in-use`, holds them for a short "job", sets them `used` and unlocks them.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NoNodeError
from kazoo.recipe.lock import Lock
from ossim import ControlClient

from .report import Ledger

REQUESTS = "/nodepool/requests"
NODES = "/nodepool/nodes"
LOCK_TIMEOUT = 30.0  # what Zuul waits for a node lock
# (labels, weight): one and two nodes; `large` only soak-b serves, so soak-a declines it.
MIXES = ((["small"], 45), (["small", "small"], 25), (["large"], 15), (["small", "large"], 15))


@dataclass
class Request:
    slot: int
    requestor: str
    labels: list[str]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    rid: str | None = None
    state: str = "new"  # new, waiting, fulfilled, failed, stuck, vanished, error
    created_at: float = 0.0
    final_at: float | None = None
    nodes: list[str] = field(default_factory=list)
    last: dict[str, Any] | None = None


def connect(hosts: str, timeout: float = 10.0) -> KazooClient:
    """A plain kazoo session whose commands retry through connection losses."""
    client = KazooClient(hosts=hosts, timeout=timeout,
                         connection_retry={"max_tries": -1, "delay": 0.2, "max_delay": 2},
                         command_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1,
                                        "deadline": 60})
    client.start(timeout=30)
    return client


class Schedule:
    """Slot i starts at t0 + i * spacing; no slot after stop() or past `total`."""

    def __init__(self, total: int, duration: float) -> None:
        self.total = total
        self.spacing = duration / max(total, 1)
        self.t0 = time.monotonic()
        self.next = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def take(self) -> int | None:
        with self.lock:
            if self.next >= self.total or self.stopped.is_set():
                return None
            slot, self.next = self.next, self.next + 1
        delay = self.t0 + slot * self.spacing - time.monotonic()
        if delay > 0 and self.stopped.wait(delay):
            return None
        return slot


class Load:
    """The requestors; `stop_new()` ends the schedule, `abort` ends every wait (the drain's bound)."""

    def __init__(self, hosts: str, ctl: ControlClient, ledger: Ledger, seed: int, total: int,
                 duration: float, requestors: int = 3, workers: int = 3,
                 job_seconds: tuple[float, float] = (1.0, 4.0), check_ssh: bool = False) -> None:
        self.hosts, self.ctl, self.ledger, self.seed = hosts, ctl, ledger, seed
        self.schedule = Schedule(total, duration)
        self.job_seconds, self.check_ssh = job_seconds, check_ssh
        self.abort = threading.Event()
        self.closed = False
        self.requests: list[Request] = []
        self.handed: dict[str, str] = {}  # node id -> the request it was handed to
        self.lock = threading.Lock()
        self.clients = [connect(hosts) for _ in range(requestors)]
        self.threads = [threading.Thread(target=self._worker, args=(f"zuul-soak-{r + 1}", c),
                                         name=f"soak-load-{r + 1}.{w}", daemon=True)
                        for r, c in enumerate(self.clients) for w in range(workers)]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop_new(self) -> None:
        self.schedule.stopped.set()

    def join(self, timeout: float) -> list[Request]:
        """Wait for the workers; after timeout, abort the waits. Returns the requests not final."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self.threads):
            self.abort.set()
            for thread in self.threads:
                thread.join(LOCK_TIMEOUT + 15)
        return [r for r in self.requests if r.state not in ("fulfilled", "failed")]

    def close(self) -> None:
        self.closed = True
        self.abort.set()
        self.stop_new()
        for client in self.clients:
            try:
                client.stop()
                client.close()
            except Exception:
                pass

    # -- one worker ------------------------------------------------------------------------

    def _worker(self, name: str, client: KazooClient) -> None:
        while (slot := self.schedule.take()) is not None:
            rng = random.Random(f"{self.seed}-{slot}")
            labels = rng.choices([m[0] for m in MIXES], [m[1] for m in MIXES])[0]
            req = Request(slot, name, list(labels))
            with self.lock:
                self.requests.append(req)
            try:
                self._cycle(client, req, rng)
            except Exception as exc:  # the requestor's own trouble: never silent
                req.state = "error"
                if self.closed:
                    return  # the soak is being stopped: its sessions were closed under it
                self.ledger.violation("requestor-error", f"request {req.rid} ({name}) could not "
                                      f"complete its cycle: {type(exc).__name__}: {exc}",
                                      request=req.rid, last=req.last)

    def _cycle(self, client: KazooClient, req: Request, rng: random.Random) -> None:
        priority = rng.choice((100, 200, 200, 300))
        req.rid = self._submit(client, req, priority)
        req.created_at, req.state = self.ledger.now(), "waiting"
        self.ledger.count("requests")
        data = self._wait_final(client, req)
        if data is None:
            return
        req.last, req.final_at = data, self.ledger.now()
        path = f"{REQUESTS}/{req.rid}"
        if data["state"] == "failed":
            req.state = "failed"
            self.ledger.count("failed")
            if not data.get("declined_by"):
                self.ledger.violation("failed-without-reason", f"request {req.rid} failed with no "
                                      "declined_by written by a launcher", request=req.rid, data=data)
            _delete_own(client, path)
            return
        req.state = "fulfilled"
        self.ledger.count("fulfilled")
        req.nodes = list(data.get("nodes") or [])
        if len(req.nodes) != len(req.labels):
            self.ledger.violation("fulfilled-wrong-nodes", f"request {req.rid} fulfilled with "
                                  f"{len(req.nodes)} node(s) for {len(req.labels)} label(s)",
                                  request=req.rid, data=data)
        self._hand_check(client, req)
        locks = self._lock_nodes(client, req)
        if not _delete_own(client, path):
            self.ledger.violation("request-vanished", f"fulfilled request {req.rid} was deleted "
                                  "before its requestor deleted it", request=req.rid)
        held = [nid for nid in req.nodes if nid in locks]
        for nid in held:
            self._update_node(client, nid, state="in-use", user_data={"soak": req.token})
        time.sleep(rng.uniform(*self.job_seconds))
        for nid in held:
            self._update_node(client, nid, state="used")
            try:
                locks[nid].release()
            except KazooException:
                pass  # a lost session already released it

    def _submit(self, client: KazooClient, req: Request, priority: int) -> str:
        now = time.time()
        body = json.dumps({
            "state": "requested", "state_time": now, "node_types": req.labels, "nodes": [],
            "declined_by": [], "reuse": True, "requestor": req.requestor,
            "requestor_data": {"soak": req.token}, "provider": None, "relative_priority": 0,
            "event_id": req.token, "created_time": now, "tenant_name": None}).encode()
        for _ in range(30):
            try:
                path = client.create(f"{REQUESTS}/{priority:03d}-", body, sequence=True,
                                     makepath=True)
                return path.rsplit("/", 1)[1]
            except KazooException:
                # The create may have happened with its answer lost: find it by its token.
                time.sleep(0.5)
                found = client.retry(self._find, client, req.token)
                if found:
                    return found
        raise RuntimeError(f"could not create request for {req.labels}")

    @staticmethod
    def _find(client: KazooClient, token: str) -> str | None:
        for child in client.get_children(REQUESTS):
            try:
                data = json.loads(client.get(f"{REQUESTS}/{child}")[0])
            except (NoNodeError, ValueError):
                continue
            if (data.get("requestor_data") or {}).get("soak") == token:
                return str(child)
        return None

    def _wait_final(self, client: KazooClient, req: Request) -> dict[str, Any] | None:
        path = f"{REQUESTS}/{req.rid}"
        changed = threading.Event()
        client.DataWatch(path, lambda data, stat, event=None: bool(changed.set()) or
                         (data is not None and not self.abort.is_set()))
        while True:
            changed.clear()
            try:
                raw = client.retry(client.get, path)[0]
            except NoNodeError:
                req.state = "vanished"
                self.ledger.violation("request-vanished", f"request {req.rid} was deleted while "
                                      "waiting (only its requestor deletes it)", request=req.rid,
                                      last=req.last)
                return None
            req.last = json.loads(raw)
            if req.last.get("state") in ("fulfilled", "failed"):
                return req.last
            if self.abort.is_set():
                req.state = "stuck"
                self.ledger.count("stuck")
                self.ledger.violation("request-stuck", f"request {req.rid} ({req.labels}) still "
                                      f"{req.last.get('state')} at the end of the drain",
                                      request=req.rid, created_at=req.created_at, data=req.last)
                _delete_own(client, path)  # cancel it, as Zuul would
                return None
            changed.wait(2.0)

    def _hand_check(self, client: KazooClient, req: Request) -> None:
        """Every handed node: never handed before, ready, ours, its server ACTIVE with its address."""
        for nid in req.nodes:
            with self.lock:
                before = self.handed.setdefault(nid, str(req.rid))
            self.ledger.count("nodes_handed")
            if before != req.rid:
                self.ledger.violation("node-handed-twice", f"node {nid} handed to {before} and "
                                      f"to {req.rid}", node=nid, requests=[before, req.rid])
            node = _read(client, f"{NODES}/{nid}")
            problem = None
            if node is None:
                problem = "its record does not exist"
            elif node.get("state") != "ready":
                problem = f"state {node.get('state')!r}, not 'ready'"
            elif node.get("allocated_to") != req.rid:
                problem = f"allocated_to {node.get('allocated_to')!r}"
            else:
                problem = self._server_problem(node)
            if problem:
                self.ledger.violation("handed-node-not-ready", f"node {nid} handed to {req.rid}: "
                                      f"{problem}", node=nid, request=req.rid, record=node)

    def _server_problem(self, node: dict[str, Any]) -> str | None:
        server_id, ip = node.get("external_id"), node.get("interface_ip")
        server = self.ctl.server(server_id) if server_id else None
        if server is None:
            return f"its server {server_id!r} does not exist in the simulator"
        if server["status"] != "ACTIVE" or server["deleting"]:
            return f"its server {server_id} is {server['status']} (deleting={server['deleting']})"
        if not ip or ip not in server["fixed_ips"] + server["floating_ips"]:
            return f"interface_ip {ip!r} is not an address of server {server_id}"
        if self.check_ssh:
            if not node.get("host_keys"):
                return "no host_keys recorded (the launcher scans them with host-key-checking on)"
            try:
                socket.create_connection((ip, 22), timeout=5).close()
            except OSError as exc:
                return f"ssh port of {ip} does not answer: {exc}"
        return None

    def _lock_nodes(self, client: KazooClient, req: Request) -> dict[str, Lock]:
        locks: dict[str, Lock] = {}
        for nid in req.nodes:
            path = f"{NODES}/{nid}"
            if not client.retry(client.exists, path):  # a lock would re-create the node's znode
                self.ledger.violation("handed-node-gone", f"node {nid} of {req.rid} vanished "
                                      "before its requestor could lock it", node=nid)
                continue
            lock = Lock(client, f"{path}/lock", identifier=req.requestor)
            if not lock.acquire(timeout=LOCK_TIMEOUT):
                self.ledger.violation("node-lock-timeout", f"node {nid} of {req.rid} could not be "
                                      f"locked within {LOCK_TIMEOUT:.0f}s", node=nid,
                                      contenders=lock.contenders())
                continue
            locks[nid] = lock
            node = _read(client, path)
            if node is None or node.get("allocated_to") != req.rid:
                self.ledger.violation("handed-node-taken", f"node {nid} of {req.rid} changed "
                                      "before its requestor locked it", node=nid, record=node)
        return locks

    def _update_node(self, client: KazooClient, nid: str, **changes: Any) -> None:
        """Read-modify-write the whole node dict, as Zuul does; a vanished node is noted, not fatal."""
        def update() -> None:
            raw, stat = client.get(f"{NODES}/{nid}")
            data = json.loads(raw)
            data.update(changes, state_time=time.time())
            client.set(f"{NODES}/{nid}", json.dumps(data).encode(), version=stat.version)
        try:
            client.retry(update)
        except NoNodeError:
            self.ledger.count("nodes_gone_while_held")  # our session was lost; the launcher deleted it
        except BadVersionError:
            self.ledger.violation("locked-node-written", f"node {nid} changed while its requestor "
                                  "held its lock", node=nid, record=_read(client, f"{NODES}/{nid}"))


def _read(client: KazooClient, path: str) -> dict[str, Any] | None:
    try:
        raw = client.retry(client.get, path)[0]
    except NoNodeError:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"unparsable": raw.decode(errors="replace")}


def _delete_own(client: KazooClient, path: str) -> bool:
    """Delete our own znode; False when it was already gone before we tried. After a lost
    connection a NoNode is ambiguous (our first delete may have landed): counted as ours."""
    lost = False
    deadline = time.monotonic() + 60
    while True:
        try:
            client.delete(path)
            return True
        except NoNodeError:
            return lost
        except KazooException:
            if time.monotonic() > deadline:
                raise
            lost = True
            time.sleep(0.5)
