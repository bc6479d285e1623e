"""Image build and upload records in Nodepool's exact JSON (PROTOCOL.md "Images").

Nodepool 11 (`nodepool/zk/zookeeper.py`, `ImageBuild` and `ImageUpload`)
writes these records as `json.dumps` of a dict with its keys in a fixed
order; `to_bytes` writes the same keys, in the same order, with the same
separators, so a record Nodepool wrote is re-serialised byte for byte
(tests/data/nodepool-images/). The record's name, build id, provider and
upload id live in its znode path, never in its JSON.

Build JSON: `state`, `state_time`, `builder` (hostname; only when known),
`builder_id` (the builder's uuid; only when known), `formats` (sorted,
comma-joined; only when there is one), `username`, `python_path`,
`shell_type`. Upload JSON: `state`, `state_time`, `external_id`,
`external_name`, `format`, `username`, `python_path`, `shell_type`.

Keys others wrote that these records do not know are kept and written back
after the known ones (Nodepool itself drops them).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from types import MappingProxyType
from typing import Any, Mapping

from nodepool.errors import InvalidTransition, ProtocolError
from nodepool.zk import paths


class BuildState(str, enum.Enum):
    """The states of a build znode (Nodepool's ImageBuild.VALID_STATES)."""

    BUILDING = "building"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class UploadState(str, enum.Enum):
    """The states of an upload znode (Nodepool's ImageUpload.VALID_STATES)."""

    UPLOADING = "uploading"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


_B = BuildState
BUILD_TRANSITIONS: dict[BuildState, frozenset[BuildState]] = {
    # building: the builder holding the image's build lock runs diskimage-builder;
    # a build whose builder died (unlocked) is deleted by cleanup.
    _B.BUILDING: frozenset({_B.READY, _B.FAILED, _B.DELETING}),
    # ready: uploaded everywhere it is wanted; rotation or `dib-image-delete` ends it.
    _B.READY: frozenset({_B.DELETING}),
    # failed: kept for its log, then cleaned up.
    _B.FAILED: frozenset({_B.DELETING}),
    # deleting: retried until its uploads and files are gone, then the znode goes.
    _B.DELETING: frozenset({_B.DELETING}),
}

_U = UploadState
UPLOAD_TRANSITIONS: dict[UploadState, frozenset[UploadState]] = {
    # uploading: the builder holding the upload lock sends the image to the cloud;
    # an unlocked one (its builder died) is deleted by cleanup.
    _U.UPLOADING: frozenset({_U.READY, _U.FAILED, _U.DELETING}),
    # ready: launchers boot from it; rotation or `image-delete` ends it.
    _U.READY: frozenset({_U.DELETING}),
    _U.FAILED: frozenset({_U.DELETING}),
    # deleting: the cloud image is deleted (retried), then the znode.
    _U.DELETING: frozenset({_U.DELETING}),
}

_BUILD_KEYS = ("state", "state_time", "builder", "builder_id", "formats", "username",
               "python_path", "shell_type")
_UPLOAD_KEYS = ("state", "state_time", "external_id", "external_name", "format", "username",
                "python_path", "shell_type")
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


def _decode(raw: bytes | None, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"{where}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _state(enum_type, value: Any, where: str):
    try:
        return enum_type(value)
    except ValueError:
        valid = ", ".join(s.value for s in enum_type)
        raise ProtocolError(f"{where}: unknown state {value!r} (expected one of {valid})") from None


def _extra(data: Mapping[str, Any], known: tuple[str, ...]) -> Mapping[str, Any]:
    found = {k: v for k, v in data.items() if k not in known}
    return MappingProxyType(found) if found else _NO_EXTRA


def _check_edge(table, old, new, what: str) -> None:
    if old is not None and new not in table[old]:
        raise InvalidTransition(f"{what}: {old.value} -> {new.value} is not allowed")


@dataclasses.dataclass(frozen=True)
class ImageBuild:
    """One build of a diskimage: `/nodepool/images/<image>/builds/<id>`."""

    image: str
    id: str
    state: BuildState
    state_time: float | None = None
    builder: str | None = None
    builder_id: str | None = None
    formats: tuple[str, ...] = ()
    username: str | None = None
    python_path: str | None = None
    shell_type: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _NO_EXTRA)
    # The znode version it was read at (-1: not read), for version-checked writes.
    version: int = -1

    @property
    def path(self) -> str:
        return paths.image_build(self.image, self.id)

    @property
    def name(self) -> str:
        """`<image>-<build id>`: what `dib-image-list` shows and `dib-image-delete` takes."""
        return f"{self.image}-{self.id}"

    def with_state(self, state: BuildState, now: float | None = None, **changes) -> ImageBuild:
        """This build in `state` (stamping `state_time`); InvalidTransition on an illegal edge."""
        _check_edge(BUILD_TRANSITIONS, self.state, state, f"build {self.name}")
        return dataclasses.replace(self, state=state,
                                   state_time=time.time() if now is None else now, **changes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"state": self.state.value, "state_time": self.state_time}
        if self.builder is not None:
            d["builder"] = self.builder
        if self.builder_id is not None:
            d["builder_id"] = self.builder_id
        if self.formats:
            d["formats"] = ",".join(sorted(self.formats))
        d.update(username=self.username, python_path=self.python_path,
                 shell_type=self.shell_type)
        d.update(self.extra)
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, image: str, build_id: str, data: Mapping[str, Any],
                  version: int = -1) -> ImageBuild:
        where = paths.image_build(image, build_id)
        formats = data.get("formats") or ""
        if not isinstance(formats, str):
            raise ProtocolError(f"{where}: formats must be a comma-joined string, "
                                f"got {formats!r}")
        return cls(image=image, id=build_id,
                   state=_state(BuildState, data.get("state"), where),
                   state_time=data.get("state_time"), builder=data.get("builder"),
                   builder_id=data.get("builder_id"),
                   formats=tuple(f for f in formats.split(",") if f),
                   username=data.get("username"), python_path=data.get("python_path"),
                   shell_type=data.get("shell_type"), extra=_extra(data, _BUILD_KEYS),
                   version=version)

    @classmethod
    def from_bytes(cls, image: str, build_id: str, raw: bytes | None,
                   version: int = -1) -> ImageBuild:
        return cls.from_dict(image, build_id, _decode(raw, paths.image_build(image, build_id)),
                             version)


