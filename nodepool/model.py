"""Node and NodeRequest records as PROTOCOL.md defines them, with their state machines."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import time
from typing import Any, Callable, ClassVar

from nodepool.errors import InvalidTransition, ProtocolError


class NodeState(str, enum.Enum):
    """The states of a node znode; `TRANSITIONS` below says which edges we may write."""

    INIT = "init"
    BUILDING = "building"
    TESTING = "testing"
    READY = "ready"
    IN_USE = "in-use"
    USED = "used"
    HOLD = "hold"
    DELETING = "deleting"
    FAILED = "failed"
    ABORTED = "aborted"
    DELETED = "deleted"


class RequestState(str, enum.Enum):
    """The states of a node request."""

    REQUESTED = "requested"
    PENDING = "pending"
    FULFILLED = "fulfilled"
    FAILED = "failed"


_N = NodeState
# Every edge a writer of ours may take. Requestors (Zuul) write some of these
# too; we never refuse to *read* a state, only to write an illegal edge.
NODE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    # init: the launcher has claimed an id and not yet called the cloud.
    _N.INIT: frozenset({_N.BUILDING, _N.READY, _N.FAILED, _N.ABORTED, _N.DELETING}),
    # building: a server exists or is being created; it may be resumed.
    _N.BUILDING: frozenset({_N.TESTING, _N.READY, _N.FAILED, _N.ABORTED, _N.DELETING}),
    # testing: booted, being checked (keyscan) before it is handed out.
    _N.TESTING: frozenset({_N.READY, _N.FAILED, _N.DELETING}),
    # ready: the requestor takes it (in-use); operators hold or delete it.
    _N.READY: frozenset({_N.IN_USE, _N.USED, _N.HOLD, _N.DELETING}),
    # in-use: the job runs; then used, or held by autohold / an operator.
    _N.IN_USE: frozenset({_N.USED, _N.HOLD, _N.DELETING}),
    # used: single use is over; only deletion (or an operator's hold) follows.
    _N.USED: frozenset({_N.DELETING, _N.HOLD}),
    # hold: kept for a person; releasing it means used, or delete it at once.
    _N.HOLD: frozenset({_N.USED, _N.DELETING}),
    # deleting: retried deletions stay here until the server is gone.
    _N.DELETING: frozenset({_N.DELETING, _N.DELETED}),
    _N.FAILED: frozenset({_N.DELETING}),
    _N.ABORTED: frozenset({_N.DELETING}),
    _N.DELETED: frozenset(),
}
# A launch under way: its server (or slot) is being made ready.
LAUNCHING: frozenset[NodeState] = frozenset({_N.INIT, _N.BUILDING, _N.TESTING})

_R = RequestState
REQUEST_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    # requested -> pending: a pool took it; -> failed: every pool declined.
    # requested -> requested: a pool declined (declined_by grew).
    # requested -> fulfilled: served wholly from ready nodes, one write instead
    # of two (requestors only wait for fulfilled or failed).
    _R.REQUESTED: frozenset({_R.REQUESTED, _R.PENDING, _R.FULFILLED, _R.FAILED}),
    # pending -> requested: reset of a lost request or a decline after a
    # launch failed for good; pending -> failed: declined by every pool.
    _R.PENDING: frozenset({_R.FULFILLED, _R.FAILED, _R.REQUESTED}),
    # Terminal: the requestor deletes the request.
    _R.FULFILLED: frozenset(),
    _R.FAILED: frozenset(),
}


def _check(table: dict, old: enum.Enum, new: enum.Enum, what: str) -> None:
    if new not in table[old]:
        raise InvalidTransition(f"{what}: illegal state change {old.value} -> {new.value}")


class _Record:
    """What nodes and requests share: JSON that keeps unknown keys, a state table."""

    _NOT_JSON: ClassVar[frozenset[str]] = frozenset({"id", "extra", "version"})
    _TRANSITIONS: ClassVar[dict]
    _STATES: ClassVar[type[enum.Enum]]
    _PARSERS: ClassVar[dict[str, Callable[[Any], Any]]]

    def set_state(self, new, now: float | None = None) -> None:
        """Move to `new`, refusing an edge the table does not allow; stamps state_time."""
        new = self._STATES(new)
        _check(self._TRANSITIONS, self.state, new, f"{type(self).__name__} {self.id}")
        self.state = new
        self.state_time = time.time() if now is None else now

    def to_dict(self) -> dict[str, Any]:
        """Every known key (null where unknown) over the unknown keys we read."""
        data = dict(self.extra)
        for name in _json_fields(type(self)):
            value = getattr(self, name)
            data[name] = value.value if isinstance(value, enum.Enum) else value
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, obj_id: str | None, data: dict[str, Any], version: int = -1):
        return _from_dict(cls, obj_id, data, version)

    @classmethod
    def from_json(cls, obj_id: str | None, raw: bytes, version: int = -1):
        return cls.from_dict(obj_id, _loads(raw, f"{cls.__name__} {obj_id}"), version)


@dataclasses.dataclass
class Node(_Record):
    """A node znode's JSON; unknown keys written by others are kept in `extra`."""

    id: str | None = None
    state: NodeState = NodeState.INIT
    state_time: float = 0.0
    created_time: float = 0.0
    type: list[str] = dataclasses.field(default_factory=list)
    provider: str | None = None
    pool: str | None = None
    cloud: str | None = None
    region: str | None = None
    az: str | None = None
    host_id: str | None = None
    launcher: str | None = None
    allocated_to: str | None = None
    interface_ip: str | None = None
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    public_ipv6: str | None = None
    private_ipv6: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22
    username: str = "zuul"
    python_path: str = "auto"
    shell_type: str | None = None
    host_keys: list[str] = dataclasses.field(default_factory=list)
    external_id: str | None = None
    hostname: str | None = None
    image_id: str | None = None
    slot: int | None = None
    attributes: dict | None = None
    # Zuul's default is {} (a job's `'spot' in node_properties` must work); null reads as {}.
    node_properties: dict = dataclasses.field(default_factory=dict)
    resources: dict | None = None
    tenant_name: str | None = None
    requestor: str | None = None
    user_data: Any = None
    hold_job: str | None = None
    comment: str | None = None
    hold_expiration: float | None = None
    driver_data: Any = None
    # Not part of the JSON: the rest of what we read, and the znode version.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    version: int = dataclasses.field(default=-1, compare=False)

    _TRANSITIONS: ClassVar[dict] = NODE_TRANSITIONS
    _STATES: ClassVar[type[enum.Enum]] = NodeState

    @property
    def labels(self) -> list[str]:
        return self.type

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["ssh_port"] = self.connection_port  # mirrored for old clients
        return data


