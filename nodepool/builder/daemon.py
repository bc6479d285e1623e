"""The builder daemon: config, ZooKeeper, its component record, and the three workers.

Threads: the build worker (one build at a time, as Nodepool's default), the upload
sweep and its pool of uploaders, the cleanup worker, and apscheduler's (the config
check). ZooKeeper data watches on each image's `request-build` and `pause` wake the
build worker, so a manual `image-build` starts at once; a finished build wakes the
uploads and the cleanup, a finished upload wakes the cleanup (rotation).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from pathlib import Path

from nodepool.builder.aws_cloud import AwsImageCloud
from nodepool.builder.building import BuildWorker
from nodepool.builder.cleanup import CleanupWorker
from nodepool.builder.cloud import ImageCloud, image_format
from nodepool.builder.plan import DEFAULT, ImageProvider, Tuning, wanted_formats
from nodepool.builder.stats import BuilderStats
from nodepool.builder.uploading import UploadWorker
from nodepool.config import Config, ConfigError, ConfigFiles
from nodepool.config.aws import AwsProvider
from nodepool.zk import paths
from nodepool.zk.client import LOST, NEW_SESSION, ZooKeeperClient, connect_retrying
from nodepool.zk.components import ComponentRegistry

log = logging.getLogger("nodepool.builder")

BUILDER = "builder"   # the component kind, as Nodepool's BuilderComponent
ID_FILE = "builder_id.txt"


class BuilderConfigError(Exception):
    """The config cannot run a builder (no images-dir)."""


def check_builder_config(config: Config) -> None:
    if not config.images_dir:
        raise BuilderConfigError(f"{config.source_path}: images-dir: required by "
                                 "nodepool-builder (where built images are written)")


def builder_id(images_dir: str) -> str:
    """This builder's lasting id: images-dir/builder_id.txt, made once (as Nodepool)."""
    path = Path(images_dir) / ID_FILE
    if path.exists():
        return path.read_text().strip()
    import uuid
    value = str(uuid.uuid4())
    path.write_text(value)
    return value


