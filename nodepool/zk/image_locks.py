"""The image locks, at Nodepool's paths with kazoo's `Lock` recipe, as its builder takes them.

Nodepool's builder and ours exclude each other only if both take the same
recipe at the same znode (nodepool/zk/paths.py names them):

| lock | path | held while |
|---|---|---|
| build | `/nodepool/images/<image>/builds/lock` | a build of the image runs (one at a time) |
| build id | `.../builds/<build>/lock` | that build is deleted |
| upload | `.../builds/<build>/providers/<provider>/images/lock` | the build is uploaded to the provider |
| upload number | `.../images/<upload>/lock` | that upload is deleted |

Each `lock_*` returns the held `Lock` (release it with `locks.release`),
raises LockFailed when someone else holds it (non-blocking, the default, as
the builder's loops take them) and NotFound when the build or upload it
guards is gone. `holding(...)` is the context-manager form.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.zk import locks, paths
from nodepool.zk.image_records import ImageUpload


def lock_build(kazoo: KazooClient, image: str, blocking: bool = False,
               timeout: float | None = None, identifier: str = "") -> Lock:
    """The image's build lock (its directory is made when missing, as Nodepool's recipe does)."""
    return locks.lock_dir(kazoo, paths.image_build_lock(image), f"image {image} build lock",
                          blocking=blocking, timeout=timeout, identifier=identifier)


def lock_build_id(kazoo: KazooClient, image: str, build_id: str, blocking: bool = False,
                  timeout: float | None = None, identifier: str = "") -> Lock:
    """One build's lock; NotFound when the build is gone (it is not re-created)."""
    return locks.lock_dir(kazoo, paths.image_build_id_lock(image, build_id),
                          f"build {image}-{build_id}", parent=paths.image_build(image, build_id),
                          blocking=blocking, timeout=timeout, identifier=identifier)


def lock_upload(kazoo: KazooClient, image: str, build_id: str, provider: str,
                blocking: bool = False, timeout: float | None = None,
                identifier: str = "") -> Lock:
    """The lock over uploading a build to a provider (directories made when missing)."""
    return locks.lock_dir(kazoo, paths.image_upload_lock(image, build_id, provider),
                          f"upload lock of build {image}-{build_id} to {provider}",
                          blocking=blocking, timeout=timeout, identifier=identifier)


def lock_upload_number(kazoo: KazooClient, upload: ImageUpload, blocking: bool = False,
                       timeout: float | None = None, identifier: str = "") -> Lock:
    """One upload's lock; NotFound when the upload is gone."""
    return locks.lock_dir(
        kazoo, paths.image_upload_number_lock(upload.image, upload.build_id, upload.provider,
                                              upload.id),
        f"upload {upload.id} of build {upload.image}-{upload.build_id} to {upload.provider}",
        parent=upload.path, blocking=blocking, timeout=timeout, identifier=identifier)


@contextlib.contextmanager
def holding(lock: Lock) -> Iterator[Lock]:
    """`with holding(lock_build(kazoo, "ubuntu")):` releases the lock on the way out."""
    try:
        yield lock
    finally:
        locks.release(lock)


def is_locked(kazoo: KazooClient, lock_path: str) -> bool:
    """Whether anyone holds (or waits for) the lock at `lock_path`: it has contenders."""
    try:
        return any(locks.is_contender(c) for c in kazoo.get_children(lock_path))
    except NoNodeError:   # never locked
        return False