@dataclasses.dataclass
class NodeRequest(_Record):
    """A node request znode's JSON; `id` is the znode name `<PPP>-<SEQ>`."""

    id: str | None = None
    state: RequestState = RequestState.REQUESTED
    state_time: float = 0.0
    node_types: list[str] = dataclasses.field(default_factory=list)
    nodes: list[str] = dataclasses.field(default_factory=list)
    declined_by: list[str] = dataclasses.field(default_factory=list)
    reuse: bool = True
    requestor: str | None = None
    requestor_data: Any = None
    provider: str | None = None
    relative_priority: int = 0
    event_id: str | None = None
    created_time: float | None = None
    tenant_name: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    version: int = dataclasses.field(default=-1, compare=False)

    _TRANSITIONS: ClassVar[dict] = REQUEST_TRANSITIONS
    _STATES: ClassVar[type[enum.Enum]] = RequestState

    @property
    def priority(self) -> int:
        """The `<PPP>` prefix of the id (lower is served first)."""
        return int(self.id[:3]) if self.id else 0

    @property
    def sequence(self) -> int:
        return int(self.id[4:]) if self.id else 0

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """Protocol service order: (priority prefix, relative_priority, sequence)."""
        return (self.priority, self.relative_priority, self.sequence)

def is_request_id(name: str) -> bool:
    """Clients recognise a request id by the `-` at index 3."""
    return len(name) > 4 and name[3] == "-" and name[:3].isdigit()


def _loads(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"{what}: data is not UTF-8 JSON: {e}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _label_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)   # old data: one label


def _list(value: Any) -> list:
    return list(value or [])


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


@functools.cache
def _json_fields(cls) -> dict[str, None]:
    """The record's JSON keys in field order, as a dict for quick lookups (asked for
    every record read or written)."""
    return {f.name: None for f in dataclasses.fields(cls) if f.name not in cls._NOT_JSON}


def _from_dict(cls, obj_id, data, version):
    known, parsers = _json_fields(cls), cls._PARSERS
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            extra[key] = value
        elif key not in parsers:
            kwargs[key] = value
        else:
            try:
                kwargs[key] = parsers[key](value)
            except (ValueError, TypeError) as e:
                raise ProtocolError(f"{cls.__name__} {obj_id}: bad {key!r}: {e}") from None
    if cls is Node and isinstance(kwargs.get("external_id"), dict):
        _split_external_ids(kwargs)
    if cls is Node and "connection_port" not in data and "ssh_port" in data:
        kwargs["connection_port"] = int(data["ssh_port"])
    # ssh_port is derived from connection_port on write; keep it out of extra.
    extra.pop("ssh_port", None)
    return cls(id=obj_id, extra=extra, version=version, **kwargs)


def _split_external_ids(kwargs: dict[str, Any]) -> None:
    """Nodepool's AWS driver writes external_id as {"instance": ID, "host": ID}: the server
    is the instance (what listings and leak cleanup compare); the other ids go to
    driver_data (a dedicated host is released from there, drivers/aws/delete.py)."""
    ids = dict(kwargs["external_id"])
    kwargs["external_id"] = ids.pop("instance", None)
    data = kwargs.get("driver_data")
    if data is None or isinstance(data, dict):
        kwargs["driver_data"] = {**ids, **(data or {})}


# How keys that need it are read; every other known key is taken as it is.
Node._PARSERS = {"state": NodeState, "type": _label_list, "host_keys": _list,
                 "connection_port": _port, "node_properties": lambda value: dict(value or {})}
NodeRequest._PARSERS = {"state": RequestState, "node_types": _list, "nodes": _list,
                        "declined_by": _list,
                        "reuse": lambda value: True if value is None else bool(value),
                        "relative_priority": lambda value: int(value or 0)}
