"""The image records' readers for the launcher and the listings (PROTOCOL.md "Images").

The records are image_records.py, their reads and writes image_store.py, the
flags image_flags.py, the locks image_locks.py; this module answers the
questions others ask: which upload a launch boots, what the lists show.
"""

from __future__ import annotations

import dataclasses

from kazoo.client import KazooClient

from nodepool.zk import image_flags, image_store, paths
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState

__all__ = ["ImageBuild", "ImageUpload", "latest_upload", "all_builds", "all_uploads",
           "provider_build_paths", "provider_uploads"]


def latest_upload(kazoo: KazooClient, image: str, provider: str) -> ImageUpload | None:
    """The most recent `ready` upload (with an external id) of `image` to `provider`,
    from a `ready` build. The upload's username, python-path and shell-type fall back
    to the build's when the upload has none."""
    best: ImageUpload | None = None
    best_build: ImageBuild | None = None
    for build in image_store.list_builds(kazoo, image, [BuildState.READY]):
        for up in image_store.list_uploads(kazoo, image, build.id, provider, [UploadState.READY]):
            if not up.external_id:
                continue
            if best is None or (up.state_time or 0) > (best.state_time or 0):
                best, best_build = up, build
    if best is None or best_build is None:
        return None
    return dataclasses.replace(
        best, username=best.username or best_build.username,
        python_path=best.python_path or best_build.python_path,
        shell_type=best.shell_type or best_build.shell_type)


def all_builds(kazoo: KazooClient) -> list[tuple[ImageBuild, bool]]:
    """Every build with its image's pause flag, for `dib-image-list`."""
    found = []
    for image in image_store.image_names(kazoo):
        paused = image_flags.is_paused(kazoo, image)
        found.extend((b, paused) for b in image_store.list_builds(kazoo, image))
    return found


def all_uploads(kazoo: KazooClient) -> list[ImageUpload]:
    """Every upload, for `image-list`."""
    return image_store.all_uploads(kazoo)


def image_statuses(kazoo: KazooClient) -> list[tuple[str, bool, image_flags.BuildRequest | None]]:
    """Each image's (name, paused, build request), for `image-status`."""
    return [(image, image_flags.is_paused(kazoo, image), image_flags.build_request(kazoo, image))
            for image in image_store.image_names(kazoo)]


def provider_uploads(kazoo: KazooClient, provider: str) -> dict[str, dict[str, list[ImageUpload]]]:
    """image -> build id -> uploads, for every build with a dir for `provider`
    (Nodepool's getProviderUploads, which `nodepool info` shows)."""
    found: dict[str, dict[str, list[ImageUpload]]] = {}
    for image in image_store.image_names(kazoo):
        for build_id in image_store.build_ids(kazoo, image):
            if provider in image_store.build_providers(kazoo, image, build_id):
                found.setdefault(image, {})[build_id] = image_store.list_uploads(
                    kazoo, image, build_id, provider)
    return found


def provider_build_paths(kazoo: KazooClient, provider: str) -> list[str]:
    """Each build's `.../builds/<build>/providers/<provider>` that exists (for `erase`)."""
    found = []
    for image in image_store.image_names(kazoo):
        for build_id in image_store.build_ids(kazoo, image):
            path = f"{paths.image_providers(image, build_id)}/{provider}"
            if kazoo.exists(path) is not None:
                found.append(path)
    return found
