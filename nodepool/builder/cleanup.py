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
from nodepool.builder.plan import builds_to_keep, image_providers, leaked, recent_uploads
from nodepool.errors import NotFound, VersionConflict
from nodepool.zk import image_locks, image_store, locks, nodes, paths
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState

B, U = BuildState, UploadState

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
        if self.thread.ident is not None:   # started
            self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.wake.clear()   # before the pass: a wake-up during it is kept for the next
            try:
                if self.builder.zk.connected:
                    self.run_pass()
            except KazooException as e:
                log.warning("Cleanup pass: ZooKeeper error (%s); retrying", e)
            except Exception:
                log.exception("Cleanup pass failed; retrying")
            self.passes += 1
            self.wake.wait(self.builder.tuning.cleanup_interval)

    def run_pass(self) -> None:
        kazoo = self.builder.kazoo
        self._in_use = {n.image_id for n in nodes.get_nodes(kazoo) if n.image_id}
        for image in image_store.image_names(kazoo):
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
        all_builds = image_store.list_builds(kazoo, image)
        keep = builds_to_keep(all_builds, image in config.diskimages)
        ready_ids = [b.id for b in all_builds if b.state == B.READY]
        for provider in image_providers(config):
            if image not in provider.diskimages:
                for build in all_builds:   # the provider no longer takes this image
                    for upload in image_store.list_uploads(kazoo, image, build.id,
                                                           provider.name):
                        self._delete_upload(upload)
                continue
            by_build = {b: image_store.list_uploads(kazoo, image, b, provider.name)
                        for b in ready_ids}
            recent = recent_uploads(ready_ids, by_build)
            for build in all_builds:
                ups = by_build.get(build.id) or image_store.list_uploads(
                    kazoo, image, build.id, provider.name)
                self._provider_uploads(build, ups, build.id in keep, recent)
        for build in all_builds:
            if build.id in keep and build.state != B.DELETING:
                continue
            if build.state == B.BUILDING:
                if image_locks.is_locked(kazoo, paths.image_build_lock(image)):
                    continue
                # Read again: it may have ended (and its lock gone) since it was listed.
                fresh = image_store.get_build(kazoo, image, build.id)
                if fresh is None or fresh.state != B.BUILDING:
                    continue
                build = fresh
            self._retire_build(build)

    def _provider_uploads(self, build: ImageBuild, ups: list[ImageUpload], kept: bool,
                          recent: set[tuple[str, str]]) -> None:
        kazoo = self.builder.kazoo
        for upload in ups:
            if upload.state == U.UPLOADING:
                if image_locks.is_locked(kazoo, paths.image_upload_lock(
                        upload.image, upload.build_id, upload.provider)):
                    continue
                fresh = image_store.get_upload(kazoo, upload.image, upload.build_id,
                                               upload.provider, upload.id)
                if fresh is not None and fresh.state == U.UPLOADING:
                    log.info("image=%s build=%s provider=%s upload=%s Removing an upload "
                             "whose uploader is gone", upload.image, upload.build_id,
                             upload.provider, upload.id)
                    self._delete_upload(fresh)
            elif upload.state in (U.DELETING, U.FAILED):
                self._delete_upload(upload)
            elif not kept and (build.id, upload.id) not in recent:
                self._delete_upload(upload)

    def _retire_build(self, build: ImageBuild) -> None:
        kazoo = self.builder.kazoo
        remaining = image_store.build_uploads(kazoo, build)
        if build.state != B.DELETING:
            # Deleting once every upload is on its way out (local files may then go).
            if not all(u.state == U.DELETING for u in remaining):
                return
            lock = records.try_lock(image_locks.lock_build_id, kazoo, build.image, build.id,
                                    identifier=self.builder.identifier)
            if lock is None:
                return
            try:
                image_store.update_build(kazoo, build.with_state(B.DELETING))
            except (NotFound, VersionConflict):
                return   # changed or gone since it was read: next pass
            finally:
                locks.release(lock)
        if not remaining:
            log.info("image=%s build=%s Deleting the build record (%s)", build.image, build.id,
                     build.state.value)
            image_store.delete_build(kazoo, build.image, build.id)

    def _delete_upload(self, upload: ImageUpload) -> None:
        builder, kazoo = self.builder, self.builder.kazoo
        if upload.path in self._in_use:
            log.info("image=%s build=%s provider=%s upload=%s Kept: a node was booted from it",
                     upload.image, upload.build_id, upload.provider, upload.id)
            return
        lock = records.try_lock(image_locks.lock_upload_number, kazoo, upload,
                                identifier=builder.identifier)
        if lock is None:
            return   # someone else works on it (or it is gone): next pass
        try:
            if upload.state != U.DELETING:
                try:
                    upload = image_store.update_upload(kazoo, upload.with_state(U.DELETING))
                except (NotFound, VersionConflict):
                    return
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
            locks.release(lock)
        image_store.delete_upload(kazoo, upload.image, upload.build_id, upload.provider,
                                  upload.id)

    # -- local files and leaks ----------------------------------------------

    def _local_files(self) -> None:
        config, kazoo = self.builder.config, self.builder.kazoo
        for image, build_id in dib.local_builds(config.images_dir):
            build = image_store.get_build(kazoo, image, build_id)
            if build is None or build.state == B.DELETING:
                log.info("image=%s build=%s Deleting the files on disk", image, build_id)
                dib.delete_local(config.images_dir, image, build_id)
            elif build.state == B.READY:
                self._prune_formats(build)

    def _prune_formats(self, build: ImageBuild) -> None:
        """delete-after-upload: drop each format every provider has a ready upload of."""
        config, kazoo = self.builder.config, self.builder.kazoo
        diskimage = config.diskimages.get(build.image)
        if diskimage is None or not diskimage.delete_after_upload:
            return
        keep = set(diskimage.keep_formats)
        for provider in image_providers(config):
            if build.image not in provider.diskimages:
                continue
            if not records.has_ready_upload(kazoo, build.image, build.id, provider.name):
                keep.add(self.builder.provider_format(provider))
        drop = set(dib.local_files(config.images_dir, build.image, build.id)) - keep
        if drop:
            dib.delete_local(config.images_dir, build.image, build.id, formats=drop)

    def _leaks(self) -> None:
        kazoo = self.builder.kazoo
        known: dict[str, set[tuple[str, str]]] = {}
        for upload in image_store.all_uploads(kazoo):
            known.setdefault(upload.provider, set()).add(records.upload_key(upload))
        for provider in image_providers(self.builder.config):
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
