"""The few reads and lock attempts the builder's workers share, over nodepool/zk's image
store, flags and locks (Nodepool's layout: PROTOCOL.md "Images")."""

from __future__ import annotations

from typing import Any, Callable

from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool.errors import LockFailed, NotFound
from nodepool.zk import image_store
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState


def newest_ready_build(kazoo: KazooClient, image: str) -> ImageBuild | None:
    found = image_store.most_recent_builds(kazoo, image, 1, BuildState.READY)
    return found[0] if found else None


def has_ready_upload(kazoo: KazooClient, image: str, build_id: str, provider: str) -> bool:
    return bool(image_store.list_uploads(kazoo, image, build_id, provider,
                                         [UploadState.READY]))


def try_lock(take: Callable[..., Lock], *args: Any, **kwargs: Any) -> Lock | None:
    """One of image_locks' `lock_*` without waiting: None when held, or its record is gone."""
    try:
        return take(*args, **kwargs)
    except (LockFailed, NotFound):
        return None


def upload_key(upload: ImageUpload) -> tuple[str, str]:
    return (upload.build_id, upload.id)
