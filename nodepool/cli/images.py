"""CLI commands on built images: image-build, image-delete, dib-image-delete, image-pause,
image-unpause, export-image-data, import-image-data (Nodepool's, on its ZooKeeper records).

They write the records a builder acts on (doc/images.md): a build request,
`deleting` on an upload or a build, the pause flag. The builder (ours or
Nodepool's) then does the cloud and disk work.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable

from nodepool.errors import NodepoolError, NotFound, VersionConflict
from nodepool.zk import image_flags, image_store, image_transfer
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState

WRITE_ATTEMPTS = 3   # version-checked writes re-read and retry when a builder wrote meanwhile


def build_name(text: str) -> tuple[str, str]:
    """`<image>-<build id>` as `dib-image-list` shows it: (image, build id)."""
    image, sep, build_id = text.rpartition("-")
    if not sep or not image or not build_id:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a build name (<image>-<build id>, as `nodepool dib-image-list` "
            f"shows in its ID column)")
    return image, build_id


def add_parsers(sub) -> None:
    p = sub.add_parser("image-build", help="ask the builders for a build of an image now")
    p.add_argument("image", help="diskimage name (a diskimages entry of the config)")

    p = sub.add_parser("image-delete", help="delete one upload of a built image from a provider")
    for key, what in (("provider", "provider name"), ("image", "image name"),
                      ("build-id", "image build id"), ("upload-id", "image upload id")):
        p.add_argument(f"--{key}", required=True, help=what)

    p = sub.add_parser("dib-image-delete", help="delete a build from disk along with all "
                                                "its cloud uploads")
    p.add_argument("id", type=build_name, help="build, as <image>-<build id> (dib-image-list)")

    p = sub.add_parser("image-pause", help="pause the builds of an image")
    p.add_argument("image", help="image name")
    p = sub.add_parser("image-unpause", help="unpause the builds of an image")
    p.add_argument("image", help="image name")

    p = sub.add_parser("export-image-data", help="export image data from ZooKeeper")
    p.add_argument("path", help="export file path (written mode 0600)")
    p = sub.add_parser("import-image-data", help="import image data to ZooKeeper "
                                                 "(on a system with no builder running)")
    p.add_argument("path", help="import file path (as export-image-data writes it)")


def cmd_image_build(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    image = config.diskimages.get(args.image) if config is not None else None
    if image is None or image.abstract:
        known = sorted(n for n, d in (config.diskimages if config else {}).items()
                       if not d.abstract)
        raise NotFound(f"image {args.image!r} is not a diskimage of the configuration "
                       f"(only diskimage-builder images can be built; configured: "
                       f"{', '.join(known) or 'none'})")
    if image.pause:
        raise NodepoolError(f"image {args.image} is paused in the configuration "
                            f"(diskimages[].pause); no build requested")
    image_flags.request_build(zk.kazoo, args.image)
    paused = image_flags.is_paused(zk.kazoo, args.image)
    print(f"Build of image {args.image} requested; a builder starts it shortly "
          f"(`nodepool image-status` shows the request)."
          + (f" Note: image {args.image} is paused (`nodepool image-unpause "
             f"{args.image}`); no build starts while it is." if paused else ""))
    return 0


def _mark_deleting(read: Callable[[], Any], write: Callable[[Any], Any], what: str,
                   busy_state: Any, busy_word: str, deleting: Any) -> Any:
    """Set a record `deleting` over the version read; a builder's write meanwhile retries."""
    for _ in range(WRITE_ATTEMPTS):
        record = read()
        if record is None:
            raise NotFound(f"{what} not found")
        if record.state == busy_state:
            raise NodepoolError(f"cannot delete {what}: {busy_word} ({record.state.value})")
        if record.state == deleting:
            return record
        try:
            return write(record.with_state(deleting))
        except VersionConflict:
            continue
    raise NodepoolError(f"{what} keeps changing; try again")


def cmd_image_delete(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    kazoo = zk.kazoo
    what = (f"upload {args.upload_id} of build {args.image}-{args.build_id} to provider "
            f"{args.provider}")
    upload: ImageUpload = _mark_deleting(
        lambda: image_store.get_upload(kazoo, args.image, args.build_id, args.provider,
                                       args.upload_id),
        lambda u: image_store.update_upload(kazoo, u), what, UploadState.UPLOADING,
        "it is being uploaded", UploadState.DELETING)
    print(f"Upload {upload.id} ({upload.external_name or upload.external_id or 'no cloud image'}) "
          f"of image {upload.image} in {upload.provider} marked for deletion; the builder "
          f"deletes it from the cloud, then its record. Launchers boot the previous ready "
          f"upload meanwhile.")
    return 0


def cmd_dib_image_delete(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    image, build_id = args.id
    kazoo = zk.kazoo
    build: ImageBuild = _mark_deleting(
        lambda: image_store.get_build(kazoo, image, build_id),
        lambda b: image_store.update_build(kazoo, b), f"build {image}-{build_id}",
        BuildState.BUILDING, "it is being built", BuildState.DELETING)
    print(f"Build {build.name} marked for deletion; the builder deletes its uploads from "
          f"every cloud, its files, then its record.")
    return 0


def cmd_image_pause(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    image_flags.set_paused(zk.kazoo, args.image, True)
    print(f"Image {args.image} paused: no new build starts until `nodepool image-unpause "
          f"{args.image}` (uploads of its ready builds go on).")
    return 0


def cmd_image_unpause(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    image_flags.set_paused(zk.kazoo, args.image, False)
    print(f"Image {args.image} unpaused.")
    return 0


def cmd_export_image_data(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    data = image_transfer.export_data(zk.kazoo)
    try:
        fd = os.open(args.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            json.dump(data, f)
    except OSError as e:
        raise NodepoolError(f"cannot write {args.path}: {e.strerror}") from None
    print(f"Exported {len(data)} image record(s) to {args.path}.")
    return 0


def cmd_import_image_data(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    try:
        with open(args.path) as f:
            raw = json.load(f)
    except OSError as e:
        raise NodepoolError(f"cannot read {args.path}: {e.strerror}") from None
    except ValueError as e:
        raise NodepoolError(f"{args.path}: not JSON ({e})") from None
    count = image_transfer.import_data(zk.kazoo, image_transfer.check_data(raw, args.path))
    print(f"Imported {count} image record(s) from {args.path}.")
    return 0


COMMANDS = {"image-build": cmd_image_build, "image-delete": cmd_image_delete,
            "dib-image-delete": cmd_dib_image_delete, "image-pause": cmd_image_pause,
            "image-unpause": cmd_image_unpause, "export-image-data": cmd_export_image_data,
            "import-image-data": cmd_import_image_data}
