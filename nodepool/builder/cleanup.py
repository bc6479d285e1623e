"""Rotation and cleanup: old builds and uploads away (cloud first, then ZooKeeper), local
files of gone builds, failed and stale records, and images tagged by us that no record has.

As Nodepool's cleanup worker, with one rule more: an upload that a node still records in
its `image_id` (ready, in use, held...) is kept until that node is gone.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException

from nodepool.builder import dib, records
from nodepool.builder.plan import builds_to_keep, leaked, openstack_providers, recent_uploads
from nodepool.builder.records import BUILDING, DELETING, FAILED, READY, UPLOADING, Build, Upload
from nodepool.zk import nodes

if TYPE_CHECKING:
    from nodepool.builder.daemon import Builder

log = logging.getLogger("nodepool.builder.cleanup")


class CleanupWorker:
    def __init__(self, builder: Builder):
        self.builder = builder
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.passes = 0
        self.suspects: dict[str, dict[str, int]] = {}   # provider -> leaked image id -> passes
        self.thread = threading.Thread(target=self._run, name="cleanup-worker", daemon=True)
        self._in_use: set[str] = set()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.builder.zk.connected:
                    self.run_pass()
            except KazooException as e:
                log.warning("Cleanup pass: ZooKeeper error (%s); retrying", e)
            except Exception:
                log.exception("Cleanup pass failed; retrying")
            self.passes += 1
            self.wake.wait(self.builder.tuning.cleanup_interval)
            self.wake.clear()

    def run_pass(self) -> None:
        kazoo = self.builder.kazoo
        self._in_use = {n.image_id for n in nodes.get_nodes(kazoo) if n.image_id}
        for image in records.image_names(kazoo):
            if self.stop_event.is_set():
                return
            try:
                self._image(image)
            except KazooException:
                raise
            except Exception:
                log.exception("image=%s Cleanup failed", image)
        self._local_files()
        self._leaks()
        self.builder.stats.requests()

    # -- records ------------------------------------------------------------

    def _image(self, image: str) -> None:
        kazoo, config = self.builder.kazoo, self.builder.config
        all_builds = records.builds(kazoo, image)
        keep = builds_to_keep(all_builds, image in config.diskimages)
        ready_ids = [b.id for b in all_builds if b.state == READY]
        for provider in openstack_providers(config):
            if image not in provider.diskimages:
                for build in all_builds:   # the provider no longer takes this image
                    for upload in records.uploads(kazoo, image, build.id, provider.name):
                        self._delete_upload(upload)
                continue
            by_build = {b: records.uploads(kazoo, image, b, provider.name) for b in ready_ids}
            recent = recent_uploads(ready_ids, by_build)
            for build in all_builds:
                ups = by_build.get(build.id) or records.uploads(kazoo, image, build.id,
                                                                provider.name)
                self._provider_uploads(build, ups, build.id in keep, recent)
        for build in all_builds:
            if build.id in keep and build.state != DELETING:
                continue
            if build.state == BUILDING and self._lock_held(
                    records.build_lock(kazoo, image, self.builder.identifier)):
                continue
            self._retire_build(build)

    def _provider_uploads(self, build: Build, ups: list[Upload], kept: bool,
                          recent: set[tuple[str, str]]) -> None:
        kazoo = self.builder.kazoo
        for upload in ups:
            if upload.state == UPLOADING:
                if self._lock_held(records.upload_lock(kazoo, upload.image, upload.build_id,
                                                       upload.provider, self.builder.identifier)):
                    continue
                fresh = records.uploads(kazoo, upload.image, upload.build_id, upload.provider)
                if any(u.id == upload.id and u.state == UPLOADING for u in fresh):
                    log.info("image=%s build=%s provider=%s upload=%s Removing an upload "
                             "whose uploader is gone", upload.image, upload.build_id,
                             upload.provider, upload.id)
                    self._delete_upload(upload)
            elif upload.state in (DELETING, FAILED):
                self._delete_upload(upload)
            elif not kept and (build.id, upload.id) not in recent:
                self._delete_upload(upload)

    def _retire_build(self, build: Build) -> None:
        kazoo = self.builder.kazoo
        remaining = records.all_uploads(kazoo, build.image, build.id)
        if build.state != DELETING and all(u.state == DELETING for u in remaining):
            lock = records.build_id_lock(kazoo, build.image, build.id, self.builder.identifier)
            if records.try_acquire(lock):
                try:
                    records.store_build(kazoo, build.image, build.id,
                                        records.with_state(build.data, DELETING))
                finally:
                    lock.release()
        if not remaining:
            log.info("image=%s build=%s Deleting the build record (%s)", build.image, build.id,
                     build.state)
            records.delete_build(kazoo, build.image, build.id)

    def _delete_upload(self, upload: Upload) -> None:
        builder, kazoo = self.builder, self.builder.kazoo
        if upload.path in self._in_use:
            log.info("image=%s build=%s provider=%s upload=%s Kept: a node was booted from it",
                     upload.image, upload.build_id, upload.provider, upload.id)
            return
        lock = records.upload_id_lock(kazoo, upload, builder.identifier)
        if not records.try_acquire(lock):
            return   # someone else works on it: next pass
        try:
            if upload.state != DELETING:
                upload.data = records.with_state(upload.data, DELETING)
                records.store_upload(kazoo, upload)
            provider = builder.config.providers.get(upload.provider)
            if upload.external_id and provider is not None:
                log.info("image=%s build=%s provider=%s upload=%s Deleting image %s from the "
                         "cloud", upload.image, upload.build_id, upload.provider, upload.id,
                         upload.external_id)
                try:
                    builder.cloud(provider).delete(upload.external_id)
                except Exception as e:
                    log.warning("provider=%s Could not delete image %s: %s; next pass",
                                upload.provider, upload.external_id, e)
                    return
            elif upload.external_id:
                log.warning("provider=%s upload=%s The provider is not in the config: removing "
                            "the record only", upload.provider, upload.id)
        finally:
            lock.release()
        records.delete_upload(kazoo, upload)

    def _lock_held(self, lock) -> bool:
        if records.try_acquire(lock):
            lock.release()
            return False
        return True

    # -- local files and leaks ----------------------------------------------

    def _local_files(self) -> None:
        config, kazoo = self.builder.config, self.builder.kazoo
        for image, build_id in dib.local_builds(config.images_dir):
            build = records.get_build(kazoo, image, build_id)
            if build is None or build.state == DELETING:
                log.info("image=%s build=%s Deleting the files on disk", image, build_id)
                dib.delete_local(config.images_dir, image, build_id)
            elif build.state == READY:
                self._prune_formats(build)

    def _prune_formats(self, build: Build) -> None:
        """delete-after-upload: drop each format every provider has a ready upload of."""
        config, kazoo = self.builder.config, self.builder.kazoo
        diskimage = config.diskimages.get(build.image)
        if diskimage is None or not diskimage.delete_after_upload:
            return
        keep = set(diskimage.keep_formats)
        for provider in openstack_providers(config):
            if build.image not in provider.diskimages:
                continue
            ups = records.uploads(kazoo, build.image, build.id, provider.name)
            if not any(u.state == READY for u in ups):
                keep.add(self.builder.provider_format(provider))
        drop = set(dib.local_files(config.images_dir, build.image, build.id)) - keep
        if drop:
            dib.delete_local(config.images_dir, build.image, build.id, formats=drop)

    def _leaks(self) -> None:
        kazoo = self.builder.kazoo
        known: dict[str, set[tuple[str, str]]] = {}
        for image in records.image_names(kazoo):
            for build in records.builds(kazoo, image):
                for provider in records.build_providers(kazoo, image, build.id):
                    for upload in records.uploads(kazoo, image, build.id, provider):
                        known.setdefault(provider, set()).add((build.id, upload.id))
        for provider in openstack_providers(self.builder.config):
            if not provider.diskimages:
                continue
            try:
                images = self.builder.cloud(provider).our_images()
            except Exception as e:
                log.warning("provider=%s Could not list images for leak cleanup: %s",
                            provider.name, e)
                continue
            seen = self.suspects.get(provider.name, {})
            now = {i: seen.get(i, 0) + 1 for i in leaked(images, known.get(provider.name, set()))}
            for image_id, count in list(now.items()):
                if count >= self.builder.tuning.leak_passes:
                    log.info("provider=%s Deleting leaked image %s", provider.name, image_id)
                    try:
                        self.builder.cloud(provider).delete(image_id)
                        now.pop(image_id)
                    except Exception as e:
                        log.warning("provider=%s Could not delete leaked image %s: %s",
                                    provider.name, image_id, e)
            self.suspects[provider.name] = now
