"""The status page's two routes: `GET /` (the page) and `GET /status.json` (its figures).

`StatusPage(launcher)` is built with the launcher's web app (nodepool/web/
__init__.py: `LauncherWeb`), before the launcher's cache exists; `attach(cache)`
starts its `StatusFeed` once the cache is loaded (the launcher calls it right
after the cache starts), so hand-overs are noted from then on, whether or not
anyone looks at the page. The page is one self-contained file,
nodepool/web/static/status.html, shipped as package data.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import TYPE_CHECKING, Callable, Mapping

from nodepool.web import status
from nodepool.web.app import WebApp
from nodepool.web.http import JSON, HTTPError, Request, Response
from nodepool.web.status_feed import StatusFeed

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher
    from nodepool.zk.cache import ZooKeeperCache

SUMMARY_CACHE = 1.0   # seconds one summary is served for, however many clients ask

# The page loads nothing from elsewhere; this makes any attempt fail loudly in the console.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")


def page_html() -> bytes:
    return importlib.resources.files("nodepool.web").joinpath("static/status.html").read_bytes()


class StatusPage:
    """The status page of one launcher; `reasons` returns why requests wait, by id
    (the request timelines), asked once per summary."""

    def __init__(self, launcher: Launcher,
                 reasons: Callable[[], Mapping[str, str]] | None = None):
        self.launcher = launcher
        self.reasons = reasons or (lambda: {})
        self.feed = StatusFeed()
        self._page = page_html()
        self._attached = False

    def install(self, app: WebApp) -> None:
        app.route("/", self.page)
        app.route("/status.json", self.status_json, cache=SUMMARY_CACHE)

    def attach(self, cache: ZooKeeperCache) -> None:
        """The launcher's cache is loaded: follow its events (once)."""
        if not self._attached:
            self._attached = True
            self.feed.attach(cache)

    def close(self) -> None:
        self.feed.detach()

    # -- handlers (web server threads) ---------------------------------------------------

    def page(self, request: Request) -> Response:
        return Response(body=self._page, content_type="text/html",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": PAGE_POLICY,
                                 "X-Content-Type-Options": "nosniff"})

    def status_json(self, request: Request) -> Response:
        if self.launcher.ctx is None:
            raise HTTPError(503, "starting: the launcher has not loaded its cache yet")
        data = status.summary(self.launcher, reasons=self.reasons(), feed=self.feed)
        body = json.dumps(data, separators=(",", ":"), allow_nan=False)
        return Response(body=body, content_type=JSON)
