"""The launcher's web endpoints: Nodepool's /ready and listings, and a route table for more.

`LauncherWeb(launcher)` binds `webapp.listen_address`:`webapp.port` at once
(a port in use raises `WebBindError`) and serves from its own threads after
`start()`. Others add routes with one line each:

    launcher.web.app.route("/metrics", handler)
    launcher.web.app.route_prefix("/request/", handler)

`GET /request/ID` and request-list's Reason column come from the request
timelines (timelines.py); the status page (`GET /`, `/status.json`,
status_app.py) shows the same reasons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodepool.web.app import WebApp
from nodepool.web.endpoints import NodepoolEndpoints
from nodepool.web.http import HTTPError, Request, Response
from nodepool.web.server import Limits, WebBindError, WebServer
from nodepool.web.status_app import StatusPage
from nodepool.web.timelines import RequestTimelines

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher
    from nodepool.zk.cache import ZooKeeperCache

__all__ = ["HTTPError", "LauncherWeb", "Limits", "Request", "Response", "WebApp",
           "WebBindError", "WebServer"]


class LauncherWeb:
    """The app, Nodepool's endpoints on it, and the server, for one launcher."""

    def __init__(self, launcher: "Launcher", limits: Limits = Limits()):
        self.app = WebApp()
        self.timelines = RequestTimelines(launcher)
        self.timelines.install(self.app)
        self.endpoints = NodepoolEndpoints(launcher, request_reasons=self.timelines.reasons)
        self.endpoints.install(self.app)
        # The status page asks for the reasons through the endpoints: whoever fills
        # request-list's Reason column fills the page's too.
        self.status = StatusPage(launcher, reasons=lambda: self.endpoints.request_reasons())
        self.status.install(self.app)
        where = launcher.config.webapp
        self.server = WebServer(self.app, where.listen_address, where.port, limits)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> "LauncherWeb":
        self.server.start()
        return self

    def watch(self, cache: "ZooKeeperCache") -> None:
        """The launcher's cache is loaded: what follows its events starts (the status
        page's hand-overs and failures)."""
        self.status.attach(cache)

    def stop(self) -> None:
        self.server.stop()
        self.status.close()