class Builder:
    def __init__(self, config_path: str | ConfigFiles, hostname: str | None = None,
                 tuning: Tuning = DEFAULT, metrics_listen: tuple[str, int] | None = None):
        self.files = config_path if isinstance(config_path, ConfigFiles) \
            else ConfigFiles(config_path)
        self.config = self.files.load()
        check_builder_config(self.config)
        self._stamp = self.files.stamp()
        self.hostname = hostname or socket.gethostname()
        self.tuning = tuning
        self.metrics_listen = metrics_listen   # (address, port): Prometheus; None: none
        self.metrics_port: int | None = None   # the port bound (metrics_listen's 0: any)
        self.identifier = f"{self.hostname}:{os.getpid()}"
        self.builder_id = ""
        self.zk: ZooKeeperClient | None = None
        self.registry: ComponentRegistry | None = None
        self.formats: dict[str, list[str]] = {}
        self._formats_of: dict[str, str] = {}
        self._clouds: dict[str, ImageCloud | AwsImageCloud] = {}
        self._clouds_lock = threading.Lock()
        self._watched: set[str] = set()
        self.stats = BuilderStats.from_environ(self)
        self.builds = BuildWorker(self, tuning.builders)
        self.uploads = UploadWorker(self)
        self.cleanup = CleanupWorker(self)
        self.scheduler = None
        self.stopping = False
        self.reloads = 0
        self._interrupted = threading.Event()

    @property
    def kazoo(self):
        return self.zk.kazoo

    # -- start and stop -----------------------------------------------------------------

    def start(self, zk_retry: bool = False) -> bool:
        """Connect and start the workers; False when interrupted while ZooKeeper was away.

        With `zk_retry` (the daemon), ZooKeeper away at start is retried every 1, 2, 4 ...
        30 s; else ZooKeeperUnavailable at once. OSError: the metrics port cannot be bound
        (served first, so a scrape answers while ZooKeeper is away)."""
        config = self.config
        if self.metrics_listen is not None and self.metrics_port is None:
            self.metrics_port = self.stats.serve(*self.metrics_listen)
        Path(config.images_dir).mkdir(parents=True, exist_ok=True)
        self.builder_id = builder_id(config.images_dir)
        self.zk = self._connect(zk_retry)
        if self.zk is None:
            return False
        self.zk.add_listener(self._on_zk_state)
        self.registry = ComponentRegistry(self.zk, self.hostname)
        self.registry.register(BUILDER, self.registry.base_data(BUILDER))
        self._apply(config)
        self.builds.start()
        self.uploads.start()
        self.cleanup.start()
        from apscheduler.schedulers.background import BackgroundScheduler
        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(self.check_config, "interval",
                               seconds=self.tuning.config_check_interval,
                               id="config-check", max_instances=1, coalesce=True)
        self.scheduler.start()
        log.info("Builder %s (id %s) started: %d diskimage(s), images in %s", self.hostname,
                 self.builder_id, len(self.formats), config.images_dir)
        return True

    def _connect(self, retry: bool) -> ZooKeeperClient | None:
        return connect_retrying(self.config, retry, self._interrupted)

    def interrupt(self) -> None:
        """Any thread or a signal handler: give up a start still waiting for ZooKeeper."""
        self._interrupted.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop building (a build in progress is killed and recorded failed), uploading and
        cleaning; uploads in progress are left to the next cleanup (see UploadWorker)."""
        if self.stopping:
            return
        self.stopping = True
        self.interrupt()
        log.info("Builder stopping")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for worker in (self.builds, self.uploads, self.cleanup):
            worker.stop()
        for worker in (self.builds, self.uploads, self.cleanup):
            worker.join(timeout)
        with self._clouds_lock:
            for cloud in self._clouds.values():
                cloud.close()
            self._clouds.clear()
        if self.registry is not None:
            self.registry.close()
        if self.zk is not None:
            self.zk.disconnect()
        self.stats.stop()
        log.info("Builder stopped")

    # -- config -------------------------------------------------------------------------

    def check_config(self) -> bool:
        """Reload when the files changed (scheduler, SIGHUP, tests); True if it reloaded."""
        stamp = self.files.stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            new = self.files.load()
            check_builder_config(new)
        except (ConfigError, BuilderConfigError, OSError) as e:
            log.error("New configuration rejected, keeping the last good one:\n%s", e)
            return False
        if (new.zookeeper_hosts(), new.zookeeper_chroot()) != \
                (self.config.zookeeper_hosts(), self.config.zookeeper_chroot()):
            log.warning("ZooKeeper settings changed: restart the builder to use them")
        if new.images_dir != self.config.images_dir:
            log.warning("images-dir changed: restart the builder to use it (builder_id.txt "
                        "and the builds on disk are in the old one)")
            new = dataclasses.replace(new, images_dir=self.config.images_dir)
        self._apply(new)
        self.reloads += 1
        log.info("Configuration reloaded: %d diskimage(s)", len(self.formats))
        return True

    def _apply(self, config: Config) -> None:
        with self._clouds_lock:
            for name, cloud in list(self._clouds.items()):
                if config.providers.get(name) != cloud.provider:
                    cloud.close()
                    del self._clouds[name]
        self._formats_of = {}
        self.config = config
        self.formats = wanted_formats(config, self.provider_format)
        self._watch_images()
        self.wake_all()

    def provider_format(self, provider: ImageProvider) -> str:
        if isinstance(provider, AwsProvider):
            return provider.image_format   # the provider's image-format (raw default)
        fmt = self._formats_of.get(provider.name)
        if fmt is None:
            try:
                fmt = image_format(provider)
            except Exception as e:
                log.error("provider=%s Cannot read its cloud %s from clouds.yaml (%s): "
                          "assuming qcow2", provider.name, provider.cloud, e)
                fmt = "qcow2"
            self._formats_of[provider.name] = fmt
        return fmt

    def cloud(self, provider: ImageProvider) -> ImageCloud | AwsImageCloud:
        """The provider's image cloud (one per provider, remade when its config changes)."""
        with self._clouds_lock:
            cloud = self._clouds.get(provider.name)
            if cloud is None or cloud.provider != provider:
                if isinstance(provider, AwsProvider):
                    cloud = AwsImageCloud(provider, self.tuning.import_poll_interval)
                else:
                    cloud = ImageCloud(provider)
                self._clouds[provider.name] = cloud
            return cloud

    # -- events -------------------------------------------------------------------------

    def _watch_images(self) -> None:
        """A data watch on each image's request-build and pause flags (once per image)."""
        for name in self.formats:
            if name in self._watched:
                continue
            self._watched.add(name)
            for flag in (paths.image_build_request(name), paths.image_pause(name)):
                self.kazoo.DataWatch(flag, self._flag_changed(name))

    def _flag_changed(self, name: str):
        def changed(data, stat, event=None) -> bool:
            if self.stopping or name not in self._watched:
                return False   # ends this watch
            if event is not None:
                self.builds.wake.set()
            return True
        return changed

    def _on_zk_state(self, state: str) -> None:
        if state == LOST:
            self.builds.sessions_lost += 1
        if state == NEW_SESSION:
            self._watched.clear()
            self._watch_images()
            self.wake_all()

    def wake_all(self) -> None:
        for worker in (self.builds, self.uploads, self.cleanup):
            worker.wake.set()

    def build_finished(self, image: str) -> None:
        self.uploads.wake.set()
        self.cleanup.wake.set()

    def upload_finished(self) -> None:
        self.cleanup.wake.set()
