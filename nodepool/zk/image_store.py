"""Reading and writing image builds and uploads in Nodepool's layout (PROTOCOL.md "Images").

Ids are made as Nodepool 11 makes them: a build id is a fresh `uuid4().hex`
(a plain create; builds stopped being sequence nodes in Nodepool 3.x, and old
10-digit ids are still read), an upload id is the 10-digit sequence of a
sequential create under `.../providers/<provider>/images/`. The `lock`
children beside builds and uploads are locks (image_locks.py), never records.

Writes are whole-record sets like Nodepool's, version-checked when the record
was read here (`version` >= 0). Deleting what is gone is success.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Iterable

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from nodepool.errors import NotFound, ProtocolError, VersionConflict
from nodepool.zk import paths
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState

log = logging.getLogger("nodepool.zk.images")


def _children(kazoo: KazooClient, path: str) -> list[str]:
    try:
        return sorted(c for c in kazoo.get_children(path) if c != paths.LOCK_NODE_NAME)
    except NoNodeError:
        return []


def image_names(kazoo: KazooClient) -> list[str]:
    return _children(kazoo, paths.IMAGES)


def build_ids(kazoo: KazooClient, image: str) -> list[str]:
    return _children(kazoo, paths.image_builds(image))


def build_providers(kazoo: KazooClient, image: str, build_id: str) -> list[str]:
    return _children(kazoo, paths.image_providers(image, build_id))


def upload_ids(kazoo: KazooClient, image: str, build_id: str, provider: str) -> list[str]:
    return _children(kazoo, paths.image_uploads(image, build_id, provider))


# -- reading ----------------------------------------------------------------------------

def _build_or_none(image: str, build_id: str, raw: bytes, version: int) -> ImageBuild | None:
    try:
        return ImageBuild.from_bytes(image, build_id, raw, version)
    except ProtocolError as e:
        log.warning("Ignoring unreadable image build: %s", e)
        return None


def _upload_or_none(image: str, build_id: str, provider: str, upload_id: str, raw: bytes,
                    version: int) -> ImageUpload | None:
    try:
        return ImageUpload.from_bytes(image, build_id, provider, upload_id, raw, version)
    except ProtocolError as e:
        log.warning("Ignoring unreadable image upload: %s", e)
        return None


def get_build(kazoo: KazooClient, image: str, build_id: str) -> ImageBuild | None:
    """The build, or None when it does not exist or cannot be read (logged)."""
    try:
        raw, stat = kazoo.get(paths.image_build(image, build_id))
    except NoNodeError:
        return None
    return _build_or_none(image, build_id, raw, stat.version)


def get_upload(kazoo: KazooClient, image: str, build_id: str, provider: str,
               upload_id: str) -> ImageUpload | None:
    try:
        raw, stat = kazoo.get(paths.image_upload(image, build_id, provider, upload_id))
    except NoNodeError:
        return None
    return _upload_or_none(image, build_id, provider, upload_id, raw, stat.version)


def _states(states: Iterable | None) -> set | None:
    return None if states is None else set(states)


def list_builds(kazoo: KazooClient, image: str,
                states: Iterable[BuildState] | None = None) -> list[ImageBuild]:
    """The image's builds (in `states`, when given), read with pipelined calls."""
    wanted = _states(states)
    pending = [(b, kazoo.get_async(paths.image_build(image, b))) for b in build_ids(kazoo, image)]
    found = []
    for build_id, result in pending:
        try:
            raw, stat = result.get()
        except NoNodeError:
            continue
        build = _build_or_none(image, build_id, raw, stat.version)
        if build is not None and (wanted is None or build.state in wanted):
            found.append(build)
    return found


def list_uploads(kazoo: KazooClient, image: str, build_id: str, provider: str,
                 states: Iterable[UploadState] | None = None) -> list[ImageUpload]:
    wanted = _states(states)
    pending = [(u, kazoo.get_async(paths.image_upload(image, build_id, provider, u)))
               for u in upload_ids(kazoo, image, build_id, provider)]
    found = []
    for upload_id, result in pending:
        try:
            raw, stat = result.get()
        except NoNodeError:
            continue
        upload = _upload_or_none(image, build_id, provider, upload_id, raw, stat.version)
        if upload is not None and (wanted is None or upload.state in wanted):
            found.append(upload)
    return found


def _newest_first(records: list) -> list:
    return sorted(records, key=lambda r: r.state_time or 0, reverse=True)


