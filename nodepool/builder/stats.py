"""The builder's figures: statsd under Nodepool's names (STATSD_HOST / STATSD_PORT) and
Prometheus series, served on `--metrics-port` by prometheus_client's HTTP server."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from nodepool.metrics import (
    LabelledChildren,
    RegistrySnapshot,
    StatsdSender,
    normalize_statsd_name,
    statsd_from_environ,
)
from nodepool.zk import image_flags, image_store
from nodepool.zk.image_records import BuildState

if TYPE_CHECKING:
    from nodepool.builder.daemon import Builder

log = logging.getLogger("nodepool.builder.stats")

STATUS_IDLE, STATUS_BUILDING, STATUS_UPLOADING, STATUS_PAUSED = 0, 1, 2, 3

# Histogram buckets (seconds): a diskimage-builder run takes minutes to hours, an upload
# seconds (a small image to a near cloud) to an hour.
BUILD_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200,
                 10800, 14400)
UPLOAD_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200)


class BuilderStats:
    def __init__(self, builder: Builder, sender: StatsdSender | None = None):
        self.builder = builder
        self.sender = sender
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._builds = LabelledChildren(Counter(
            "nodepool_builder_builds", "Builds finished, by result (ready, failed)",
            ["image", "result"], registry=r))
        self._build_seconds = LabelledChildren(Histogram(
            "nodepool_builder_build_duration_seconds", "diskimage-builder's run time",
            ["image", "result"], buckets=BUILD_BUCKETS, registry=r))
        self._size = LabelledChildren(Gauge(
            "nodepool_builder_image_size_bytes", "The newest ready build's file on disk",
            ["image", "format"], registry=r))
        self._uploads = LabelledChildren(Counter(
            "nodepool_builder_uploads", "Uploads finished, by result (ready, failed)",
            ["image", "provider", "result"], registry=r))
        self._upload_seconds = LabelledChildren(Histogram(
            "nodepool_builder_upload_duration_seconds",
            "From an upload's record to its result, every try and the hook included",
            ["image", "provider", "result"], buckets=UPLOAD_BUCKETS, registry=r))
        self._snapshot = RegistrySnapshot(r)
        r.register(_StateCollector(builder))
        self.server = None
        self._server_thread: threading.Thread | None = None

    @classmethod
    def from_environ(cls, builder: Builder) -> BuilderStats:
        try:
            target = statsd_from_environ()
            sender = StatsdSender(**target) if target else None
        except (ValueError, OSError) as e:
            log.error("statsd disabled: %s", e)
            sender = None
        return cls(builder, sender)

    # -- the HTTP endpoint --------------------------------------------------------------

    def serve(self, address: str, port: int) -> int:
        """Serve the registry at http://address:port/metrics; the port bound (0: any)."""
        try:
            self.server, self._server_thread = start_http_server(port, address, self.registry)
        except OSError as e:
            raise OSError(f"metrics: cannot listen on {address}:{port}: "
                          f"{e.strerror or e}") from None
        bound = self.server.server_port
        log.info("Prometheus metrics listening on %s:%s", address, bound)
        return bound

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.sender is not None:
            self.sender.stop()

    def _send(self, items: list[tuple[str, str, float]]) -> None:
        if self.sender is not None and items:
            self.sender.send(items)

    # -- events -------------------------------------------------------------------------

    def build(self, image: str, result: Any, formats: list[str], images_dir: str,
              build_id: str, ok: bool) -> None:
        """A build recorded ready (`ok`) or failed; `result` None if DIB could not run.
        statsd: nodepool.dib_image_build.<image>.status.{duration,rc,last_build} and
        .<fmt>.size."""
        outcome = "ready" if ok else "failed"
        self._builds(image, outcome).inc()
        if result is not None:
            self._build_seconds(image, outcome).observe(result.seconds)
        sizes = {}
        if ok:
            for fmt in formats:
                try:
                    sizes[fmt] = os.stat(f"{images_dir}/{image}-{build_id}.{fmt}"
                                         ).st_blocks * 512
                except OSError:
                    continue
                self._size(image, fmt).set(sizes[fmt])
        if self.sender is None or result is None:
            return
        key = f"nodepool.dib_image_build.{normalize_statsd_name(image)}"
        items = [("ms", f"{key}.status.duration", int(result.seconds * 1000)),
                 ("g", f"{key}.status.rc", 1 if result.returncode is None
                  else result.returncode if not result.timed_out else 1),
                 ("g", f"{key}.status.last_build", int(time.time()))]
        if result.ok:
            items.extend(("g", f"{key}.{fmt}.size", size) for fmt, size in sizes.items())
        self._send(items)

    def upload(self, image: str, provider: str, started: float, ok: bool) -> None:
        """statsd: nodepool.image_update.<image>.<provider> (timer and counter), ready only."""
        seconds = max(0.0, time.time() - started)
        outcome = "ready" if ok else "failed"
        self._uploads(image, provider, outcome).inc()
        self._upload_seconds(image, provider, outcome).observe(seconds)
        if not ok:
            return
        key = f"nodepool.image_update.{normalize_statsd_name(image)}." \
              f"{normalize_statsd_name(provider)}"
        self._send([("ms", key, int(seconds * 1000)), ("c", key, 1)])

    def requests(self) -> None:
        """Each cleanup pass: build requests and the newest ready build per image.
        statsd: nodepool.image_build_requests, per image too, and the state gauges."""
        if self.sender is None and self.server is None:
            return   # nothing reads them: spare ZooKeeper the reads
        builder, kazoo = self.builder, self.builder.kazoo
        host = normalize_statsd_name(builder.hostname)
        total, items = 0, []
        pending_of: dict[tuple, float] = {}
        newest: dict[tuple, float] = {}
        for image in image_store.image_names(kazoo):
            name = normalize_statsd_name(image)
            request = image_flags.build_request(kazoo, image)
            pending = 1 if request is not None and request.pending else 0   # as Nodepool counts
            total += pending
            pending_of[(image,)] = pending
            ready = [b.state_time for b in image_store.list_builds(kazoo, image,
                                                                  [BuildState.READY])
                     if b.state_time]
            if ready:
                newest[(image,)] = max(ready)
            items.append(("g", f"nodepool.image.{name}.image_build_requests", pending))
            items.append(("g", f"nodepool.builder.{host}.image.{name}.build.state",
                          image_state(builder, image)))
        families = self._snapshot.families
        families["nodepool_builder_image_build_requests"] = (
            "Manual build requests (nodepool image-build) not yet started, per image",
            ("image",), pending_of)
        families["nodepool_builder_image_ready_build_timestamp_seconds"] = (
            "When the image's newest ready build was recorded ready (Unix time)",
            ("image",), newest)
        items.append(("g", "nodepool.image_build_requests", total))
        self._send(items)


def image_state(builder: Builder, image: str) -> int:
    """0 idle, 1 building, 3 paused (Nodepool's values; 2, uploading, is never reported)."""
    if image in builder.builds.building:
        return STATUS_BUILDING
    diskimage = builder.config.diskimages.get(image)
    return STATUS_PAUSED if diskimage is not None and diskimage.pause else STATUS_IDLE


class _StateCollector:
    """Each buildable image's state, read from the builder at scrape time."""

    def __init__(self, builder: Builder):
        self.builder = builder

    def collect(self):
        family = GaugeMetricFamily(
            "nodepool_builder_image_build_state",
            "This builder's state of each image: 0 idle, 1 building, 3 paused", labels=["image"])
        for image in sorted(self.builder.formats):
            family.add_metric([image], image_state(self.builder, image))
        yield family

    def describe(self):
        return []