@dataclasses.dataclass(frozen=True)
class ImageUpload:
    """One upload of a build to a provider:
    `/nodepool/images/<image>/builds/<build>/providers/<provider>/images/<id>`."""

    image: str
    build_id: str
    provider: str
    id: str
    state: UploadState
    state_time: float | None = None
    external_id: str | None = None
    external_name: str | None = None
    format: str | None = None
    username: str | None = None
    python_path: str | None = None
    shell_type: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _NO_EXTRA)
    version: int = -1

    @property
    def upload_id(self) -> str:
        return self.id

    @property
    def path(self) -> str:
        """The upload's znode path, which a node booted from it records in `image_id`."""
        return paths.image_upload(self.image, self.build_id, self.provider, self.id)

    def with_state(self, state: UploadState, now: float | None = None, **changes) -> ImageUpload:
        """This upload in `state` (stamping `state_time`); InvalidTransition on an illegal edge."""
        _check_edge(UPLOAD_TRANSITIONS, self.state, state,
                    f"upload {self.image}/{self.build_id}/{self.provider}/{self.id}")
        return dataclasses.replace(self, state=state,
                                   state_time=time.time() if now is None else now, **changes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "state": self.state.value, "state_time": self.state_time,
            "external_id": self.external_id, "external_name": self.external_name,
            "format": self.format, "username": self.username,
            "python_path": self.python_path, "shell_type": self.shell_type,
        }
        d.update(self.extra)
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, image: str, build_id: str, provider: str, upload_id: str,
                  data: Mapping[str, Any], version: int = -1) -> ImageUpload:
        where = paths.image_upload(image, build_id, provider, upload_id)
        return cls(image=image, build_id=build_id, provider=provider, id=upload_id,
                   state=_state(UploadState, data.get("state"), where),
                   state_time=data.get("state_time"), external_id=data.get("external_id"),
                   external_name=data.get("external_name"), format=data.get("format"),
                   username=data.get("username"), python_path=data.get("python_path"),
                   shell_type=data.get("shell_type"), extra=_extra(data, _UPLOAD_KEYS),
                   version=version)

    @classmethod
    def from_bytes(cls, image: str, build_id: str, provider: str, upload_id: str,
                   raw: bytes | None, version: int = -1) -> ImageUpload:
        where = paths.image_upload(image, build_id, provider, upload_id)
        return cls.from_dict(image, build_id, provider, upload_id, _decode(raw, where), version)


def new_build(image: str, build_id: str, formats: tuple[str, ...] | list[str] = (),
              builder: str | None = None, builder_id: str | None = None,
              now: float | None = None, **facts) -> ImageBuild:
    """A `building` build as a builder first records it (Nodepool's _buildWrapper)."""
    return ImageBuild(image=image, id=build_id, state=BuildState.BUILDING,
                      state_time=time.time() if now is None else now, builder=builder,
                      builder_id=builder_id, formats=tuple(formats), **facts)


def new_upload(image: str, build_id: str, provider: str, now: float | None = None,
               **facts) -> ImageUpload:
    """An `uploading` upload with no id yet (the store's sequential create gives it one)."""
    return ImageUpload(image=image, build_id=build_id, provider=provider, id="",
                       state=UploadState.UPLOADING,
                       state_time=time.time() if now is None else now, **facts)
