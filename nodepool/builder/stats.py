"""The builder's statsd figures, under Nodepool's names (STATSD_HOST / STATSD_PORT)."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from nodepool.metrics import StatsdSender, normalize_statsd_name, statsd_from_environ
from nodepool.zk import image_flags, image_store

if TYPE_CHECKING:
    from nodepool.builder.daemon import Builder

log = logging.getLogger("nodepool.builder.stats")

STATUS_IDLE, STATUS_BUILDING, STATUS_UPLOADING, STATUS_PAUSED = 0, 1, 2, 3


class BuilderStats:
    def __init__(self, builder: Builder, sender: StatsdSender | None = None):
        self.builder = builder
        self.sender = sender

    @classmethod
    def from_environ(cls, builder: Builder) -> BuilderStats:
        try:
            target = statsd_from_environ()
            sender = StatsdSender(**target) if target else None
        except (ValueError, OSError) as e:
            log.error("statsd disabled: %s", e)
            sender = None
        return cls(builder, sender)

    def _send(self, items: list[tuple[str, str, float]]) -> None:
        if self.sender is not None and items:
            self.sender.send(items)

    def build(self, image: str, result: Any, formats: list[str], images_dir: str,
              build_id: str) -> None:
        """nodepool.dib_image_build.<image>.status.{duration,rc,last_build} and .<fmt>.size."""
        if self.sender is None or result is None:
            return
        key = f"nodepool.dib_image_build.{normalize_statsd_name(image)}"
        items = [("ms", f"{key}.status.duration", int(result.seconds * 1000)),
                 ("g", f"{key}.status.rc", 1 if result.returncode is None
                  else result.returncode if not result.timed_out else 1),
                 ("g", f"{key}.status.last_build", int(time.time()))]
        if result.ok:
            for fmt in formats:
                try:
                    size = os.stat(f"{images_dir}/{image}-{build_id}.{fmt}").st_blocks * 512
                except OSError:
                    continue
                items.append(("g", f"{key}.{fmt}.size", size))
        self._send(items)

    def upload(self, image: str, provider: str, started: float, ok: bool) -> None:
        """nodepool.image_update.<image>.<provider> (timer and counter) for a ready upload."""
        if not ok:
            return
        key = f"nodepool.image_update.{normalize_statsd_name(image)}." \
              f"{normalize_statsd_name(provider)}"
        self._send([("ms", key, int((time.time() - started) * 1000)), ("c", key, 1)])

    def requests(self) -> None:
        """nodepool.image_build_requests, per image too, and the builder's state gauges."""
        if self.sender is None:
            return
        builder, kazoo = self.builder, self.builder.kazoo
        host = normalize_statsd_name(builder.hostname)
        total, items = 0, []
        for image in image_store.image_names(kazoo):
            name = normalize_statsd_name(image)
            request = image_flags.build_request(kazoo, image)
            pending = 1 if request is not None and request.pending else 0   # as Nodepool counts
            total += pending
            items.append(("g", f"nodepool.image.{name}.image_build_requests", pending))
            diskimage = builder.config.diskimages.get(image)
            state = STATUS_BUILDING if image in builder.builds.building else \
                STATUS_PAUSED if diskimage is not None and diskimage.pause else STATUS_IDLE
            items.append(("g", f"nodepool.builder.{host}.image.{name}.build.state", state))
        items.append(("g", "nodepool.image_build_requests", total))
        self._send(items)

    def stop(self) -> None:
        if self.sender is not None:
            self.sender.stop()
