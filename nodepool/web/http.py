"""What a handler sees and returns: the parsed request, the response, HTTP errors."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import parse_qs

JSON = "application/json"
TEXT = "text/plain"


class HTTPError(Exception):
    """Raise in a handler to answer `status` with a one-line `message` (text/plain)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, list[str]]   # the query string, every value of every key
    headers: Mapping[str, str]     # lower-case names
    remainder: str = ""            # for a prefix route: the path after the prefix

    def param(self, name: str) -> str | None:
        """The last value of a query parameter, or None."""
        values = self.params.get(name)
        return values[-1] if values else None

    @property
    def wants_json(self) -> bool:
        return best_match(self.headers.get("accept", "")) == JSON

    @classmethod
    def from_environ(cls, environ: Mapping) -> "Request":
        raw_path = environ.get("PATH_INFO") or "/"
        # WSGI gives the path as latin-1 decoded bytes; undo that for UTF-8 paths.
        try:
            path = raw_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            path = raw_path
        try:
            params = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True,
                              strict_parsing=False, max_num_fields=100)
        except ValueError as e:
            raise HTTPError(400, f"bad query string: {e}") from None
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        return cls(method=environ.get("REQUEST_METHOD", "GET").upper(), path=path,
                   params=params, headers=headers)


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)

    def data(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


def text(status: int, body: str) -> Response:
    return Response(status=status, body=body if body.endswith("\n") else body + "\n")


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _quality(accept: str, offer: str) -> tuple[float, int]:
    """(q, specificity) of `offer` in an Accept header: the most specific range decides."""
    kind = offer.split("/")[0]
    best = (-1.0, -1)
    for part in accept.split(","):
        media, *options = [p.strip() for p in part.split(";")]
        media = media.lower()
        if media == offer:
            specificity = 2
        elif media == f"{kind}/*":
            specificity = 1
        elif media in ("*/*", "*"):
            specificity = 0
        else:
            continue
        q = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if specificity > best[1]:
            best = (q, specificity)
    return best


def best_match(accept: str) -> str:
    """JSON or text, as Nodepool chooses between the two: text unless JSON is preferred.

    No Accept header, `*/*`, or a browser's list gives text; JSON when the client
    ranks `application/json` above `text/plain`, or names it while reaching text
    only through a wildcard (`application/json, */*`).
    """
    if not accept.strip():
        return TEXT
    q_json, spec_json = _quality(accept, JSON)
    q_text, spec_text = _quality(accept, TEXT)
    if q_json <= 0:
        return TEXT
    if q_json > q_text or (q_json == q_text and spec_json > spec_text):
        return JSON
    return TEXT
