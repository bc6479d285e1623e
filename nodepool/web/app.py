"""The WSGI application: a route table, a 1 s response cache, errors as one line.

Others plug in with one line: `app.route("/metrics", handler)` or
`app.route_prefix("/request/", handler)`. A handler takes a `Request` and
returns a `Response` (or raises `HTTPError`). Exceptions become a 500 with a
one-line body, logged once here; no traceback ever reaches a client.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, Iterable

from nodepool.web.http import (
    JSON,
    TEXT,
    HTTPError,
    Request,
    Response,
    http_date,
    parse_http_date,
    text,
)

log = logging.getLogger("nodepool.web")

Handler = Callable[[Request], Response]

CACHE_ENTRIES = 256   # distinct cached responses kept at most (path, params, format)


@dataclass(frozen=True)
class Route:
    handler: Handler
    # Seconds a response is served from the cache (0: never cached). Cached
    # responses carry Last-Modified, Expires and Cache-Control: public, max-age.
    cache: float = 0.0
    # The query parameters the handler reads; others do not split the cache.
    params: tuple[str, ...] = ()


class ResponseCache:
    """Responses by (path, params, format) for `expiry` seconds; built once per key at a time."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[float, Response]] = {}
        self._building: dict[tuple, threading.Lock] = {}
        self._mutex = threading.Lock()

    def get(self, key: tuple, expiry: float, build: Callable[[], Response]) \
            -> tuple[float, Response]:
        hit = self._fresh(key, expiry)
        if hit is not None:
            return hit
        with self._mutex:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:   # a flood of one URL builds it once, the others wait and share it
            hit = self._fresh(key, expiry)
            if hit is not None:
                return hit
            response = build()
            stamp = time.time()
            with self._mutex:
                self._building.pop(key, None)
                if response.status == 200:
                    self._entries[key] = (stamp, response)
                    self._trim(expiry)
            return stamp, response

    def _fresh(self, key: tuple, expiry: float) -> tuple[float, Response] | None:
        with self._mutex:
            hit = self._entries.get(key)
        if hit is not None and time.time() - hit[0] <= expiry:
            return hit
        return None

    def _trim(self, expiry: float) -> None:
        if len(self._entries) <= CACHE_ENTRIES:
            return
        now = time.time()
        for key, (stamp, _) in list(self._entries.items()):
            if now - stamp > expiry:
                del self._entries[key]
        while len(self._entries) > CACHE_ENTRIES:
            del self._entries[next(iter(self._entries))]   # oldest first


class WebApp:
    """The WSGI callable; only GET and HEAD."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.prefixes: list[tuple[str, Route]] = []
        self.cache = ResponseCache()

    def route(self, path: str, handler: Handler, cache: float = 0.0,
              params: Iterable[str] = ()) -> None:
        self.routes[path] = Route(handler, cache, tuple(params))

    def route_prefix(self, prefix: str, handler: Handler, cache: float = 0.0,
                     params: Iterable[str] = ()) -> None:
        """Every path starting with `prefix`; the handler finds the rest in `remainder`."""
        self.prefixes.append((prefix, Route(handler, cache, tuple(params))))
        self.prefixes.sort(key=lambda p: -len(p[0]))   # the longest prefix wins

    def _find(self, request: Request) -> Route | None:
        route = self.routes.get(request.path)
        if route is not None:
            return route
        for prefix, route in self.prefixes:
            if request.path.startswith(prefix):
                request.remainder = request.path[len(prefix):]
                return route
        return None

    def __call__(self, environ, start_response):
        request, route, response, stamp = self._respond(environ)
        headers = [("Content-Type", f"{response.content_type}; charset=UTF-8"),
                   ("Access-Control-Allow-Origin", "*")]
        headers += list(response.headers.items())
        body = response.data()
        if stamp is not None and response.status == 200:
            headers += [("Cache-Control", f"public, max-age={max(1, int(route.cache))}"),
                        ("Last-Modified", http_date(stamp)),
                        ("Expires", http_date(stamp + route.cache))]
            since = parse_http_date(request.headers.get("if-modified-since"))
            if since is not None and int(stamp) <= since:
                response, body = Response(status=304), b""
        elif "Cache-Control" not in response.headers:
            headers.append(("Cache-Control", "no-store"))
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{response.status} {_phrase(response.status)}", headers)
        if request is not None and request.method == "HEAD":
            return [b""]
        return [body]

    def _respond(self, environ) -> tuple[Request | None, Route | None, Response, float | None]:
        """(request, route, response, when the cached copy was built or None)."""
        request = route = None
        try:
            request = Request.from_environ(environ)
            if request.method not in ("GET", "HEAD"):
                response = text(405, f"method {request.method} not allowed; only GET and HEAD")
                response.headers["Allow"] = "GET, HEAD"
                return request, None, response, None
            route = self._find(request)
            if route is None:
                return request, None, text(404, f"not found: {request.path}"), None
            if route.cache <= 0:
                return request, route, self._call(route, request), None
            key = (request.path, request.remainder, request.wants_json,
                   tuple((p, tuple(request.params.get(p, ()))) for p in route.params))
            stamp, response = self.cache.get(key, route.cache,
                                             lambda: self._call(route, request))
            return request, route, response, stamp
        except HTTPError as e:
            return request, route, text(e.status, e.message), None
        except Exception as e:
            return request, route, self._failed(request, e), None

    def _call(self, route: Route, request: Request) -> Response:
        try:
            return route.handler(request)
        except HTTPError as e:
            return text(e.status, e.message)
        except Exception as e:
            return self._failed(request, e)

    @staticmethod
    def _failed(request: Request | None, e: Exception) -> Response:
        path = request.path if request is not None else "?"
        log.error("web: %s failed: %s: %s", path, type(e).__name__, e)
        log.debug("web: %s failed", path, exc_info=True)
        return text(500, f"internal error serving {path}: {type(e).__name__}")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def negotiated(request: Request, as_json: Callable[[], str],
               as_text: Callable[[], str]) -> Response:
    """The JSON or the text form of one answer, as the client's Accept header prefers;
    only the chosen form is built."""
    if request.wants_json:
        return Response(body=as_json(), content_type=JSON)
    body = as_text()
    return Response(body=body if body.endswith("\n") else body + "\n", content_type=TEXT)
