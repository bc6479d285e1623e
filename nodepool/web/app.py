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

_REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}
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
        response, stamp, request = self._respond(environ)
        headers = [("Content-Type", f"{response.content_type}; charset=UTF-8"),
                   ("Access-Control-Allow-Origin", "*")]
        headers += list(response.headers.items())
        body = response.data()
        if stamp is not None and response.status == 200:
            expiry = self._find_cache(request)
            headers += [("Cache-Control", f"public, max-age={int(expiry) or 1}"),
                        ("Last-Modified", http_date(stamp)),
                        ("Expires", http_date(stamp + expiry))]
            since = parse_http_date(request.headers.get("if-modified-since"))
            if since is not None and int(stamp) <= since:
                response, body = Response(status=304), b""
        elif "Cache-Control" not in response.headers:
            headers.append(("Cache-Control", "no-store"))
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{response.status} {_REASONS.get(response.status, 'Unknown')}",
                       headers)
        if request is not None and request.method == "HEAD":
            return [b""]
        return [body]

    def _find_cache(self, request: Request) -> float:
        route = self._find(request)
        return route.cache if route is not None else 0.0

    def _respond(self, environ) -> tuple[Response, float | None, Request | None]:
        request = None
        try:
            request = Request.from_environ(environ)
            if request.method not in ("GET", "HEAD"):
                response = text(405, f"method {request.method} not allowed; only GET and HEAD")
                response.headers["Allow"] = "GET, HEAD"
                return response, None, request
            route = self._find(request)
            if route is None:
                return text(404, f"not found: {request.path}"), None, request
            if route.cache <= 0:
                return self._call(route, request), None, request
            key = (request.path, request.remainder, request.wants_json,
                   tuple((p, tuple(request.params.get(p, ()))) for p in route.params))
            stamp, response = self.cache.get(key, route.cache,
                                             lambda: self._call(route, request))
            return response, stamp, request
        except HTTPError as e:
            return text(e.status, e.message), None, request
        except Exception as e:
            return self._failed(request, e), None, request

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


def negotiated(request: Request, data_json: str, data_text: str) -> Response:
    """The JSON or the text form of one listing, as the client's Accept header prefers."""
    if request.wants_json:
        return Response(body=data_json, content_type=JSON)
    return Response(body=data_text if data_text.endswith("\n") else data_text + "\n",
                    content_type=TEXT)
