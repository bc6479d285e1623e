"""The builder's reads and writes of image records, in Nodepool's layout (PROTOCOL.md "Images").

Builds: /nodepool/images/<image>/builds/<uuid hex>; uploads:
.../builds/<build>/providers/<provider>/images/<10-digit sequence>. Locks, each kazoo's
Lock recipe at Nodepool's paths: one build at a time per image (`builds/lock`), one
upload at a time per build and provider (`.../images/lock`), and one per record (its
`lock` child) for state changes during cleanup.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.zk import paths

BUILDING, UPLOADING, READY, DELETING, FAILED = "building", "uploading", "ready", "deleting", "failed"
LOCK = "lock"


@dataclasses.dataclass
class Build:
    image: str
    id: str
    data: dict[str, Any]

    @property
    def state(self) -> str | None:
        return self.data.get("state")

    @property
    def state_time(self) -> float:
        return float(self.data.get("state_time") or 0)

    @property
    def formats(self) -> list[str]:
        raw = self.data.get("formats") or ""
        return [f for f in raw.split(",") if f]


@dataclasses.dataclass
class Upload:
    image: str
    build_id: str
    provider: str
    id: str
    data: dict[str, Any]

    @property
    def state(self) -> str | None:
        return self.data.get("state")

    @property
    def state_time(self) -> float:
        return float(self.data.get("state_time") or 0)

    @property
    def external_id(self) -> str | None:
        return self.data.get("external_id")

    @property
    def path(self) -> str:
        return f"{paths.image_uploads(self.image, self.build_id, self.provider)}/{self.id}"


def _read(kazoo: KazooClient, path: str) -> dict[str, Any] | None:
    try:
        raw, _ = kazoo.get(path)
    except NoNodeError:
        return None
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _children(kazoo: KazooClient, path: str) -> list[str]:
    try:
        return sorted(c for c in kazoo.get_children(path) if c != LOCK)
    except NoNodeError:
        return []


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode("utf-8")


def with_state(data: dict[str, Any], state: str, now: float | None = None) -> dict[str, Any]:
    return {**data, "state": state, "state_time": time.time() if now is None else now}


def image_names(kazoo: KazooClient) -> list[str]:
    return _children(kazoo, paths.IMAGES)


def builds(kazoo: KazooClient, image: str) -> list[Build]:
    found = []
    for build_id in _children(kazoo, paths.image_builds(image)):
        data = _read(kazoo, f"{paths.image_builds(image)}/{build_id}")
        if data is not None:
            found.append(Build(image, build_id, data))
    return found


def get_build(kazoo: KazooClient, image: str, build_id: str) -> Build | None:
    data = _read(kazoo, f"{paths.image_builds(image)}/{build_id}")
    return None if data is None else Build(image, build_id, data)


def newest_ready_build(kazoo: KazooClient, image: str) -> Build | None:
    ready = [b for b in builds(kazoo, image) if b.state == READY]
    return max(ready, key=lambda b: b.state_time, default=None)


def create_build(kazoo: KazooClient, image: str, data: dict[str, Any]) -> str:
    build_id = uuid.uuid4().hex
    kazoo.create(f"{paths.image_builds(image)}/{build_id}", _encode(data), makepath=True)
    return build_id


def store_build(kazoo: KazooClient, image: str, build_id: str, data: dict[str, Any]) -> None:
    kazoo.set(f"{paths.image_builds(image)}/{build_id}", _encode(data))


def delete_build(kazoo: KazooClient, image: str, build_id: str) -> bool:
    """Remove a build with no uploads left (its lock children too); False if uploads remain."""
    if any(uploads(kazoo, image, build_id, p) for p in build_providers(kazoo, image, build_id)):
        return False
    try:
        kazoo.delete(f"{paths.image_builds(image)}/{build_id}", recursive=True)
    except NoNodeError:
        pass
    return True


def build_providers(kazoo: KazooClient, image: str, build_id: str) -> list[str]:
    return _children(kazoo, f"{paths.image_builds(image)}/{build_id}/providers")


def uploads(kazoo: KazooClient, image: str, build_id: str, provider: str) -> list[Upload]:
    base = paths.image_uploads(image, build_id, provider)
    found = []
    for upload_id in _children(kazoo, base):
        data = _read(kazoo, f"{base}/{upload_id}")
        if data is not None:
            found.append(Upload(image, build_id, provider, upload_id, data))
    return found


def all_uploads(kazoo: KazooClient, image: str, build_id: str) -> list[Upload]:
    return [u for p in build_providers(kazoo, image, build_id)
            for u in uploads(kazoo, image, build_id, p)]


def create_upload(kazoo: KazooClient, image: str, build_id: str, provider: str,
                  data: dict[str, Any]) -> str:
    path = kazoo.create(paths.image_uploads(image, build_id, provider) + "/", _encode(data),
                        sequence=True, makepath=True)
    return paths.basename(path)


def store_upload(kazoo: KazooClient, upload: Upload) -> None:
    kazoo.set(upload.path, _encode(upload.data))


def delete_upload(kazoo: KazooClient, upload: Upload) -> None:
    try:
        kazoo.delete(upload.path, recursive=True)
    except NoNodeError:
        pass


def request_build_path(image: str) -> str:
    return f"{paths.image(image)}/request-build"


def build_requested(kazoo: KazooClient, image: str) -> bool:
    return kazoo.exists(request_build_path(image)) is not None


def remove_build_request(kazoo: KazooClient, image: str) -> None:
    try:
        kazoo.delete(request_build_path(image))
    except NoNodeError:
        pass


def image_paused(kazoo: KazooClient, image: str) -> bool:
    return kazoo.exists(f"{paths.image(image)}/pause") is not None


def build_lock(kazoo: KazooClient, image: str, identifier: str) -> Lock:
    return kazoo.Lock(f"{paths.image_builds(image)}/{LOCK}", identifier)


def build_id_lock(kazoo: KazooClient, image: str, build_id: str, identifier: str) -> Lock:
    return kazoo.Lock(f"{paths.image_builds(image)}/{build_id}/{LOCK}", identifier)


def upload_lock(kazoo: KazooClient, image: str, build_id: str, provider: str,
                identifier: str) -> Lock:
    return kazoo.Lock(f"{paths.image_uploads(image, build_id, provider)}/{LOCK}", identifier)


def upload_id_lock(kazoo: KazooClient, upload: Upload, identifier: str) -> Lock:
    return kazoo.Lock(f"{upload.path}/{LOCK}", identifier)


def try_acquire(lock: Lock) -> bool:
    """Take `lock` if nobody holds it (no wait)."""
    return lock.acquire(blocking=False)
