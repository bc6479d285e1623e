"""CLI commands on requests: request-list, and `request` acting as a CI master would."""

from __future__ import annotations

import argparse
import getpass
import socket
import threading
import time

from nodepool import listings
from nodepool.cli.nodes import _json, nodes_table
from nodepool.cli.output import age_of, print_json
from nodepool.errors import LockFailed, NodepoolError, NotFound
from nodepool.explain import decline_reasons, reasons_of
from nodepool.model import NodeRequest, NodeState, RequestState
from nodepool.zk import locks, nodes, paths, requests
from nodepool.zk.client import ZooKeeperClient


class RequestFailed(NodepoolError):
    """The request failed, timed out or was cancelled."""


def default_requestor() -> str:
    return f"nodepool-cli:{getpass.getuser()}@{socket.gethostname()}"


def cmd_request_list(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    reqs = requests.get_requests(zk.kazoo)
    now = time.time()
    reasons = reasons_of(zk.kazoo, reqs, now)   # from the request timelines
    if args.json:
        print_json([dict(r.to_dict(), id=r.id, age=round(age_of(r.state_time, now), 3),
                         reason=reasons.get(r.id, "")) for r in reqs])
        return 0
    print(listings.table_text(listings.REQUESTS.columns,
                              listings.request_rows(reqs, reasons, now=now)))
    return 0


def _wait_final(zk: ZooKeeperClient, request_id: str, timeout: float) -> NodeRequest | None:
    """Wait (on a data watch, not a poll) until the request is fulfilled, failed or gone."""
    done = threading.Event()
    latest: list[NodeRequest | None] = [None]

    def watch(data, stat, event=None):
        if data is None:
            latest[0] = None
            done.set()
            return False
        req = NodeRequest.from_json(request_id, data, stat.version)
        latest[0] = req
        if req.state in (RequestState.FULFILLED, RequestState.FAILED):
            done.set()
            return False
        return True

    zk.kazoo.DataWatch(paths.request(request_id), watch)
    if not done.wait(timeout):
        raise TimeoutError
    return latest[0]


def _take_nodes(zk: ZooKeeperClient, req: NodeRequest, hold: str | None) -> list:
    """Do what a requestor does with a fulfilled request, then return or hold the nodes.

    Lock every node (waiting up to 30 s, as Zuul does), check it is allocated to
    us, delete the request, then either set the nodes `used` (the launcher deletes
    them: single use) or `hold` them for a person to log in.
    """
    held_locks = []
    taken = []
    try:
        for node_id in req.nodes:
            held_locks.append(locks.lock_node(zk.kazoo, node_id, blocking=True, timeout=30,
                                              identifier="nodepool-cli"))
            node = nodes.get_node(zk.kazoo, node_id)
            if node is None or node.allocated_to != req.id:
                raise RequestFailed(f"node {node_id} is no longer allocated to {req.id}")
            taken.append(node)
        requests.delete_request(zk.kazoo, req.id)
        for node in taken:
            node.set_state(NodeState.HOLD if hold is not None else NodeState.USED)
            if hold is not None:
                node.comment = hold
            nodes.update_node(zk.kazoo, node)
        return taken
    finally:
        for lock in held_locks:
            locks.release(lock)


def cmd_request(args: argparse.Namespace, zk: ZooKeeperClient) -> int:
    req = NodeRequest(node_types=list(args.labels), requestor=args.requestor,
                      provider=args.provider, reuse=not args.no_reuse,
                      event_id=f"nodepool-cli-{int(time.time() * 1000)}")
    req = requests.submit_request(zk.kazoo, req, args.priority)
    if not args.wait:
        print(req.id)
        return 0
    if not args.json:
        print(f"Submitted request {req.id} for {', '.join(args.labels)}; waiting up to "
              f"{args.timeout:g}s")
    started = time.monotonic()
    try:
        final = _wait_final(zk, req.id, args.timeout)
    except TimeoutError:
        requests.delete_request(zk.kazoo, req.id)
        raise RequestFailed(f"request {req.id} was not fulfilled within {args.timeout:g}s; "
                            f"cancelled it (see `nodepool request-list` and launcher logs)") \
            from None
    if final is None:
        raise RequestFailed(f"request {req.id} was deleted by someone else")
    if final.state == RequestState.FAILED:
        why = decline_reasons(zk.kazoo, req.id)    # before the delete takes the timeline
        requests.delete_request(zk.kazoo, req.id)
        declined = ", ".join(final.declined_by) or "no pool"
        hint = "; ".join(why) if why else \
            "no launcher recorded why: is the label served by any provider?"
        raise RequestFailed(f"request {req.id} failed (declined by: {declined}): {hint}")
    elapsed = time.monotonic() - started
    try:
        taken = _take_nodes(zk, final, args.reason if args.hold else None)
    except (LockFailed, NotFound) as e:
        requests.delete_request(zk.kazoo, req.id)
        raise RequestFailed(f"request {req.id} was fulfilled but its nodes could not be "
                            f"taken: {e}") from None
    now = time.time()
    if args.json:
        print_json({"request": req.id, "seconds": round(elapsed, 3),
                    "nodes": [_json(n, False, now) for n in taken]})
        return 0
    print(f"Request {req.id} fulfilled in {elapsed:.3f}s:")
    print(nodes_table(taken, set(), now=now))
    if args.hold:
        for n in taken:
            print(f"Node {n.id} is held: ssh {n.username}@{n.interface_ip} -p "
                  f"{n.connection_port}; release it with `nodepool delete {n.id}`.")
    else:
        print("The nodes were returned as used; the launcher deletes them.")
    return 0
