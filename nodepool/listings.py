"""The tables the CLI and the web endpoints both list: columns (key, header) and row values.

Keys and headers are Nodepool's (its status.py), so a client of Nodepool's
web endpoints or a reader of its CLI sees the same columns here. A row is a
dict keyed by column key; `table_text` renders rows for people (prettytable),
`table_json` for scripts (a list of objects with the column keys).

`age` follows Nodepool per list: nodes and requests carry the formatted age
(`DD:HH:MM:SS` since the last state change) in JSON too; image builds and
uploads (and image-status's build request age) carry the `state_time` as an
integer timestamp, formatted only in text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import prettytable

from nodepool.model import Node, NodeRequest
from nodepool.zk.image_records import ImageBuild, ImageUpload


def format_age(seconds: float) -> str:
    """Ages the Nodepool way: DD:HH:MM:SS, zero-padded."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def age_of(state_time: float | None, now: float | None = None) -> float:
    if not state_time:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - state_time)


def cell(value: Any) -> str:
    """One table cell: nothing for null, lists comma-joined, mappings as JSON."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    # How the text table shows the value, when not `cell` (timestamps shown as ages).
    text: Callable[[Any], str] | None = None


def _timestamp_age(value: Any) -> str:
    return format_age(age_of(value)) if isinstance(value, (int, float)) else cell(value)


@dataclass(frozen=True)
class Table:
    """One listing: its columns, in order."""

    name: str
    columns: tuple[Column, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.columns)

    def select(self, fields: Sequence[str] | None) -> tuple[Column, ...]:
        """The columns `fields` names, in table order; ValueError naming an unknown one."""
        if not fields:
            return self.columns
        unknown = [f for f in fields if f not in self.keys]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {self.name}; "
                             f"valid fields: {', '.join(self.keys)}")
        return tuple(c for c in self.columns if c.key in fields)


NODES = Table("node-list", (
    Column("id", "ID"), Column("provider", "Provider"), Column("label", "Label"),
    Column("server_id", "Server ID"), Column("public_ipv4", "Public IPv4"),
    Column("ipv6", "IPv6"), Column("state", "State"), Column("age", "Age"),
    Column("locked", "Locked"), Column("pool", "Pool"), Column("hostname", "Hostname"),
    Column("private_ipv4", "Private IPv4"), Column("AZ", "AZ"),
    Column("username", "Username"), Column("connection_port", "Port"),
    Column("launcher", "Launcher"), Column("allocated_to", "Allocated To"),
    Column("hold_job", "Hold Job"), Column("comment", "Comment"),
    Column("user_data", "User Data"), Column("driver_data", "Driver Data"),
))
# What `nodepool list` shows without --detail.
NODE_BRIEF_KEYS = ("id", "provider", "label", "server_id", "public_ipv4", "ipv6", "state",
                   "age", "locked")

REQUESTS = Table("request-list", (
    Column("id", "Request ID"), Column("relative_priority", "Priority"),
    Column("state", "State"), Column("requestor", "Requestor"),
    Column("node_types", "Node Types"), Column("nodes", "Nodes"),
    Column("declined_by", "Declined By"), Column("event_id", "Event ID"),
    Column("age", "Age"), Column("reason", "Reason"),
))

LABELS = Table("label-list", (Column("label", "Label"),))

PROVIDERS = Table("provider-list", (
    Column("provider", "Provider"), Column("owner", "Owner"), Column("hostname", "Hostname"),
    Column("spread_owner", "Spread Owner"), Column("standing_by", "Waiting")))

DIB_IMAGES = Table("dib-image-list", (
    Column("id", "ID"), Column("image", "Image"), Column("builder", "Builder"),
    Column("formats", "Formats"), Column("state", "State"),
    Column("age", "Age", _timestamp_age),
))

IMAGE_STATUS = Table("image-status", (
    Column("image", "Image"), Column("paused", "Paused"),
    Column("build_request", "Build Request"),
    Column("build_request_age", "Build Request Age", _timestamp_age),
))

IMAGES = Table("image-list", (
    Column("id", "Build ID"), Column("upload_id", "Upload ID"),
    Column("provider", "Provider"), Column("image", "Image"),
    Column("external_name", "Provider Image Name"),
    Column("external_id", "Provider Image ID"), Column("state", "State"),
    Column("age", "Age", _timestamp_age),
))


# -- rows -------------------------------------------------------------------

def node_row(node: Node, locked: bool, now: float | None = None) -> dict[str, Any]:
    return {
        "id": node.id, "provider": node.provider, "label": node.type,
        "server_id": node.external_id, "public_ipv4": node.public_ipv4,
        "ipv6": node.public_ipv6, "state": node.state.value,
        "age": format_age(age_of(node.state_time, now)),
        "locked": "locked" if locked else "unlocked", "pool": node.pool,
        "hostname": node.hostname, "private_ipv4": node.private_ipv4, "AZ": node.az,
        "username": node.username, "connection_port": node.connection_port,
        "launcher": node.launcher, "allocated_to": node.allocated_to,
        "hold_job": node.hold_job, "comment": node.comment,
        "user_data": node.user_data, "driver_data": node.driver_data,
    }


def node_rows(found: Iterable[Node], is_locked: Callable[[str], bool],
              now: float | None = None) -> list[dict[str, Any]]:
    """Rows in node id order (as Nodepool lists them)."""
    now = time.time() if now is None else now
    return [node_row(n, is_locked(n.id), now) for n in sorted(found, key=lambda n: n.id or "")]


def request_row(req: NodeRequest, now: float | None = None, reason: str = "") -> dict[str, Any]:
    return {
        "id": req.id, "relative_priority": req.relative_priority, "state": req.state.value,
        "requestor": req.requestor, "node_types": req.node_types, "nodes": req.nodes,
        "declined_by": req.declined_by, "event_id": req.event_id,
        "age": format_age(age_of(req.state_time, now)), "reason": reason,
    }


def request_rows(found: Iterable[NodeRequest], reasons: Mapping[str, str] | None = None,
                 now: float | None = None) -> list[dict[str, Any]]:
    """Rows in the order given (callers pass protocol service order); `reasons`: id -> text."""
    now = time.time() if now is None else now
    reasons = reasons or {}
    return [request_row(r, now, reasons.get(r.id, "")) for r in found]


def label_rows(pool_components: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every label some registered pool supports, once each, sorted."""
    labels: set[str] = set()
    for pool in pool_components:
        labels.update(str(label) for label in pool.get("supported_labels") or ())
    return [{"label": label} for label in sorted(labels)]


