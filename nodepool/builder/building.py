"""The build worker: builds each diskimage when it is due or asked for, one build per image
across every builder (Nodepool's build lock), and records the outcome."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException

from nodepool.builder import dib, records
from nodepool.builder.plan import backoff, build_due, next_due
from nodepool.config import DiskImage
from nodepool.zk import image_flags, image_locks, image_store, locks
from nodepool.zk.image_records import BuildState, new_build

if TYPE_CHECKING:
    from nodepool.builder.daemon import Builder

log = logging.getLogger("nodepool.builder.build")

IDLE_WAIT = 300.0   # the longest sleep between passes when nothing is due sooner


class Bell:
    """A wake-up every waiting thread hears (an Event cleared by one would hide it from
    the others)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.rings = 0

    def set(self) -> None:
        with self._cond:
            self.rings += 1
            self._cond.notify_all()

    def wait(self, heard: int, timeout: float) -> int:
        """Until a ring after `heard` (or `timeout`); the rings heard by then."""
        with self._cond:
            self._cond.wait_for(lambda: self.rings != heard, timeout)
            return self.rings


class BuildWorker:
    """`workers` threads (Nodepool's --build-workers, default 1), each building one image
    at a time; the image's build lock shares the images out between them as between
    builders. Woken by ZooKeeper events on the images (a request, a pause lifted) and by
    config changes; otherwise asleep until the next image is rebuild-age old."""

    def __init__(self, builder: Builder, workers: int = 1):
        self.builder = builder
        self.wake = Bell()
        self.stop_event = threading.Event()
        self.failures: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.failed_at: dict[str, float] = {}
        self.building: set[str] = set()   # the images being built now (stats)
        # Counts lost ZooKeeper sessions: a build during which one was lost lost its lock
        # (another builder may have started the same image), so it is recorded failed, as
        # Nodepool does.
        self.sessions_lost = 0
        self.threads = [threading.Thread(target=self._run, name=f"build-worker-{i}",
                                         daemon=True) for i in range(max(1, workers))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            if thread.ident is not None:   # started
                thread.join(timeout)

    def _run(self) -> None:
        heard = self.wake.rings
        while not self.stop_event.is_set():
            wait = IDLE_WAIT
            try:
                wait = self.run_pass()
            except KazooException as e:
                log.warning("Build pass: ZooKeeper error (%s); retrying", e)
                wait = 5.0
            except Exception:
                log.exception("Build pass failed; retrying")
                wait = 10.0
            heard = self.wake.wait(heard, wait)

    def run_pass(self) -> float:
        """Build what is due; the seconds until something may be due again."""
        builder = self.builder
        wait = IDLE_WAIT
        formats = builder.formats
        for image in list(builder.config.diskimages.values()):
            if self.stop_event.is_set() or not builder.zk.connected:
                return wait
            if image.abstract:
                continue
            wait = min(wait, self._consider(image, formats.get(image.name, [])))
        return wait

    def _consider(self, image: DiskImage, formats: list[str]) -> float:
        kazoo = self.builder.kazoo
        if image.pause or image_flags.is_paused(kazoo, image.name) or not formats:
            return IDLE_WAIT
        now = time.time()
        retry = self.retry_at.get(image.name, 0.0) - now
        if retry > 0 and not self._asked_since_failure(image.name):
            return retry
        requested = image_flags.has_build_request(kazoo, image.name)
        newest = records.newest_ready_build(kazoo, image.name)
        if not requested and not build_due(image, formats, newest, now):
            return next_due(image, newest, now) or IDLE_WAIT
        lock = records.try_lock(image_locks.lock_build, kazoo, image.name,
                                identifier=self.builder.identifier)
        if lock is None:
            return IDLE_WAIT   # another builder builds it; its records will tell us
        try:
            # Re-check under the lock: another builder may just have finished one.
            requested = image_flags.has_build_request(kazoo, image.name)
            again = records.newest_ready_build(kazoo, image.name)
            if not requested and (again and (not newest or again.id != newest.id)):
                return 0.0
            ok = self._build(image, formats, manual=requested)
        finally:
            locks.release(lock)
        if ok:
            self.failures.pop(image.name, None)
            self.retry_at.pop(image.name, None)
            if requested:
                image_flags.remove_build_request(kazoo, image.name)
            self.builder.build_finished(image.name)
            return 0.0
        count = self.failures.get(image.name, 0) + 1
        self.failures[image.name] = count
        delay = backoff(count, self.builder.tuning)
        self.failed_at[image.name] = time.time()
        self.retry_at[image.name] = self.failed_at[image.name] + delay
        log.warning("image=%s Build failed (%d in a row); next try in %.0f s", image.name,
                    count, delay)
        return delay

    def _asked_since_failure(self, image: str) -> bool:
        """An `image-build` made after the last failure skips the backoff (once: if that
        build fails too, the backoff applies again)."""
        request = image_flags.build_request(self.builder.kazoo, image)
        return request is not None and request.state_time > self.failed_at.get(image, 0.0)

    def _build(self, image: DiskImage, formats: list[str], manual: bool) -> bool:
        builder, kazoo, config = self.builder, self.builder.kazoo, self.builder.config
        # As Nodepool's: the first record names the builder and formats; the last one
        # adds the image's facts (and names no formats if it failed).
        build = image_store.create_build(kazoo, new_build(
            image.name, "", formats, builder=builder.hostname, builder_id=builder.builder_id))
        build_id = build.id
        log.info("image=%s build=%s Building (%s, formats %s)", image.name, build_id,
                 "requested" if manual else "due", ",".join(formats))
        self.building.add(image.name)
        lost_before = self.sessions_lost
        try:
            result = self._run_dib(image, formats, build_id)
        except Exception:
            log.exception("image=%s build=%s Build failed to run", image.name, build_id)
            result = None
        finally:
            self.building.discard(image.name)
        ok = result is not None and result.ok
        if ok and self.sessions_lost != lost_before:
            log.error("image=%s build=%s The ZooKeeper session was lost during the build "
                      "(its lock with it): recording it failed", image.name, build_id)
            ok = False
        if ok:
            missing = set(formats) - set(dib.local_files(config.images_dir, image.name, build_id))
            if missing:
                log.error("image=%s build=%s The build wrote no %s file", image.name, build_id,
                          ",".join(sorted(missing)))
                ok = False
        state = BuildState.READY if ok else BuildState.FAILED
        try:
            # As Nodepool's: only a ready build names its formats.
            image_store.update_build(kazoo, build.with_state(
                state, formats=build.formats if ok else (), username=image.username,
                python_path=image.python_path, shell_type=image.shell_type))
        except Exception:
            log.exception("image=%s build=%s Could not record the build; removing its files",
                          image.name, build_id)
            dib.delete_local(config.images_dir, image.name, build_id)
            return False
        builder.stats.build(image.name, result, formats, config.images_dir, build_id, ok)
        if ok:
            log.info("image=%s build=%s Built in %.1f s", image.name, build_id, result.seconds)
        elif result is not None:
            why = "timed out" if result.timed_out else "stopped" if result.stopped else \
                f"exit code {result.returncode}"
            log.error("image=%s build=%s Build failed (%s); log: %s", image.name, build_id,
                      why, result.log_path)
        if not ok:
            dib.delete_local(config.images_dir, image.name, build_id)
        return ok

    def _run_dib(self, image: DiskImage, formats: list[str], build_id: str) -> dib.BuildResult:
        config = self.builder.config
        required = config.images_dir_required_free
        free = dib.free_mib(config.images_dir)
        log_file = dib.log_path(config, image.name, build_id)
        Path(config.build_log_dir).mkdir(parents=True, exist_ok=True)
        dib.prune_logs(config, image.name)
        output = dib.output_base(config.images_dir, image.name, build_id)
        if free < required:
            message = (f"images-dir {config.images_dir} has {free:.0f} MiB free, "
                       f"images-dir-required-free is {required} MiB: not building\n")
            log.error("image=%s %s", image.name, message.strip())
            with open(log_file, "w") as f:
                f.write(message)
            return dib.BuildResult(False, None, False, False, 0.0, log_file)
        cmd = dib.command(image, formats, output)
        env = dib.environment(image, config, output)
        log.info("image=%s build=%s Running %s (log %s)", image.name, build_id, " ".join(cmd),
                 log_file)
        return dib.run(cmd, env, log_file, image.build_timeout, self.stop_event)
