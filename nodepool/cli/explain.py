"""`nodepool request-explain ID`: a request's timeline in plain sentences (or --json)."""

from __future__ import annotations

import argparse

from nodepool.cli.output import print_json
from nodepool.explain import explain, render_explain
from nodepool.zk.client import ZooKeeperClient


def add_parser(sub) -> None:
    p = sub.add_parser("request-explain",
                       help="why a request waits or failed: its timeline in sentences")
    p.add_argument("id", help="request id, e.g. 200-0000000042")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")


def cmd_request_explain(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    """Unknown id: NotFound, which `nodepool` prints as one line (exit 1)."""
    explained = explain(zk.kazoo, args.id)
    if args.json:
        print_json(explained)
    else:
        print(render_explain(explained))
    return 0
