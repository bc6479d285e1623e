"""`export-image-data` / `import-image-data`: the image records as one JSON object.

The format is Nodepool's (its exportImageData): `{znode path: record JSON text}`
for every build and upload, plus `{pause path: ""}` for each paused image, so
files move between Nodepool's command and ours either way. Import is meant
for a quiet system (no builder running) and takes no locks, as Nodepool's.
"""

from __future__ import annotations

from typing import Mapping

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from nodepool.errors import NodepoolError
from nodepool.zk import paths
from nodepool.zk.image_flags import is_paused
from nodepool.zk.image_store import build_ids, build_providers, image_names, upload_ids

# /nodepool/images/<image>/builds/<build>/providers/<provider>/images/<upload>
_UPLOAD_PARTS = 10


def _text(kazoo: KazooClient, path: str) -> str | None:
    try:
        raw, _ = kazoo.get(path)
    except NoNodeError:
        return None
    return (raw or b"").decode("utf-8")


def export_data(kazoo: KazooClient) -> dict[str, str]:
    """Every build, upload and pause flag, keyed by znode path."""
    found: dict[str, str] = {}
    for image in image_names(kazoo):
        if is_paused(kazoo, image):
            found[paths.image_pause(image)] = ""
        for build_id in build_ids(kazoo, image):
            build_path = paths.image_build(image, build_id)
            text = _text(kazoo, build_path)
            if text is None:
                continue
            found[build_path] = text
            for provider in build_providers(kazoo, image, build_id):
                for upload_id in upload_ids(kazoo, image, build_id, provider):
                    path = paths.image_upload(image, build_id, provider, upload_id)
                    text = _text(kazoo, path)
                    if text is not None:
                        found[path] = text
    return found


def check_data(data: object, where: str) -> Mapping[str, str]:
    """The import file's object, or a NodepoolError naming what is wrong in it."""
    if not isinstance(data, dict):
        raise NodepoolError(f"{where}: expected a JSON object of znode path -> record, "
                            f"got {type(data).__name__}")
    for path, value in data.items():
        if not path.startswith(paths.IMAGES + "/"):
            raise NodepoolError(f"{where}: {path!r} is not an image record path "
                                f"(under {paths.IMAGES}/)")
        if not isinstance(value, str):
            raise NodepoolError(f"{where}: {path}: expected the record's JSON as a string, "
                                f"got {type(value).__name__}")
        parts = path.split("/")
        if len(parts) == _UPLOAD_PARTS and not parts[-1].isdigit():
            raise NodepoolError(f"{where}: {path}: an upload id must be digits")
    return data


def import_data(kazoo: KazooClient, data: Mapping[str, str]) -> int:
    """Write every record of an export; returns how many were written.

    Upload ids are sequence nodes whose counter lives in the parent, so the
    counter of each uploads dir is first advanced past the highest imported id
    (sequential creates, deleting the placeholders that are not imported):
    the next upload a builder makes there cannot collide with an imported one.
    """
    highest: dict[str, int] = {}
    for path in data:
        parts = path.split("/")
        if len(parts) == _UPLOAD_PARTS:
            parent = "/".join(parts[:-1])
            highest[parent] = max(highest.get(parent, 0), int(parts[-1]))
    for parent, number in highest.items():
        for _ in range(number):
            made = kazoo.create(parent + "/", makepath=True, sequence=True)
            if made not in data:
                kazoo.delete(made)
            if int(paths.basename(made)) >= number:
                break
    for path, text in data.items():
        raw = text.encode("utf-8")
        if kazoo.exists(path) is not None:
            kazoo.set(path, raw)
        else:
            kazoo.create(path, raw, makepath=True)
    return len(data)
