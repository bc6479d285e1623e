"""A CI master in miniature: speaks PROTOCOL.md to the launcher with plain kazoo calls.

No code from the launcher is used here (only its path layout is restated),
so tests that use it check the launcher against the protocol, not against
itself.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

REQUESTS = "/nodepool/requests"
NODES = "/nodepool/nodes"


class Requestor:
    """Creates requests, waits for them, takes their nodes, returns them used."""

    def __init__(self, kazoo: KazooClient, name: str = "zuul-test"):
        self.kazoo = kazoo
        self.name = name
        self.locks: dict[str, Lock] = {}

    def submit(self, labels: list[str], priority: int = 200, reuse: bool = True,
               provider: str | None = None, **extra: Any) -> str:
        body = {"state": "requested", "state_time": time.time(), "node_types": list(labels),
                "nodes": [], "declined_by": [], "reuse": reuse, "requestor": self.name,
                "requestor_data": {"job": "test"}, "provider": provider,
                "relative_priority": 0, "event_id": None, "created_time": time.time(),
                "tenant_name": None}
        body.update(extra)
        path = self.kazoo.create(f"{REQUESTS}/{priority:03d}-", json.dumps(body).encode(),
                                 sequence=True, makepath=True)
        return path.rsplit("/", 1)[1]

    def get(self, request_id: str) -> dict | None:
        try:
            return json.loads(self.kazoo.get(f"{REQUESTS}/{request_id}")[0])
        except NoNodeError:
            return None

    def wait(self, request_id: str, timeout: float = 15.0,
             states: tuple[str, ...] = ("fulfilled", "failed")) -> dict:
        """Wait on a data watch until the request reaches one of `states`."""
        done = threading.Event()
        seen: list[dict | None] = [None]

        def watch(data, stat, event=None):
            if data is None:
                return False
            seen[0] = json.loads(data)
            if seen[0]["state"] in states:
                done.set()
                return False
            return True

        self.kazoo.DataWatch(f"{REQUESTS}/{request_id}", watch)
        if not done.wait(timeout):
            raise AssertionError(f"request {request_id} not {states} within {timeout}s: "
                                 f"{seen[0]}")
        return seen[0]

    def node(self, node_id: str) -> dict | None:
        try:
            return json.loads(self.kazoo.get(f"{NODES}/{node_id}")[0])
        except NoNodeError:
            return None

    def set_node(self, node_id: str, **changes: Any) -> None:
        data = self.node(node_id)
        data.update(changes)
        self.kazoo.set(f"{NODES}/{node_id}", json.dumps(data).encode())

    def accept(self, request_id: str, request: dict) -> list[str]:
        """What Zuul does with a fulfilled request: lock nodes, check, delete it, in-use."""
        for node_id in request["nodes"]:
            lock = Lock(self.kazoo, f"{NODES}/{node_id}/lock")
            assert lock.acquire(timeout=30), f"could not lock node {node_id}"
            self.locks[node_id] = lock
            assert self.node(node_id)["allocated_to"] == request_id
        self.kazoo.delete(f"{REQUESTS}/{request_id}")
        for node_id in request["nodes"]:
            self.set_node(node_id, state="in-use", user_data={"build": "x"})
        return list(request["nodes"])

    def finish(self, node_ids: list[str], state: str = "used") -> None:
        """The job is over: mark the nodes used (or hold) and unlock them."""
        for node_id in node_ids:
            self.set_node(node_id, state=state, state_time=time.time())
            self.locks.pop(node_id).release()

    def request_and_use(self, labels: list[str], timeout: float = 15.0, **kw: Any) -> list[str]:
        rid = self.submit(labels, **kw)
        req = self.wait(rid, timeout)
        assert req["state"] == "fulfilled", req
        nodes = self.accept(rid, req)
        self.finish(nodes)
        return nodes


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
