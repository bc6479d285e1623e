"""CLI listings with the web's columns: label-list, image-list, dib-image-list."""

from __future__ import annotations

import argparse

from nodepool import listings
from nodepool.cli.output import print_json
from nodepool.zk import components, images
from nodepool.zk.client import ZooKeeperClient


def _show(args: argparse.Namespace, table: listings.Table, rows: list[dict]) -> int:
    """Text by default; --json prints the objects the web endpoint returns for JSON."""
    if args.json:
        print_json(rows)
    else:
        print(listings.table_text(table.columns, rows))
    return 0


def cmd_label_list(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    rows = listings.label_rows(components.list_components(zk, components.POOL))
    return _show(args, listings.LABELS, rows)


def cmd_image_list(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    rows = [listings.image_row(u) for u in images.all_uploads(zk.kazoo)]
    return _show(args, listings.IMAGES, rows)


def cmd_dib_image_list(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    rows = [listings.dib_image_row(*b) for b in images.all_builds(zk.kazoo)]
    return _show(args, listings.DIB_IMAGES, rows)


COMMANDS = {"label-list": (cmd_label_list, "list the labels registered launcher pools offer"),
            "image-list": (cmd_image_list, "list image uploads (built images in providers)"),
            "dib-image-list": (cmd_dib_image_list, "list built diskimage-builder images")}


def add_parsers(sub) -> None:
    for name, (_, what) in COMMANDS.items():
        p = sub.add_parser(name, help=what)
        p.add_argument("--json", action="store_true", help="JSON output for scripts")
