"""`nodepool alien-image-list [PROVIDER]`: cloud images a builder uploaded that ZooKeeper
does not account for (Nodepool's command; the one CLI command that calls a cloud).

As Nodepool decides it: for each OpenStack and AWS provider of the config, the cloud's
images (AWS: the account's AMIs) whose metadata (tags) has `nodepool_build_id` (only
those a builder made; the cloud's own images are never listed), less the external ids of
the `ready` uploads recorded for that provider's configured diskimages.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nodepool import listings
from nodepool.cli.output import print_json
from nodepool.errors import DriverError, NotFound
from nodepool.zk import image_store
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.image_records import UploadState

TAG_BUILD = "nodepool_build_id"   # the upload metadata key Nodepool's builder and ours set

ALIEN_IMAGES = listings.Table("alien-image-list", (
    listings.Column("provider", "Provider"), listings.Column("name", "Name"),
    listings.Column("id", "Image ID"),
))


def add_parser(sub) -> None:
    p = sub.add_parser("alien-image-list", help="list images not accounted for by nodepool")
    p.add_argument("provider", nargs="?", help="only this provider")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")


def builder_images(provider: Any) -> list[tuple[str, str]]:
    """(id, name) of the provider's cloud images that carry `nodepool_build_id`."""
    if provider.driver == "aws":
        from nodepool.builder.aws_cloud import AwsImageCloud
        return AwsImageCloud(provider).builder_images()
    from nodepool.drivers.openstack.cloud import Cloud
    cloud = Cloud(provider)
    try:
        return cloud.call("list images", lambda conn: [
            (i.id, i.name) for i in conn.image.images() if TAG_BUILD in (i.properties or {})])
    finally:
        cloud.close()


def recorded_ids(zk: ZooKeeperClient, provider: Any) -> set[str]:
    """External ids of the ready uploads of the provider's configured diskimages."""
    found = set()
    for image in provider.diskimages:
        for build_id in image_store.build_ids(zk.kazoo, image):
            for upload in image_store.list_uploads(zk.kazoo, image, build_id, provider.name,
                                                   [UploadState.READY]):
                if upload.external_id:
                    found.add(upload.external_id)
    return found


def _providers(args: argparse.Namespace, config: Any) -> list[Any]:
    chosen = [p for name, p in sorted(config.providers.items())
              if args.provider is None or name == args.provider]
    if args.provider is not None and not chosen:
        raise NotFound(f"provider {args.provider!r} is not in the configuration")
    return chosen


def cmd_alien_image_list(args: argparse.Namespace, zk: ZooKeeperClient, config: Any) -> int:
    rows: list[dict[str, str]] = []
    failed = []
    for provider in _providers(args, config):
        if provider.driver not in ("openstack", "aws"):
            continue   # only these get uploads (the static driver boots none)
        try:
            listed = builder_images(provider)
        except DriverError as e:
            print(f"nodepool: warning: cannot list the images of provider {provider.name}: "
                  f"{e}", file=sys.stderr)
            failed.append(provider.name)
            continue
        known = recorded_ids(zk, provider)
        rows.extend({"provider": provider.name, "name": name, "id": image_id}
                    for image_id, name in listed if image_id not in known)
    if args.json:
        print_json(rows)
    else:
        print(listings.table_text(ALIEN_IMAGES.columns, rows))
    return 1 if failed else 0
