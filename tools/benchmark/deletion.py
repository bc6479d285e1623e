"""Watches used nodes on a session of its own until the launcher deletes them.

For each node handed back (`used` and unlocked), it records when the node was
first seen `deleting` (or `deleted`, or gone: deletion had started by then) and
when its znode was gone, both on data watches, never by polling.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType

from .protocol import node_path

STARTED_STATES = ("deleting", "deleted")


class DeletionWatcher:
    """`watch(node_id, released_at)`; `wait_all(timeout)`; latencies in seconds."""

    def __init__(self, client: KazooClient):
        self.client = client
        self.released: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.odd_states: dict[str, int] = {}
        self._cond = threading.Condition()

    def watch(self, node_id: str, released_at: float) -> None:
        with self._cond:
            self.released[node_id] = released_at
        self._arm(node_id)

    def _arm(self, node_id: str) -> None:
        self.client.get_async(node_path(node_id), watch=lambda e: self._on_event(node_id, e)) \
            .rawlink(lambda r: self._on_read(node_id, r))

    def _on_read(self, node_id: str, result: Any) -> None:
        now = time.monotonic()
        try:
            raw, _stat = result.get_nowait()
        except NoNodeError:
            self._record_gone(node_id, now)
            return
        except Exception:
            return  # session trouble: the event (or the final wait's deadline) decides
        state = json.loads(raw).get("state") if raw else None
        if state in STARTED_STATES:
            with self._cond:
                self.started.setdefault(node_id, now)
        elif state != "used":
            with self._cond:
                self.odd_states[str(state)] = self.odd_states.get(str(state), 0) + 1

    def _on_event(self, node_id: str, event: Any) -> None:
        now = time.monotonic()
        if event.type == EventType.DELETED:
            self._record_gone(node_id, now)
        elif node_id not in self.gone:
            self._arm(node_id)

    def _record_gone(self, node_id: str, now: float) -> None:
        with self._cond:
            self.started.setdefault(node_id, now)
            self.gone.setdefault(node_id, now)
            self._cond.notify_all()

    def wait_all(self, timeout: float) -> bool:
        """Wait until every watched node is gone; False at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.gone) < len(self.released):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def leftovers(self, limit: int = 20) -> dict[str, str]:
        """State of (up to `limit`) watched nodes that are not gone, read now."""
        with self._cond:
            ids = [n for n in self.released if n not in self.gone][:limit]
        out = {}
        for node_id in ids:
            try:
                raw, _ = self.client.get(node_path(node_id))
                data = json.loads(raw) if raw else {}
                locked = self.client.get_children(node_path(node_id) + "/lock") \
                    if self.client.exists(node_path(node_id) + "/lock") else []
                out[node_id] = f"{data.get('state')} allocated_to={data.get('allocated_to')} " \
                               f"lock_contenders={len(locked)}"
            except NoNodeError:
                out[node_id] = "gone"
        return out

    def started_latencies(self) -> list[float]:
        with self._cond:
            return [self.started[n] - t for n, t in self.released.items() if n in self.started]

    def gone_latencies(self) -> list[float]:
        with self._cond:
            return [self.gone[n] - t for n, t in self.released.items() if n in self.gone]
