"""Nodepool's web endpoints over one launcher: /ready, the listings, and /metrics.

Listings read the launcher's ZooKeeper cache (no round trip per request);
only the image lists and `/node-list?node_id=` read ZooKeeper itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from kazoo.exceptions import KazooException

from nodepool import listings
from nodepool.web.app import WebApp, negotiated
from nodepool.web.http import HTTPError, Request, Response, text
from nodepool.zk import images, locks, nodes

if TYPE_CHECKING:
    from nodepool.launcher.daemon import Launcher

LIST_CACHE = 1.0   # seconds, as Nodepool's webapp


def zookeeper_problem(launcher: "Launcher") -> str | None:
    """Why ZooKeeper cannot be relied on now, or None.

    Connected is not enough: a hung server keeps the connection up for a while,
    so the session must also be proven alive by a recently answered probe
    (launcher/fence.py), as the provider loops require before acting.
    """
    ctx = launcher.ctx
    if ctx is None:
        return getattr(launcher, "zk_waiting", None) or "starting: not connected to ZooKeeper yet"
    if not ctx.zk.connected:
        return "ZooKeeper is not connected"
    proof = launcher.proof
    if proof is not None and not proof.proven(proof.current_session()):
        return "ZooKeeper is not answering (the session is not proven alive)"
    return None


def ready_reason(launcher: "Launcher") -> str | None:
    """Why the launcher is not ready, or None when it is.

    Ready: ZooKeeper connected and answering, the launcher loop has made a pass
    (it has tried for its provider leases) and every provider it owns has
    finished a loop pass.
    """
    problem = zookeeper_problem(launcher)
    if problem is not None:
        return problem
    if launcher.stopping:
        return "stopping"
    if launcher.passes < 1:
        return "the launcher loop has not finished its first pass"
    waiting = sorted(w.name for w in launcher.worker_snapshot if w.passes < 1)
    if waiting:
        return f"provider(s) {', '.join(waiting)} have not finished a loop pass yet"
    return None


class NodepoolEndpoints:
    """The handlers; `request_reasons` (id -> text) fills request-list's Reason column."""

    def __init__(self, launcher: "Launcher",
                 request_reasons: Callable[[], Mapping[str, str]] | None = None):
        self.launcher = launcher
        self.request_reasons = request_reasons or (lambda: {})

    def install(self, app: WebApp) -> None:
        app.route("/ready", self.ready)
        app.route("/node-list", self.node_list, cache=LIST_CACHE, params=("node_id", "fields"))
        app.route("/request-list", self.request_list, cache=LIST_CACHE, params=("fields",))
        app.route("/label-list", self.label_list, cache=LIST_CACHE, params=("fields",))
        app.route("/provider-list", self.provider_list, cache=LIST_CACHE, params=("fields",))
        app.route("/image-list", self.image_list, cache=LIST_CACHE, params=("fields",))
        app.route("/dib-image-list", self.dib_image_list, cache=LIST_CACHE,
                  params=("fields",))
        app.route("/image-status", self.image_status, cache=LIST_CACHE, params=("fields",))
        app.route("/metrics", self.metrics)

    @property
    def _ctx(self):
        ctx = self.launcher.ctx
        if ctx is None:
            raise HTTPError(503, "the launcher is starting: no ZooKeeper view yet")
        return ctx

    def _connected_kazoo(self):
        """The kazoo client, or 503 at once when disconnected (no waiting on a web thread)."""
        problem = zookeeper_problem(self.launcher)
        if problem is not None:
            raise HTTPError(503, f"{problem}; this list needs a fresh read")
        return self._ctx.zk.kazoo

    def ready(self, request: Request) -> Response:
        reason = ready_reason(self.launcher)
        # Exactly "OK", as Nodepool's (probes may compare the body).
        return Response(body="OK") if reason is None else text(503, reason)

    def metrics(self, request: Request) -> Response:
        """Prometheus' exposition of the launcher's series (nodepool/metrics.py): served
        from memory, so it answers with the last values while ZooKeeper is away."""
        body, content_type = self.launcher.metrics.exposition()
        return Response(body=body, content_type=content_type)

    def node_list(self, request: Request) -> Response:
        columns = _columns(request, listings.NODES)
        node_id = request.param("node_id")
        cache = self._ctx.cache
        if node_id:
            if not node_id.isdigit() or len(node_id) > 20:
                raise HTTPError(400, f"bad node_id {node_id!r}: node ids are digits")
            found, is_locked = self._read_node(node_id)
        else:
            found, is_locked = cache.nodes(), cache.is_node_locked
        return _render(request, columns, listings.node_rows(found, is_locked))

    def _read_node(self, node_id: str):
        kazoo = self._connected_kazoo()
        try:
            node = nodes.get_node(kazoo, node_id)
            locked = bool(node and locks.node_lock_contenders(kazoo, node_id))
        except KazooException as e:
            raise HTTPError(503, f"ZooKeeper unavailable: {type(e).__name__}") from None
        return ([node] if node else []), (lambda _id: locked)

    def request_list(self, request: Request) -> Response:
        columns = _columns(request, listings.REQUESTS)
        rows = listings.request_rows(self._ctx.cache.requests(), self.request_reasons())
        return _render(request, columns, rows)

    def label_list(self, request: Request) -> Response:
        columns = _columns(request, listings.LABELS)
        return _render(request, columns, listings.label_rows(self._ctx.cache.pool_components()))

    def provider_list(self, request: Request) -> Response:
        """Who owns which provider (the lease), and who should by the spread."""
        columns = _columns(request, listings.PROVIDERS)
        cache = self._ctx.cache
        rows = listings.provider_rows(self.launcher.config.providers,
                                      cache.launcher_components(), cache.lease_holders())
        return _render(request, columns, rows)

    def image_list(self, request: Request) -> Response:
        columns = _columns(request, listings.IMAGES)
        rows = [listings.image_row(u) for u in self._images(images.all_uploads)]
        return _render(request, columns, rows)

    def dib_image_list(self, request: Request) -> Response:
        columns = _columns(request, listings.DIB_IMAGES)
        rows = [listings.dib_image_row(*b) for b in self._images(images.all_builds)]
        return _render(request, columns, rows)

    def image_status(self, request: Request) -> Response:
        columns = _columns(request, listings.IMAGE_STATUS)
        rows = [listings.image_status_row(*s) for s in self._images(images.image_statuses)]
        return _render(request, columns, rows)

    def _images(self, read):
        try:
            return read(self._connected_kazoo())
        except KazooException as e:
            raise HTTPError(503, f"ZooKeeper unavailable: {type(e).__name__}") from None


def fields_of(request: Request) -> list[str] | None:
    raw = request.param("fields")
    if raw is None or not raw.strip():
        return None
    return [f.strip() for f in raw.split(",") if f.strip()]


def _columns(request: Request, table: listings.Table) -> tuple[listings.Column, ...]:
    """The columns `?fields=` asks for (checked before any row is built), else all."""
    try:
        return table.select(fields_of(request))
    except ValueError as e:
        raise HTTPError(400, str(e)) from None


def _render(request: Request, columns, rows: list[dict]) -> Response:
    return negotiated(request, lambda: listings.table_json(columns, rows),
                      lambda: listings.table_text(columns, rows))
