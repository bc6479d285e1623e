"""PROTOCOL.md as a CI master speaks it: paths, the request body, a data watch for `fulfilled`.

Nothing here comes from the launcher's code: the path layout and JSON keys are
restated from PROTOCOL.md, so the benchmark exercises the launcher only through
the wire format that Zuul uses.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType

from .drive import Later

REQUESTS = "/nodepool/requests"
NODES = "/nodepool/nodes"
FINAL_REQUEST_STATES = ("fulfilled", "failed")


def request_path(request_id: str) -> str:
    return f"{REQUESTS}/{request_id}"


def node_path(node_id: str) -> str:
    return f"{NODES}/{node_id}"


def node_lock_path(node_id: str) -> str:
    return f"{NODES}/{node_id}/lock"


def request_prefix(priority: int) -> str:
    return f"{REQUESTS}/{priority:03d}-"


def request_body(labels: list[str], requestor: str, event_id: str | None = None,
                 reuse: bool = True) -> bytes:
    """A new request as Zuul writes it: every key the launcher must keep, `requested`."""
    now = time.time()
    return json.dumps({
        "state": "requested", "state_time": now, "node_types": list(labels), "nodes": [],
        "declined_by": [], "reuse": reuse, "requestor": requestor,
        "requestor_data": {"benchmark": True}, "provider": None, "relative_priority": 0,
        "event_id": event_id, "created_time": now, "tenant_name": None,
    }).encode()


class RequestWatch:
    """Waits, on a data watch (no polling), for a request to reach `fulfilled` or `failed`.

    `final` fires once, with why: "final" (the state), "gone" (the request was deleted)
    or "error" (a read failed: `error`).
    `seen_at` is time.monotonic() when this requestor first read the final state:
    the moment a CI master would learn of it.
    """

    def __init__(self, client: KazooClient, path: str):
        self.client = client
        self.path = path
        self.final = Later()
        self.data: dict[str, Any] | None = None
        self.seen_at: float | None = None
        self.error: BaseException | None = None
        self._arm()

    def _arm(self) -> None:
        self.client.get_async(self.path, watch=self._on_event).rawlink(self._on_read)

    def _on_read(self, result: Any) -> None:
        now = time.monotonic()
        if self.final.fired:
            return
        try:
            raw, _stat = result.get_nowait()
        except NoNodeError:
            self.final.fire("gone")
            return
        except Exception as e:  # a lost session, a timeout: the caller reports it
            self.error = e
            self.final.fire("error")
            return
        data = json.loads(raw)
        if data.get("state") in FINAL_REQUEST_STATES:
            self.data, self.seen_at = data, now
            self.final.fire("final")
        # Otherwise the watch set by this read fires on the next change.

    def _on_event(self, event: Any) -> None:
        if self.final.fired:
            return
        if event.type == EventType.DELETED:
            self.final.fire("gone")
            return
        self._arm()
