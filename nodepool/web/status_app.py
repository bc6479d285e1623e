"""The status page's two routes as WSGI callables: `GET /` (the page) and `GET /status.json`.

`StatusApp(launcher)` subscribes its `StatusFeed` to the launcher's cache
(so build it after `launcher.start()`), and offers `page` and `status_json`
for the launcher's route table (nodepool/web/app.py: `app.route("/",
status.page)`), or serves both itself when called as a WSGI app (tests, a
launcher without the web server). The page is one self-contained file,
nodepool/web/static/status.html, shipped as package data.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from nodepool.web import status
from nodepool.web.status_feed import StatusFeed

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher

log = logging.getLogger("nodepool.web.status")

SUMMARY_MAX_AGE = 1.0   # seconds one summary is served for, however many clients ask

# The page loads nothing from elsewhere; this makes any attempt fail loudly in the console.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")

Reasons = Mapping[str, str] | Callable[[], Mapping[str, str]]


def page_html() -> bytes:
    return importlib.resources.files("nodepool.web").joinpath("static/status.html").read_bytes()


class StatusApp:
    """The status page of one launcher; `reasons`: why requests wait, by id (a mapping,
    or a callable returning one per summary), from the request timelines."""

    def __init__(self, launcher: Launcher, reasons: Reasons | None = None,
                 max_age: float = SUMMARY_MAX_AGE):
        if launcher.ctx is None:
            raise RuntimeError("StatusApp needs a started launcher (its cache)")
        self.launcher = launcher
        self.reasons = reasons
        self.max_age = max_age
        self.feed = StatusFeed(clock=launcher.ctx.clock)
        self.feed.attach(launcher.ctx.cache)
        self._page = page_html()
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None   # (monotonic time, JSON body)

    def close(self) -> None:
        self.feed.detach()

    # -- routes -------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        """Both routes on their own (when no route table serves them)."""
        path = environ.get("PATH_INFO") or "/"
        if path == "/":
            return self.page(environ, start_response)
        if path == "/status.json":
            return self.status_json(environ, start_response)
        return _reply(start_response, "404 Not Found", b"not found: " + path.encode()[:200]
                      + b"\n", "text/plain; charset=utf-8")

    def page(self, environ: dict, start_response) -> Iterable[bytes]:
        if not _readable(environ):
            return _not_allowed(start_response)
        return _reply(start_response, "200 OK", self._page, "text/html; charset=utf-8",
                      [("Cache-Control", "no-cache"), ("Content-Security-Policy", PAGE_POLICY)],
                      head=environ.get("REQUEST_METHOD") == "HEAD")

    def status_json(self, environ: dict, start_response) -> Iterable[bytes]:
        if not _readable(environ):
            return _not_allowed(start_response)
        try:
            body = self.body()
        except Exception:
            log.exception("The status summary failed")
            return _reply(start_response, "500 Internal Server Error",
                          b"the status summary failed; the launcher's log says why\n",
                          "text/plain; charset=utf-8")
        return _reply(start_response, "200 OK", body, "application/json",
                      [("Cache-Control", f"public, max-age={self.max_age:g}"),
                       ("Access-Control-Allow-Origin", "*")],
                      head=environ.get("REQUEST_METHOD") == "HEAD")

    def body(self) -> bytes:
        """The summary as JSON, made at most once per `max_age` seconds."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.max_age:
                return self._cached[1]
            reasons = self.reasons() if callable(self.reasons) else self.reasons
            data = status.summary(self.launcher, reasons=reasons, feed=self.feed)
            body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
            self._cached = (now, body)
            return body


def _readable(environ: dict) -> bool:
    return environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD")


def _not_allowed(start_response) -> Iterable[bytes]:
    return _reply(start_response, "405 Method Not Allowed", b"only GET and HEAD\n",
                  "text/plain; charset=utf-8", [("Allow", "GET, HEAD")])


def _reply(start_response, status_line: str, body: bytes, content_type: str,
           headers: list[tuple[str, str]] = (), head: bool = False) -> list[bytes]:
    start_response(status_line, [("Content-Type", content_type),
                                 ("Content-Length", str(len(body))),
                                 ("X-Content-Type-Options", "nosniff"), *headers])
    return [] if head else [body]
