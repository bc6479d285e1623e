"""The upload worker: each ready build to every provider that lists its image, several at
once, each try bounded by the provider's image-upload-timeout, tagged with its ids."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException

from nodepool.builder import dib, records
from nodepool.builder.aws_cloud import AwsImageCloud
from nodepool.builder.cloud import TAG_BUILD, TAG_PROVIDER, TAG_UPLOAD, ImageCloud
from nodepool.builder.plan import ImageProvider, image_providers
from nodepool.zk import image_locks, image_store, locks
from nodepool.zk.image_records import (
    BuildState,
    ImageBuild,
    ImageUpload,
    UploadState,
    new_upload,
)

READY, FAILED = UploadState.READY, UploadState.FAILED

if TYPE_CHECKING:
    from nodepool.builder.daemon import Builder

log = logging.getLogger("nodepool.builder.upload")


class UploadWorker:
    """A sweep thread finds what to upload; a pool of `tuning.uploaders` threads uploads."""

    def __init__(self, builder: Builder):
        self.builder = builder
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=builder.tuning.uploaders,
                                       thread_name_prefix="uploader")
        self.in_flight: set[tuple[str, str, str]] = set()   # (image, build, provider)
        self.retry_at: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="upload-sweep", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        # An upload in progress is not waited for (it can take hours): its record stays
        # `uploading` with its lock gone, which any builder's cleanup removes (and the
        # half-made cloud image with it, as a leak), as Nodepool's does.
        self.pool.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float) -> None:
        if self.thread.ident is not None:   # started
            self.thread.join(timeout)

    def busy(self) -> bool:
        with self._lock:
            return bool(self.in_flight)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.wake.clear()   # before the sweep: a wake-up during it is kept for the next
            wait = self.builder.tuning.upload_sweep_interval
            try:
                wait = min(wait, self.sweep())
            except KazooException as e:
                log.warning("Upload sweep: ZooKeeper error (%s); retrying", e)
                wait = 5.0
            except Exception:
                log.exception("Upload sweep failed; retrying")
                wait = 10.0
            self.wake.wait(max(wait, 0.05))

    def sweep(self) -> float:
        """Start every upload that is due; seconds until a backed-off one is due again."""
        builder = self.builder
        wait = builder.tuning.upload_sweep_interval
        now = time.time()
        for provider in image_providers(builder.config):
            for name, pimage in provider.diskimages.items():
                if self.stop_event.is_set() or not builder.zk.connected:
                    return wait
                if pimage.pause or name not in builder.config.diskimages:
                    continue
                build = records.newest_ready_build(builder.kazoo, name)
                if build is None:
                    continue
                key = (name, build.id, provider.name)
                with self._lock:
                    if key in self.in_flight:
                        continue
                retry = self.retry_at.get(key, 0.0) - now
                if retry > 0:
                    wait = min(wait, retry)
                    continue
                if self._wanted(provider, build):
                    with self._lock:
                        self.in_flight.add(key)
                    self.pool.submit(self._upload_job, provider, build)
        return wait

    def _wanted(self, provider: ImageProvider, build: ImageBuild) -> bool:
        """Not uploaded there yet, and this builder has the file in the provider's format."""
        fmt = self.builder.provider_format(provider)
        if fmt not in build.formats:
            return False
        if fmt not in dib.local_files(self.builder.config.images_dir, build.image, build.id):
            return False
        return not records.has_ready_upload(self.builder.kazoo, build.image, build.id,
                                            provider.name)

    def _upload_job(self, provider: ImageProvider, build: ImageBuild) -> None:
        key = (build.image, build.id, provider.name)
        try:
            state = self._locked_upload(provider, build)
        except Exception:
            log.exception("image=%s build=%s provider=%s Upload failed", *key)
            state = FAILED
        finally:
            with self._lock:
                self.in_flight.discard(key)
        if state == FAILED:
            self.retry_at[key] = time.time() + self.builder.tuning.upload_backoff
            self.wake.set()   # the sweep then sleeps until this retry is due
        elif state == READY:
            self.retry_at.pop(key, None)
            self.builder.upload_finished()

    def _locked_upload(self, provider: ImageProvider, build: ImageBuild
                       ) -> UploadState | None:
        kazoo = self.builder.kazoo
        lock = records.try_lock(image_locks.lock_upload, kazoo, build.image, build.id,
                                provider.name, identifier=self.builder.identifier)
        if lock is None:
            return None   # another builder uploads it
        try:
            fresh = image_store.get_build(kazoo, build.image, build.id)
            if fresh is None or fresh.state == BuildState.DELETING:
                return None
            if records.has_ready_upload(kazoo, build.image, build.id, provider.name):
                return None
            return self._upload(provider, fresh)
        finally:
            locks.release(lock)

    def _upload(self, provider: ImageProvider, build: ImageBuild) -> UploadState:
        builder, kazoo = self.builder, self.builder.kazoo
        fmt = builder.provider_format(provider)
        # As Nodepool's records: no format until it is ready; a failed one keeps no facts.
        upload = image_store.create_upload(kazoo, new_upload(
            build.image, build.id, provider.name, username=build.username,
            python_path=build.python_path, shell_type=build.shell_type))
        upload_id = upload.id
        started = time.time()
        name = provider.image_name_format.format(image_name=build.image, upload_id=upload_id,
                                                 timestamp=str(int(started)))
        filename = dib.local_files(builder.config.images_dir, build.image, build.id)[fmt]
        meta = self._metadata(provider, build, upload_id)
        external_id = self._try_upload(provider, upload, name, filename, fmt, meta)
        if external_id is not None and not self._hook(provider, external_id, filename, upload):
            external_id = None
        if external_id is None:
            image_store.update_upload(kazoo, upload.with_state(
                FAILED, username=None, python_path=None, shell_type=None))
            builder.stats.upload(build.image, provider.name, started, ok=False)
            return FAILED
        image_store.update_upload(kazoo, upload.with_state(
            READY, external_id=external_id, external_name=name, format=fmt))
        builder.stats.upload(build.image, provider.name, started, ok=True)
        log.info("image=%s build=%s provider=%s upload=%s Ready as %s (%s)", build.image,
                 build.id, provider.name, upload_id, name, external_id)
        return READY

    def _metadata(self, provider: ImageProvider, build: ImageBuild, upload_id: str
                  ) -> dict[str, str]:
        diskimage = self.builder.config.diskimages.get(build.image)
        meta = dict(diskimage.metadata) if diskimage else {}
        meta.update(provider.diskimages[build.image].meta)
        meta.update({TAG_BUILD: build.id, TAG_UPLOAD: upload_id, TAG_PROVIDER: provider.name})
        return {str(k): str(v) for k, v in meta.items()}

    def _try_upload(self, provider: ImageProvider, upload: ImageUpload, name: str,
                    filename: str, fmt: str, meta: dict[str, str]) -> str | None:
        tuning = self.builder.tuning
        cloud = self.builder.cloud(provider)
        md5, sha256 = dib.checksum(filename, "md5"), dib.checksum(filename, "sha256")
        for attempt in range(1, tuning.upload_attempts + 1):
            log.info("image=%s build=%s provider=%s upload=%s Uploading %s (try %d of %d)",
                     upload.image, upload.build_id, provider.name, upload.id, filename,
                     attempt, tuning.upload_attempts)
            try:
                return cloud.upload(name, filename, fmt, meta, md5, sha256,
                                    diskimage=upload.image)
            except Exception as e:
                log.warning("image=%s build=%s provider=%s upload=%s Upload try %d failed: %s",
                            upload.image, upload.build_id, provider.name, upload.id,
                            attempt, e)
                self._remove_partial(cloud, name, upload)
            if attempt < tuning.upload_attempts and \
                    self.stop_event.wait(tuning.upload_retry_delay):
                return None
        return None

    def _remove_partial(self, cloud: ImageCloud | AwsImageCloud, name: str, upload: ImageUpload) -> None:
        """A failed try may leave a queued image behind: delete ours (by its tags)."""
        try:
            for image_id, _, build_id, upload_id in cloud.our_images():
                if (build_id, upload_id) == (upload.build_id, upload.id):
                    cloud.delete(image_id)
        except Exception as e:
            log.warning("provider=%s Could not remove what the failed upload of %s left: %s "
                        "(leak cleanup will)", upload.provider, name, e)

    def _hook(self, provider: ImageProvider, external_id: str, filename: str,
              upload: ImageUpload) -> bool:
        """post-upload-hook PROVIDER EXTERNAL_ID FILE; failing deletes the image."""
        if not provider.post_upload_hook:
            return True
        cmd = [provider.post_upload_hook, provider.name, external_id, filename]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            log.info("provider=%s Post upload hook %s: exit 0\n%s", provider.name, cmd,
                     done.stdout)
            return True
        except (OSError, subprocess.CalledProcessError) as e:
            out = getattr(e, "stderr", "") or ""
            log.error("provider=%s upload=%s Post upload hook %s failed: %s\n%s",
                      provider.name, upload.id, cmd, e, out)
        try:
            self.builder.cloud(provider).delete(external_id)
        except Exception as e:
            log.warning("provider=%s Could not delete image %s after the hook failed: %s",
                        provider.name, external_id, e)
        return False
