"""Vanished servers: a ready or in-use node whose server the cloud no longer lists.

A spot instance reclaimed by the cloud, a server deleted behind our back.
Judged on the leak scan's listing (leaks.py), as leaks are: a node is
suspect when its server is missing from a listing taken after the node
entered its state, and is judged vanished only when missing from the next
one too (a listing may lag a new server). Nodes still building are never
judged (their launch watches the server), nor static hosts (the adapter
does not launch). A vanished node is deleted with the reason logged,
counted and, when it is allocated to a request that still exists, in that
request's timeline; one its requestor holds locked is deleted once the lock
is free (no write to a node someone else holds locked: PROTOCOL.md).
"""

from __future__ import annotations

from typing import Callable, Iterable

from nodepool import timeline as tl
from nodepool.drivers.adapter import Instance
from nodepool.launcher.scope import ProviderScope
from nodepool.model import Node, NodeState

JUDGED_STATES = (NodeState.READY, NodeState.IN_USE)
REASON = "its server {external_id} vanished from the cloud's listing"


def missing_nodes(nodes: Iterable[Node], instances: Iterable[Instance], provider: str,
                  scan_started: float) -> dict[str, Node]:
    """Ready or in-use nodes of `provider`, in that state since before `scan_started`
    (wall clock), whose server the listing does not show (pure)."""
    listed = {i.external_id for i in instances}
    return {n.id: n for n in nodes
            if n.provider == provider and n.state in JUDGED_STATES and n.external_id
            and n.state_time < scan_started and n.external_id not in listed}


class Vanished:
    """A provider worker's judgement of vanished servers, on its loop thread."""

    def __init__(self, scope: ProviderScope, delete: Callable[[str, str], None]):
        self.scope = scope
        self._delete = delete          # (node id, reason): lock and delete it
        self.suspects: set[str] = set()
        self.judged: dict[str, str] = {}   # node id -> reason, counted once

    def judge(self, instances: list[Instance], scan_started: float) -> None:
        if not self.scope.adapter.launches:
            return
        nodes = [n for n in self.scope.ctx.cache.nodes() if n.provider == self.scope.name]
        missing = missing_nodes(nodes, instances, self.scope.name, scan_started)
        confirmed = {i: n for i, n in missing.items() if i in self.suspects}
        self.suspects = set(missing) - set(confirmed)
        self.judged = {i: r for i, r in self.judged.items() if i in confirmed}
        for node_id, node in confirmed.items():
            reason = REASON.format(external_id=node.external_id)
            if node_id not in self.judged:
                self.judged[node_id] = reason
                self.scope.log.warning("node=%s provider=%s Node %s: %s; deleting it",
                                       node_id, self.scope.name, node.state.value, reason)
                self.scope.ctx.metrics.vanished(self.scope.name, node.state.value)
                # The request it is allocated to, while that exists (a fulfilled one not
                # taken yet): its timeline says why the node is gone. An in-use node's
                # request was deleted by its requestor: the log and the metric say it.
                self.scope.ctx.timeline.record(node.allocated_to, self.scope.name,
                                               tl.NODE_VANISHED, reason, pool=node.pool,
                                               node=node_id, state=node.state.value)
            self._delete(node_id, reason)
