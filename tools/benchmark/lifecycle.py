"""One request's life as a CI master lives it (PROTOCOL.md, "The hand-off", step 5).

Create the request; wait on a data watch for `fulfilled`; check `allocated_to`,
lock each node (kazoo's Lock, up to 30 s), check `allocated_to` again, delete
the request, set the nodes `in-use`; hold them for the job; set them `used`
and unlock them; hand them to the deletion watcher.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

from .deletion import DeletionWatcher
from .protocol import (
    RequestWatch,
    node_lock_path,
    node_path,
    request_body,
    request_path,
    request_prefix,
)
from .session import Session

NODE_LOCK_TIMEOUT = 30.0  # what Zuul waits for a node lock


@dataclasses.dataclass
class Outcome:
    """What happened to one request; times are time.monotonic() unless named _wall."""

    created_at: float = 0.0            # just before the create call
    created_wall: float = 0.0
    seen_at: float | None = None       # when the requestor read `fulfilled`/`failed`
    state: str | None = None           # fulfilled, failed, timeout, gone, error
    fulfil_written_wall: float | None = None  # the launcher's state_time of the final write
    node_ids: list[str] = dataclasses.field(default_factory=list)
    released_at: float | None = None
    error: str | None = None
    detail: str | None = None          # what the report shows of an error (ids, states)
    request_id: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.seen_at is None else self.seen_at - self.created_at


class Failed(Exception):
    """The request's life went wrong in a way the report counts (kind is the message)."""


@dataclasses.dataclass
class Lifecycle:
    """Settings shared by every request of a run."""

    labels: list[str]
    hold: float
    timeout: float
    deletions: DeletionWatcher | None
    priority: int = 200
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def run(self, session: Session, outcome: Outcome | None = None) -> Outcome:
        out = outcome or Outcome()
        client = session.client
        out.created_wall = time.time()
        out.created_at = time.monotonic()
        try:
            path = client.create(request_prefix(self.priority),
                                 request_body(self.labels, session.requestor), sequence=True)
        except Exception as e:
            out.state, out.error = "error", f"create: {type(e).__name__}"
            return out
        out.request_id = path.rsplit("/", 1)[1]
        watch = RequestWatch(client, path)
        if not self._wait(watch):
            out.state, out.error = ("stopped", "stopped") if self.stop.is_set() \
                else ("timeout", "timeout")
            self._delete_request(session, out.request_id)
            return out
        if watch.error is not None or watch.gone:
            out.state = "error"
            out.error = "request vanished" if watch.gone else f"watch: {type(watch.error).__name__}"
            return out
        out.seen_at = watch.seen_at
        data = watch.data or {}
        out.state = data.get("state")
        out.fulfil_written_wall = data.get("state_time")
        if out.state != "fulfilled":
            self._delete_request(session, out.request_id)
            return out
        out.node_ids = list(data.get("nodes") or [])
        try:
            self._use_nodes(session, out)
        except Failed as e:
            out.error = str(e)
        except Exception as e:
            out.error = f"{type(e).__name__}: {e}"[:200]
        return out

    def _use_nodes(self, session: Session, out: Outcome) -> None:
        client, rid = session.client, out.request_id or ""
        if len(out.node_ids) != len(self.labels):
            self._delete_request(session, rid)
            raise Failed("fulfilled with a wrong number of nodes")
        # Check allocated_to before locking (pipelined), as Zuul does.
        first = [client.get_async(node_path(n)) for n in out.node_ids]
        for result in first:
            raw, _ = result.get(timeout=self.timeout)
            node = json.loads(raw)
            if node.get("allocated_to") != rid:
                out.detail = (f"request {rid}: a node is {node.get('state')} allocated_to "
                              f"{node.get('allocated_to')}")
                self._delete_request(session, rid)
                raise Failed("allocated_to mismatch before lock")
        locks: list[Lock] = []
        records: list[tuple[str, dict[str, Any], int]] = []
        try:
            for node_id in out.node_ids:
                lock = Lock(client, node_lock_path(node_id), identifier=session.requestor)
                if not lock.acquire(timeout=NODE_LOCK_TIMEOUT):
                    raise Failed("node lock timeout")
                locks.append(lock)
                raw, stat = client.get(node_path(node_id))
                node = json.loads(raw)
                if node.get("allocated_to") != rid:
                    out.detail = (f"request {rid} node {node_id}: state {node.get('state')} "
                                  f"allocated_to {node.get('allocated_to')}")
                    raise Failed("allocated_to mismatch after lock")
                records.append((node_id, node, stat.version))
            self._delete_request(session, rid)
            now = time.time()
            for i, (node_id, node, version) in enumerate(records):
                node.update(state="in-use", state_time=now, user_data={"benchmark": rid})
                stat = client.set(node_path(node_id), json.dumps(node).encode(), version=version)
                records[i] = (node_id, node, stat.version)
            if self.hold > 0:
                self.stop.wait(self.hold)
            now = time.time()
            for node_id, node, version in records:
                node.update(state="used", state_time=now)
                client.set(node_path(node_id), json.dumps(node).encode(), version=version)
        except BaseException:
            self._delete_request(session, rid)
            for lock in locks:
                lock.release()
            raise
        for lock in locks:
            lock.release()
        out.released_at = time.monotonic()
        if self.deletions is not None:
            for node_id in out.node_ids:
                self.deletions.watch(node_id, out.released_at)

    def _wait(self, watch: RequestWatch) -> bool:
        """Wait for the watch, in slices so that a stop (Ctrl-C) is seen within 0.5 s."""
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if watch.wait(min(0.5, left)):
                return True
        return False

    @staticmethod
    def _delete_request(session: Session, request_id: str | None) -> None:
        if not request_id:
            return
        try:
            session.client.delete(request_path(request_id))
        except NoNodeError:
            pass
