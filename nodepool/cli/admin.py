"""CLI commands that remove records: `erase PROVIDER` (Nodepool's) and `request-delete ID`."""

from __future__ import annotations

import argparse
import sys

from kazoo.exceptions import NoNodeError

from nodepool.errors import NotFound
from nodepool.zk import images, nodes, requests
from nodepool.zk.client import ZooKeeperClient


def request_id(text: str) -> str:
    """A request id as ZooKeeper names them: `<priority>-<sequence>` (`request-list`)."""
    prio, _, seq = text.partition("-")
    if not (prio.isdigit() and seq.isdigit()) or len(text) > 40:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a request id (request ids look like 200-0000000042, as "
            f"`nodepool request-list` shows them)")
    return text


def add_parsers(sub) -> None:
    p = sub.add_parser("erase", help="erase a provider's node and image records from "
                                     "ZooKeeper (not its cloud objects)")
    p.add_argument("provider", metavar="PROVIDER", help="provider name")
    p.add_argument("--force", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("request-delete", help="delete a node request (one left by "
                                              "`nodepool request --no-wait`)")
    p.add_argument("id", type=request_id, help="request id")


def cmd_request_delete(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    req = requests.get_request(zk.kazoo, args.id)
    if req is None:
        raise NotFound(f"request {args.id} not found")
    requests.delete_request(zk.kazoo, args.id)
    held = f"; its node(s) {', '.join(req.nodes)} go back to the pool" if req.nodes else ""
    print(f"Request {args.id} ({req.state.value}, {', '.join(req.node_types)}) deleted{held}.")
    return 0


def cmd_erase(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    """As Nodepool's: ask (unless --force), then delete the records; the cloud is untouched."""
    found = [n for n in nodes.get_nodes(zk.kazoo) if n.provider == args.provider]
    uploads = images.provider_build_paths(zk.kazoo, args.provider)
    if not args.force:
        print(f"\nWARNING! This action is not reversible!\nProvider {args.provider}: "
              f"{len(found)} node record(s), {len(uploads)} image build record(s).")
        try:
            answer = input(f"Erase ZooKeeper data for provider {args.provider}? [N/y] ")
        except EOFError:   # no terminal (a script without --force)
            answer = ""
        if answer.strip().lower() != "y":
            print("Aborting. No data erased.")
            return 1
    print(f"Erasing build data for {args.provider}...")
    for path in uploads:
        try:
            zk.kazoo.delete(path, recursive=True)
        except NoNodeError:
            pass
    print(f"Erasing node data for {args.provider}...")
    for node in found:
        nodes.delete_node(zk.kazoo, node.id)
    print(f"Erased {len(found)} node record(s) and {len(uploads)} image build record(s) "
          f"of {args.provider}; its servers in the cloud were not touched.", file=sys.stderr)
    return 0


COMMANDS = {"erase": cmd_erase, "request-delete": cmd_request_delete}
