"""The launcher's web endpoints: Nodepool's /ready and listings, and a route table for more.

`LauncherWeb(launcher)` binds `webapp.listen_address`:`webapp.port` at once
(a port in use raises `WebBindError`) and serves from its own threads after
`start()`. Others add routes with one line each:

    launcher.web.app.route("/metrics", handler)
    launcher.web.app.route_prefix("/request/", handler)

and fill request-list's Reason column with `launcher.web.endpoints.request_reasons`
(a callable returning {request id: text}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodepool.web.app import WebApp
from nodepool.web.endpoints import NodepoolEndpoints
from nodepool.web.http import HTTPError, Request, Response
from nodepool.web.server import Limits, WebBindError, WebServer

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher

__all__ = ["HTTPError", "LauncherWeb", "Limits", "Request", "Response", "WebApp",
           "WebBindError", "WebServer"]


class LauncherWeb:
    """The app, Nodepool's endpoints on it, and the server, for one launcher."""

    def __init__(self, launcher: "Launcher", limits: Limits = Limits()):
        self.app = WebApp()
        self.endpoints = NodepoolEndpoints(launcher)
        self.endpoints.install(self.app)
        where = launcher.config.webapp
        self.server = WebServer(self.app, where.listen_address, where.port, limits)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> "LauncherWeb":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