def provider_rows(providers: Iterable[str], launcher_components: Iterable[Mapping[str, Any]],
                  holders: Mapping[str, str]) -> list[dict[str, Any]]:
    """Who holds each provider's lease (`owner`), and who should by the spread; `standing_by`:
    the launchers waiting for its lease. Providers with a lease but not configured here too."""
    from nodepool.launcher.placement import seats_from_components
    from nodepool.launcher.spread import assign
    comps = list(launcher_components)
    seats = seats_from_components(comps)
    spread = assign(providers, {lid: seat.serves for lid, seat in seats.items()})
    hosts = {c.get("launcher_id"): c.get("hostname") for c in comps}
    names = sorted(set(providers) | {h for h in holders if not h.startswith("_")})
    return [{"provider": name, "owner": holders.get(name),
             "hostname": hosts.get(holders.get(name)), "spread_owner": spread.get(name),
             "standing_by": sorted(lid for lid, seat in seats.items() if name in seat.waiting)}
            for name in names]


def dib_image_row(build: ImageBuild, paused: bool = False) -> dict[str, Any]:
    return {"id": build.name, "image": build.image, "builder": build.builder,
            "formats": sorted(build.formats), "state": "paused" if paused else build.state.value,
            "age": int(build.state_time or 0)}


def image_row(upload: ImageUpload) -> dict[str, Any]:
    return {"id": upload.build_id, "upload_id": upload.id, "provider": upload.provider,
            "image": upload.image, "external_name": upload.external_name,
            "external_id": upload.external_id, "state": upload.state.value,
            "age": int(upload.state_time or 0)}


def image_status_row(image: str, paused: bool, request: Any) -> dict[str, Any]:
    """`request`: the image's BuildRequest (nodepool/zk/image_flags.py) or None."""
    if request is None:
        state, age = None, None
    else:
        state, age = ("pending" if request.pending else "building"), int(request.state_time)
    return {"image": image, "paused": bool(paused), "build_request": state,
            "build_request_age": age}


# -- rendering --------------------------------------------------------------

def table_text(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> str:
    """A left-aligned prettytable table; drawn here for plain ASCII cells (10x faster)."""
    headers = [c.header for c in columns]
    cells = [[(c.text or cell)(row.get(c.key)) for c in columns] for row in rows]
    fast = _ascii_table(headers, cells)
    if fast is not None:
        return fast
    table = prettytable.PrettyTable(headers)
    table.align = "l"
    for values in cells:
        table.add_row(values)
    return table.get_string()


def _ascii_table(headers: list[str], cells: list[list[str]]) -> str | None:
    """prettytable's exact layout, or None when a cell needs its width rules (non-ASCII,
    line breaks, tabs). With 10,000 nodes prettytable takes 0.6 s of CPU, this 0.06 s."""
    widths = [len(h) for h in headers]
    for values in cells:
        for i, value in enumerate(values):
            if not value.isascii() or not value.isprintable():
                return None
            if len(value) > widths[i]:
                widths[i] = len(value)
    if not all(h.isascii() and h.isprintable() for h in headers):
        return None
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([rule, line(headers), rule, *(line(v) for v in cells), rule])


def table_json(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> str:
    keys = [c.key for c in columns]
    return json.dumps([{k: row.get(k) for k in keys} for row in rows])
