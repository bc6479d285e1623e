"""Request timelines on the web: `GET /request/ID` and the request list's Reason column.

Both read ZooKeeper (the timelines live there, written by every launcher's
flusher), with async calls, and refuse at once with a 503 (or an empty
Reason column) while ZooKeeper cannot be relied on, so a web worker never
waits on a dead connection. See doc/operation.md, "Request timelines".
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException

from nodepool.errors import NotFound
from nodepool.explain import explain, reasons_of, render_explain
from nodepool.web.app import WebApp, negotiated
from nodepool.web.endpoints import zookeeper_problem
from nodepool.web.http import HTTPError, Request, Response

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher

log = logging.getLogger("nodepool.web")

REQUEST_ID = re.compile(r"^\d{1,10}-\d{1,20}$")   # "<priority>-<sequence>", as ZooKeeper names them
EXPLAIN_CACHE = 1.0   # seconds


class RequestTimelines:
    """The web's view of request timelines, for one launcher."""

    def __init__(self, launcher: "Launcher"):
        self.launcher = launcher

    def install(self, app: WebApp) -> None:
        app.route_prefix("/request/", self.request_explain, cache=EXPLAIN_CACHE)

    def _kazoo(self):
        problem = zookeeper_problem(self.launcher)
        if problem is not None:
            raise HTTPError(503, f"{problem}; a request's timeline needs a fresh read")
        return self.launcher.ctx.zk.kazoo

    def request_explain(self, request: Request) -> Response:
        request_id = request.remainder.strip("/")
        if not REQUEST_ID.match(request_id):
            raise HTTPError(400, f"bad request id {request_id[:40]!r}: ids look like "
                                 f"100-0000000042")
        try:
            explained = explain(self._kazoo(), request_id)
        except NotFound as e:
            raise HTTPError(404, str(e)) from None
        except KazooException as e:
            raise HTTPError(503, f"ZooKeeper unavailable: {type(e).__name__}") from None
        return negotiated(request, lambda: json.dumps(explained, sort_keys=True),
                          lambda: render_explain(explained))

    def reasons(self) -> dict[str, str]:
        """Request id -> why it waits or failed, for every request in the launcher's
        cache; empty while ZooKeeper cannot be relied on (the column is then blank)."""
        ctx = self.launcher.ctx
        if ctx is None or zookeeper_problem(self.launcher) is not None:
            return {}
        try:
            return reasons_of(ctx.zk.kazoo, ctx.cache.requests())
        except KazooException as e:
            log.warning("Request reasons not read: ZooKeeper %s", type(e).__name__)
            return {}
