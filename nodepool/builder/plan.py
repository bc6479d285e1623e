"""The builder's decisions as pure functions of (config, records, now): no I/O here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from nodepool.config import Config, DiskImage, OpenStackProvider
from nodepool.config.aws import AwsProvider
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState

KEEP_BUILDS = 2   # as Nodepool: the two newest ready builds of an image stay
KEEP_UPLOADS = 2  # ... and the two most recent ready uploads of an image to a provider


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The builder's timings (tests shorten them)."""

    cleanup_interval: float = 60.0      # seconds between cleanup passes (also after events)
    upload_sweep_interval: float = 60.0  # a safety pass over what should be uploaded
    config_check_interval: float = 5.0
    build_backoff: float = 60.0         # first wait after a failed build, doubling
    build_backoff_max: float = 3600.0
    upload_attempts: int = 3            # tries of one upload before it is recorded failed
    upload_retry_delay: float = 5.0     # between those tries
    upload_backoff: float = 300.0       # before a failed upload of a build is tried again
    builders: int = 1                   # builds in parallel (Nodepool's --build-workers)
    uploaders: int = 4                  # uploads in parallel (Nodepool's --upload-workers)
    leak_passes: int = 2                # passes an untracked tagged image is seen before deletion
    import_poll_interval: float = 10.0  # between looks at an AWS import task


DEFAULT = Tuning()


# The providers the builder uploads to: each has `diskimages`, and its image cloud
# (cloud.ImageCloud, aws_cloud.AwsImageCloud) has upload, delete, our_images and close.
ImageProvider = OpenStackProvider | AwsProvider


def image_providers(config: Config) -> list[ImageProvider]:
    return [p for p in config.providers.values()
            if isinstance(p, (OpenStackProvider, AwsProvider))]


def wanted_formats(config: Config, provider_format: Callable[[ImageProvider], str]
                   ) -> dict[str, list[str]]:
    """Per buildable diskimage, the formats to build: its `formats`, `keep-formats`, and
    the format of every provider that lists it (as Nodepool adds each provider's)."""
    wanted: dict[str, set[str]] = {}
    for image in config.diskimages.values():
        if not image.abstract:
            wanted[image.name] = set(image.formats) | set(image.keep_formats)
    for provider in image_providers(config):
        for name in provider.diskimages:
            if name in wanted:
                wanted[name].add(provider_format(provider))
    return {name: sorted(formats) for name, formats in wanted.items()}


def build_due(image: DiskImage, formats: list[str], newest_ready: ImageBuild | None,
              now: float) -> bool:
    """No ready build, the newest is rebuild-age old, or it lacks a wanted format."""
    if not formats:
        return False
    if newest_ready is None:
        return True
    if now - (newest_ready.state_time or 0) >= image.rebuild_age:
        return True
    return not set(newest_ready.formats) >= set(formats)


def next_due(image: DiskImage, newest_ready: ImageBuild | None, now: float) -> float:
    """Seconds until `image` is rebuild-age old (0 when it is)."""
    if newest_ready is None:
        return 0.0
    return max(0.0, (newest_ready.state_time or 0) + image.rebuild_age - now)


def backoff(failures: int, tuning: Tuning) -> float:
    if failures <= 0:
        return 0.0
    return min(tuning.build_backoff * 2 ** (failures - 1), tuning.build_backoff_max)


def builds_to_keep(builds: Iterable[ImageBuild], configured: bool) -> set[str]:
    """Ids of the two newest ready builds; none when the image left the config."""
    if not configured:
        return set()
    ready = sorted((b for b in builds if b.state == BuildState.READY),
                   key=lambda b: b.state_time or 0, reverse=True)
    return {b.id for b in ready[:KEEP_BUILDS]}


def recent_uploads(ready_builds: Iterable[str], uploads: Mapping[str, list[ImageUpload]]
                   ) -> set[tuple[str, str]]:
    """(build id, upload id) of the two most recent ready uploads, for one image and provider,
    among the uploads of ready builds (`uploads`: build id -> that provider's uploads)."""
    ready = [u for b in ready_builds for u in uploads.get(b, []) if u.state == UploadState.READY]
    ready.sort(key=lambda u: u.state_time or 0, reverse=True)
    return {(u.build_id, u.id) for u in ready[:KEEP_UPLOADS]}


def leaked(cloud_images: Iterable[tuple[str, str, str, str]], known: set[tuple[str, str]]
           ) -> dict[str, tuple[str, str, str, str]]:
    """Cloud images tagged by us whose (build id, upload id) no upload record has: id -> it."""
    return {i[0]: i for i in cloud_images if (i[2], i[3]) not in known}
