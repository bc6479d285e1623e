"""Image builds and uploads (PROTOCOL.md "Images"): finding the upload a launch boots."""

from __future__ import annotations

import dataclasses
import json
import logging

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from nodepool.zk import paths

log = logging.getLogger("nodepool.zk.images")


@dataclasses.dataclass(frozen=True)
class ImageUpload:
    """A ready upload of a built image to one provider."""

    image: str
    provider: str
    build_id: str
    upload_id: str
    external_id: str
    external_name: str | None
    state_time: float
    username: str | None = None
    python_path: str | None = None
    shell_type: str | None = None
    format: str | None = None

    @property
    def path(self) -> str:
        """The upload's znode path, recorded in a node's `image_id`."""
        return f"{paths.image_uploads(self.image, self.build_id, self.provider)}/{self.upload_id}"


def _json(kazoo: KazooClient, path: str) -> dict | None:
    try:
        raw, _ = kazoo.get(path)
    except NoNodeError:
        return None
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        log.warning("Ignoring unreadable image record %s", path)
        return None
    return data if isinstance(data, dict) else None


def latest_upload(kazoo: KazooClient, image: str, provider: str) -> ImageUpload | None:
    """The most recent `ready` upload of `image` to `provider` from a `ready` build."""
    try:
        builds = kazoo.get_children(paths.image_builds(image))
    except NoNodeError:
        return None
    best: ImageUpload | None = None
    for build_id in builds:
        build = _json(kazoo, f"{paths.image_builds(image)}/{build_id}")
        if not build or build.get("state") != "ready":
            continue
        uploads_path = paths.image_uploads(image, build_id, provider)
        try:
            uploads = kazoo.get_children(uploads_path)
        except NoNodeError:
            continue
        for upload_id in uploads:
            up = _json(kazoo, f"{uploads_path}/{upload_id}")
            if not up or up.get("state") != "ready" or not up.get("external_id"):
                continue
            candidate = ImageUpload(
                image=image, provider=provider, build_id=build_id, upload_id=upload_id,
                external_id=up["external_id"], external_name=up.get("external_name"),
                state_time=float(up.get("state_time") or 0),
                username=up.get("username") or build.get("username"),
                python_path=up.get("python_path") or build.get("python_path"),
                shell_type=up.get("shell_type") or build.get("shell_type"),
                format=up.get("format"))
            if best is None or candidate.state_time > best.state_time:
                best = candidate
    return best


def _children(kazoo: KazooClient, path: str) -> list[str]:
    try:
        return sorted(kazoo.get_children(path))
    except NoNodeError:
        return []


def all_builds(kazoo: KazooClient) -> list[tuple[str, str, dict, bool]]:
    """Every build as (image, build id, build JSON, image paused), for listings."""
    found = []
    for image in _children(kazoo, paths.IMAGES):
        paused = kazoo.exists(f"{paths.image(image)}/pause") is not None
        for build_id in _children(kazoo, paths.image_builds(image)):
            build = _json(kazoo, f"{paths.image_builds(image)}/{build_id}")
            if build is not None:
                found.append((image, build_id, build, paused))
    return found


def all_uploads(kazoo: KazooClient) -> list[tuple[str, str, str, str, dict]]:
    """Every upload as (image, build id, provider, upload id, upload JSON), for listings."""
    found = []
    for image in _children(kazoo, paths.IMAGES):
        for build_id in _children(kazoo, paths.image_builds(image)):
            providers = f"{paths.image_builds(image)}/{build_id}/providers"
            for provider in _children(kazoo, providers):
                uploads = paths.image_uploads(image, build_id, provider)
                for upload_id in _children(kazoo, uploads):
                    upload = _json(kazoo, f"{uploads}/{upload_id}")
                    if upload is not None:
                        found.append((image, build_id, provider, upload_id, upload))
    return found


def provider_build_paths(kazoo: KazooClient, provider: str) -> list[str]:
    """Each build's `.../builds/<build>/providers/<provider>` that exists (for `erase`)."""
    found = []
    for image in _children(kazoo, paths.IMAGES):
        for build_id in _children(kazoo, paths.image_builds(image)):
            path = f"{paths.image_builds(image)}/{build_id}/providers/{provider}"
            if kazoo.exists(path) is not None:
                found.append(path)
    return found