def most_recent_builds(kazoo: KazooClient, image: str, count: int | None = None,
                       state: BuildState | None = None) -> list[ImageBuild]:
    """Newest `state_time` first, at most `count` (Nodepool's getMostRecentBuilds)."""
    found = _newest_first(list_builds(kazoo, image, None if state is None else [state]))
    return found if count is None else found[:count]


def most_recent_uploads(kazoo: KazooClient, image: str, build_id: str, provider: str,
                        count: int | None = None,
                        state: UploadState | None = None) -> list[ImageUpload]:
    found = _newest_first(list_uploads(kazoo, image, build_id, provider,
                                       None if state is None else [state]))
    return found if count is None else found[:count]


def build_uploads(kazoo: KazooClient, build: ImageBuild) -> list[ImageUpload]:
    """Every upload of one build, to every provider."""
    found = []
    for provider in build_providers(kazoo, build.image, build.id):
        found.extend(list_uploads(kazoo, build.image, build.id, provider))
    return found


def all_builds(kazoo: KazooClient) -> list[ImageBuild]:
    """Every readable build of every image, by image then build id."""
    return [b for image in image_names(kazoo) for b in list_builds(kazoo, image)]


def all_uploads(kazoo: KazooClient) -> list[ImageUpload]:
    """Every readable upload, by image, build id, provider, upload id."""
    found = []
    for image in image_names(kazoo):
        for build_id in build_ids(kazoo, image):
            for provider in build_providers(kazoo, image, build_id):
                found.extend(list_uploads(kazoo, image, build_id, provider))
    return found


# -- writing ----------------------------------------------------------------------------

def create_build(kazoo: KazooClient, build: ImageBuild) -> ImageBuild:
    """Record a new build; an empty `build.id` gets a fresh uuid4 hex, as Nodepool's do."""
    build_id = build.id or uuid.uuid4().hex
    stored = build if build.id else dataclasses.replace(build, id=build_id)
    try:
        kazoo.create(stored.path, stored.to_bytes(), makepath=True)
    except NodeExistsError:
        raise VersionConflict(f"build {stored.name} already exists") from None
    return dataclasses.replace(stored, version=0)


def update_build(kazoo: KazooClient, build: ImageBuild) -> ImageBuild:
    """Write the whole build; version-checked when it was read (version >= 0)."""
    try:
        stat = kazoo.set(build.path, build.to_bytes(), version=build.version)
    except NoNodeError:
        raise NotFound(f"build {build.name} does not exist") from None
    except BadVersionError:
        raise VersionConflict(f"build {build.name} changed since it was read") from None
    return dataclasses.replace(build, version=stat.version)


def delete_build(kazoo: KazooClient, image: str, build_id: str) -> bool:
    """Delete a build (with its lock and empty provider dirs). False, and nothing
    deleted, while any upload record remains (Nodepool's deleteBuild)."""
    for provider in build_providers(kazoo, image, build_id):
        if upload_ids(kazoo, image, build_id, provider):
            return False
    try:
        kazoo.delete(paths.image_build(image, build_id), recursive=True)
    except NoNodeError:
        pass
    return True


def create_upload(kazoo: KazooClient, upload: ImageUpload) -> ImageUpload:
    """Record a new upload under its build; its id is the sequence ZooKeeper gives it.

    NotFound when the build is gone (an upload must not re-create its build).
    """
    if kazoo.exists(paths.image_build(upload.image, upload.build_id)) is None:
        raise NotFound(f"build {upload.image}-{upload.build_id} does not exist")
    prefix = paths.image_uploads(upload.image, upload.build_id, upload.provider) + "/"
    created = kazoo.create(prefix, upload.to_bytes(), sequence=True, makepath=True)
    return dataclasses.replace(upload, id=paths.basename(created), version=0)


def update_upload(kazoo: KazooClient, upload: ImageUpload) -> ImageUpload:
    """Write the whole upload; version-checked when it was read (version >= 0)."""
    what = f"upload {upload.id} of build {upload.image}-{upload.build_id} to {upload.provider}"
    try:
        stat = kazoo.set(upload.path, upload.to_bytes(), version=upload.version)
    except NoNodeError:
        raise NotFound(f"{what} does not exist") from None
    except BadVersionError:
        raise VersionConflict(f"{what} changed since it was read") from None
    return dataclasses.replace(upload, version=stat.version)


def delete_upload(kazoo: KazooClient, image: str, build_id: str, provider: str,
                  upload_id: str) -> None:
    """Delete an upload record with its lock; gone is success."""
    try:
        kazoo.delete(paths.image_upload(image, build_id, provider, upload_id), recursive=True)
    except NoNodeError:
        pass
