"""Request/response values, a regex router and the error bodies each OpenStack service sends."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

JSON = dict[str, Any]


@dataclass
class Request:
    """One parsed HTTP request as handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    base_url: str
    params: dict[str, str] = field(default_factory=dict)  # filled by the router
    microversion: tuple[int, int] = (2, 1)
    token: str | None = None

    def json(self) -> JSON:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise ApiError(400, "badRequest", f"Malformed request body: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "badRequest", "Malformed request body: expected an object")
        return data

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    """What a handler returns: a JSON body (dict), raw bytes, or nothing."""

    status: int = 200
    body: JSON | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class ApiError(Exception):
    """Raised by handlers; the server turns it into the owning service's error body."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind  # Nova's key (itemNotFound...) or Neutron's type (NetworkNotFound...)
        self.message = message
        self.headers = headers or {}


def nova_error(exc: ApiError) -> Response:
    # Nova wraps every fault as {"<faultName>": {"code": N, "message": "..."}}.
    return Response(exc.status, {exc.kind: {"code": exc.status, "message": exc.message}}, exc.headers)


def neutron_error(exc: ApiError) -> Response:
    return Response(exc.status, {"NeutronError": {"type": exc.kind, "message": exc.message, "detail": ""}},
                    exc.headers)


def glance_error(exc: ApiError) -> Response:
    # Glance answers errors from its webob layer as small HTML pages, not JSON.
    titles = {400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden",
              404: "404 Not Found", 409: "409 Conflict", 413: "413 Request Entity Too Large",
              429: "429 Too Many Requests", 500: "500 Internal Server Error"}
    title = titles.get(exc.status, f"{exc.status} Error")
    html = (f"<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n"
            f"  {exc.message}<br /><br />\n\n\n\n </body>\n</html>")
    return Response(exc.status, html.encode(), exc.headers, "text/html; charset=UTF-8")


def keystone_error(exc: ApiError) -> Response:
    return Response(exc.status, {"error": {"code": exc.status, "message": exc.message, "title": exc.kind}},
                    exc.headers)


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    template: str  # e.g. /compute/v2.1/servers/{id}; also the key calls are counted under
    pattern: re.Pattern[str]
    handler: Handler
    service: str  # identity, compute, image, network, control
    public: bool  # discovery documents are served without a token


class Router:
    """Maps (method, path) to a handler by templates such as /servers/{id}."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, service: str, public: bool = False) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
        self.routes.append(Route(method, template, re.compile(f"^{regex}/?$"), handler, service, public))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """Return (route, params, path_exists); path_exists tells 405 from 404."""
        path_exists = False
        for route in self.routes:
            m = route.pattern.match(path)
            if not m:
                continue
            path_exists = True
            if route.method == method:
                params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
                return route, params, True
        return None, {}, path_exists


def service_of(path: str) -> str:
    """Which service's error format applies to a path (for 404s no route matched)."""
    first = path.strip("/").split("/", 1)[0]
    return {"identity": "identity", "compute": "compute", "image": "image",
            "network": "network", "volume": "volume", "_sim": "control"}.get(first, "compute")


ERROR_FORMATTERS: dict[str, Callable[[ApiError], Response]] = {
    "identity": keystone_error,
    "compute": nova_error,
    "image": glance_error,
    "network": neutron_error,
    "volume": nova_error,   # Cinder's faults are shaped as Nova's
    "control": lambda exc: Response(exc.status, {"error": exc.message, "kind": exc.kind}, exc.headers),
}


def paginate(items: list[Any], req: Request, key: Callable[[Any], str], default_limit: int,
             max_limit: int) -> tuple[list[Any], str | None]:
    """Apply limit/marker like Nova, Glance and Neutron do; return the page and the next marker."""
    marker = req.arg("marker")
    if marker:
        ids = [key(i) for i in items]
        if marker not in ids:
            raise ApiError(400, "badRequest", f"marker [{marker}] not found")
        items = items[ids.index(marker) + 1:]
    limit_arg = req.arg("limit")
    try:
        limit = min(int(limit_arg), max_limit) if limit_arg else default_limit
    except ValueError as exc:
        raise ApiError(400, "badRequest", f"Invalid limit: {limit_arg}") from exc
    page = items[:limit]
    more = len(items) > limit
    return page, (key(page[-1]) if more and page else None)


def with_query(url: str, query: dict[str, list[str]], **overrides: str) -> str:
    merged = {k: v for k, v in query.items() if k not in overrides}
    for k, v in overrides.items():
        merged[k] = [v]
    return url + "?" + urllib.parse.urlencode(merged, doseq=True) if merged else url
