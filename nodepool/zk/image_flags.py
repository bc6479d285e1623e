"""An image's flags in Nodepool's layout: `pause` and `request-build` (empty znodes).

`/nodepool/images/<image>/pause` exists while the image's builds are paused
(`nodepool image-pause`); `/nodepool/images/<image>/request-build` exists
while a build was asked for (`nodepool image-build`) and is removed by the
builder once a build it made for that request is ready.
"""

from __future__ import annotations

import dataclasses

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from nodepool.zk import paths
from nodepool.zk.image_store import build_ids


def is_paused(kazoo: KazooClient, image: str) -> bool:
    return kazoo.exists(paths.image_pause(image)) is not None


def set_paused(kazoo: KazooClient, image: str, paused: bool) -> None:
    """Set or clear the pause flag; setting what is set (or clearing what is clear) is done."""
    if paused:
        try:
            kazoo.create(paths.image_pause(image), makepath=True)
        except NodeExistsError:
            pass
    else:
        try:
            kazoo.delete(paths.image_pause(image))
        except NoNodeError:
            pass


def request_build(kazoo: KazooClient, image: str) -> None:
    """Ask the builders for a build of `image` now (idempotent)."""
    kazoo.ensure_path(paths.image_build_request(image))


def has_build_request(kazoo: KazooClient, image: str) -> bool:
    return kazoo.exists(paths.image_build_request(image)) is not None


def remove_build_request(kazoo: KazooClient, image: str) -> None:
    try:
        kazoo.delete(paths.image_build_request(image))
    except NoNodeError:
        pass


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """A manual build request: `pending` until a builder has started the build for it."""

    image: str
    pending: bool
    # When the request was made (the flag's creation time, seconds).
    state_time: float


def build_request(kazoo: KazooClient, image: str) -> BuildRequest | None:
    """The image's build request, or None. It is "building" (not pending) when the
    build lock is held and the newest build znode is younger than the lock, as
    Nodepool's getBuildRequest decides."""
    stat = kazoo.exists(paths.image_build_request(image))
    if stat is None:
        return None
    pending = True
    lock_stat = kazoo.exists(paths.image_build_lock(image))
    if lock_stat is not None and lock_stat.children_count:
        newest = _newest_build_ctime(kazoo, image)
        pending = newest is None or newest < lock_stat.created
    return BuildRequest(image=image, pending=pending, state_time=stat.created)


def _newest_build_ctime(kazoo: KazooClient, image: str) -> float | None:
    """The creation time (seconds) of the image's newest build znode."""
    found = []
    for build_id in build_ids(kazoo, image):
        stat = kazoo.exists(paths.image_build(image, build_id))
        if stat is not None:
            found.append(stat.created)
    return max(found) if found else None
