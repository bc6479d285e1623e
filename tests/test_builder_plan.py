"""The builder's pure decisions (nodepool/builder/plan.py) with plain data and a fixed clock."""

from __future__ import annotations

from nodepool.builder.plan import (
    Tuning,
    backoff,
    build_due,
    builds_to_keep,
    leaked,
    next_due,
    recent_uploads,
    wanted_formats,
)
from nodepool.config import DiskImage, parse_config
from nodepool.zk.image_records import BuildState, ImageBuild, ImageUpload, UploadState

NOW = 1_000_000.0
IMAGE = DiskImage(name="img", rebuild_age=3600)


def build(build_id: str, state: str = "ready", age: float = 0.0,
          formats: tuple[str, ...] = ("qcow2",)) -> ImageBuild:
    return ImageBuild("img", build_id, BuildState(state), state_time=NOW - age, formats=formats)


def upload(build_id: str, upload_id: str, state: str = "ready", age: float = 0.0) -> ImageUpload:
    return ImageUpload("img", build_id, "p", upload_id, UploadState(state), state_time=NOW - age)


def test_a_build_is_due_when_missing_old_or_short_of_a_format() -> None:
    assert build_due(IMAGE, ["qcow2"], None, NOW)
    assert not build_due(IMAGE, ["qcow2"], build("a", age=3599), NOW)
    assert build_due(IMAGE, ["qcow2"], build("a", age=3600), NOW)
    assert build_due(IMAGE, ["qcow2", "raw"], build("a", age=10), NOW)
    assert not build_due(IMAGE, ["qcow2", "raw"], build("a", formats=("qcow2", "raw")), NOW)
    assert not build_due(IMAGE, [], None, NOW)   # nothing to build it for
    assert next_due(IMAGE, build("a", age=600), NOW) == 3000


def test_failed_builds_back_off_doubling_to_a_ceiling() -> None:
    tuning = Tuning(build_backoff=60, build_backoff_max=3600)
    assert [backoff(n, tuning) for n in range(0, 9)] == [0, 60, 120, 240, 480, 960, 1920,
                                                        3600, 3600]


def test_the_two_newest_ready_builds_are_kept_and_none_of_a_removed_image() -> None:
    builds = [build("a", age=300), build("b", age=200), build("c", "failed", age=50),
              build("d", age=100), build("e", "building")]
    assert builds_to_keep(builds, configured=True) == {"b", "d"}
    assert builds_to_keep(builds, configured=False) == set()


def test_recent_uploads_are_the_two_newest_ready_ones_of_ready_builds() -> None:
    uploads = {"a": [upload("a", "1", age=300)], "b": [upload("b", "2", age=200),
                                                       upload("b", "3", "failed", age=10)],
               "d": [upload("d", "4", "uploading")]}
    assert recent_uploads(["a", "b", "d"], uploads) == {("a", "1"), ("b", "2")}


def test_leaks_are_tagged_images_no_record_has() -> None:
    images = [("i1", "img-1", "b", "1"), ("i2", "img-2", "b", "2")]
    assert leaked(images, {("b", "1")}) == {"i2": images[1]}


def test_formats_are_the_images_own_keep_formats_and_each_providers() -> None:
    config = parse_config("""
zookeeper-servers: [{host: zk}]
diskimages:
  - name: parent
    abstract: true
    formats: [raw]
  - name: img
    parent: parent
    keep-formats: [vhd]
  - name: lonely
providers:
  - name: p1
    cloud: c1
    diskimages: [{name: img}]
  - name: p2
    cloud: c2
    diskimages: [{name: img}, {name: lonely}]
""", "test.yaml")
    fmt = {"c1": "qcow2", "c2": "vhd"}
    assert wanted_formats(config, lambda p: fmt[p.cloud]) == {
        "img": ["qcow2", "raw", "vhd"], "lonely": ["vhd"]}
