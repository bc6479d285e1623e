"""One request's life as a CI master lives it (PROTOCOL.md, "The hand-off", step 5).

Create the request; wait on a data watch for `fulfilled`; check `allocated_to`,
lock each node (the kazoo Lock recipe's contender names, up to 30 s), check
`allocated_to` again, delete the request, set the nodes `in-use`; hold them for
the job; set them `used` and unlock them; hand them to the deletion watcher.

The life is a generator run by `drive.start`: it yields each ZooKeeper call it
waits for, so requests in flight cost no thread each (see drive.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from typing import Any

from kazoo.exceptions import NoNodeError

from .deletion import DeletionWatcher
from .drive import Later, Step, Timers
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
# kazoo's Lock recipe: contenders are `<uuid hex>__lock__<seq>`, the lowest sequence holds it.
CONTENDER = re.compile(r"__lock__(-?\d{10})$")


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
    """Settings shared by every request of a run; `life(...)` is one request's generator."""

    labels: list[str]
    hold: float
    timeout: float
    deletions: DeletionWatcher | None
    timers: Timers
    priority: int = 200
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Request watches not yet final, so that a stop ends their wait at once.
    _waiting: set[RequestWatch] = dataclasses.field(default_factory=set)
    _waiting_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def life(self, session: Session, out: Outcome) -> Step:
        client = session.client
        out.created_wall = time.time()
        out.created_at = time.monotonic()
        try:
            path = yield client.create_async(request_prefix(self.priority),
                                             request_body(self.labels, session.requestor),
                                             sequence=True)
        except Exception as e:
            out.state, out.error = "error", f"create: {type(e).__name__}"
            return
        out.request_id = path.rsplit("/", 1)[1]
        watch = RequestWatch(client, path)
        why = yield from self._wait(watch)
        if why in ("timeout", "stopped"):
            out.state = out.error = why
            yield from self._delete_request(session, out.request_id)
            return
        if why != "final":
            out.state = "error"
            out.error = "request vanished" if why == "gone" else \
                f"watch: {type(watch.error).__name__}"
            return
        out.seen_at = watch.seen_at
        data = watch.data or {}
        out.state = data.get("state")
        out.fulfil_written_wall = data.get("state_time")
        if out.state != "fulfilled":
            yield from self._delete_request(session, out.request_id)
            return
        out.node_ids = list(data.get("nodes") or [])
        try:
            yield from self._use_nodes(session, out)
        except Failed as e:
            out.error = str(e)
        except Exception as e:
            out.error = f"{type(e).__name__}: {e}"[:200]

    def _use_nodes(self, session: Session, out: Outcome) -> Step:
        client, rid = session.client, out.request_id or ""
        if len(out.node_ids) != len(self.labels):
            yield from self._delete_request(session, rid)
            raise Failed("fulfilled with a wrong number of nodes")
        # Check allocated_to before locking (pipelined), as Zuul does.
        first = yield [client.get_async(node_path(n)) for n in out.node_ids]
        for raw, _ in first:
            node = json.loads(raw)
            if node.get("allocated_to") != rid:
                out.detail = (f"request {rid}: a node is {node.get('state')} allocated_to "
                              f"{node.get('allocated_to')}")
                yield from self._delete_request(session, rid)
                raise Failed("allocated_to mismatch before lock")
        locks: list[str] = []
        records: list[tuple[str, dict[str, Any], int]] = []
        try:
            for node_id in out.node_ids:
                locks.append((yield from self._lock(session, node_id)))
                raw, stat = yield client.get_async(node_path(node_id))
                node = json.loads(raw)
                if node.get("allocated_to") != rid:
                    out.detail = (f"request {rid} node {node_id}: state {node.get('state')} "
                                  f"allocated_to {node.get('allocated_to')}")
                    raise Failed("allocated_to mismatch after lock")
                records.append((node_id, node, stat.version))
            # The request goes and the nodes turn in-use in one pipelined burst (in order).
            now = time.time()
            sets = []
            for node_id, node, version in records:
                node.update(state="in-use", state_time=now, user_data={"benchmark": rid})
                sets.append(client.set_async(node_path(node_id), json.dumps(node).encode(),
                                             version=version))
            stats = yield [client.delete_async(request_path(rid)), *sets]
            if self.hold > 0:
                yield self.timers.sleep(self.hold)
            now = time.time()
            used = []
            for (node_id, node, _), stat in zip(records, stats[1:]):
                node.update(state="used", state_time=now)
                used.append(client.set_async(node_path(node_id), json.dumps(node).encode(),
                                             version=stat.version))
            yield used
        except Exception:
            yield from self._delete_request(session, rid)
            yield from self._unlock(session, locks)
            raise
        yield from self._unlock(session, locks)
        out.released_at = time.monotonic()
        if self.deletions is not None:
            for node_id in out.node_ids:
                self.deletions.watch(node_id, out.released_at)

    def _lock(self, session: Session, node_id: str) -> Step:
        """The kazoo Lock recipe, blocking up to NODE_LOCK_TIMEOUT: returns our contender path.

        Not kazoo's `Lock` object, whose `acquire` blocks a thread; the znodes are the same
        (`<uuid hex>__lock__<seq>`, ephemeral, data = our requestor id), so it excludes and is
        excluded by every kazoo Lock. The lock dir exists (the launcher locked the node before);
        only if it does not is it created.
        """
        client = session.client
        lock_dir = node_lock_path(node_id)
        name = f"{lock_dir}/{uuid.uuid4().hex}__lock__"
        data = session.requestor.encode()
        try:
            ours = yield client.create_async(name, data, ephemeral=True, sequence=True)
        except NoNodeError:
            yield client.ensure_path_async(lock_dir)
            ours = yield client.create_async(name, data, ephemeral=True, sequence=True)
        mine = ours.rsplit("/", 1)[1]
        deadline = time.monotonic() + NODE_LOCK_TIMEOUT
        while True:
            children = yield client.get_children_async(lock_dir)
            found = ((CONTENDER.search(c), c) for c in children)
            contenders = [c for _, c in sorted((m.group(1), c) for m, c in found if m)]
            if mine not in contenders:
                raise Failed("node lock contender vanished")
            at = contenders.index(mine)
            if at == 0:
                return ours
            moved = Later()
            stat = yield client.exists_async(f"{lock_dir}/{contenders[at - 1]}",
                                             watch=lambda _event: moved.fire("moved"))
            if stat is None:
                continue
            cancel = self.timers.call_at(deadline, lambda: moved.fire("timeout"))
            why = yield moved
            cancel()
            if why == "timeout":
                yield from self._unlock(session, [ours])
                raise Failed("node lock timeout")

    def _wait(self, watch: RequestWatch) -> Step:
        """Until the request is final, the timeout, or a stop: returns which one."""
        final = watch.final
        with self._waiting_lock:
            self._waiting.add(watch)
        cancel = self.timers.call_at(time.monotonic() + self.timeout,
                                     lambda: final.fire("timeout"))
        if self.stop.is_set():
            final.fire("stopped")
        try:
            return (yield final)
        finally:
            cancel()
            with self._waiting_lock:
                self._waiting.discard(watch)

    def stop_waiting(self) -> None:
        """A stop: every request still waiting for its final state stops waiting now."""
        self.stop.set()
        with self._waiting_lock:
            waiting = list(self._waiting)
        for watch in waiting:
            watch.final.fire("stopped")

    @staticmethod
    def _unlock(session: Session, locks: list[str]) -> Step:
        yield from _delete_quietly(session, locks)

    @staticmethod
    def _delete_request(session: Session, request_id: str | None) -> Step:
        if request_id:
            yield from _delete_quietly(session, [request_path(request_id)])


def _delete_quietly(session: Session, paths: list[str]) -> Step:
    """Delete paths in one pipelined burst; one already gone is fine."""
    results = [session.client.delete_async(path) for path in paths]
    for result in results:
        try:
            yield result
        except NoNodeError:
            pass
