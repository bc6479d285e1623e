"""nodepool-builder end to end: the stand-in disk-image-create, uploads to the simulator over
HTTP, a launcher booting the upload, rotation, failures, and two builders sharing the work."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builderproc import builder_process, stop_by
from imagewatch import ImageWatch
from requestor import Requestor, wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.builder.daemon import Builder
from nodepool.builder.plan import Tuning
from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

FAKE_DIB = str(Path(__file__).resolve().parent / "fake-disk-image-create")
FAST = Tuning(cleanup_interval=30.0, upload_sweep_interval=30.0, config_check_interval=60.0,
              build_backoff=0.2, build_backoff_max=1.0, upload_attempts=2,
              upload_retry_delay=0.05, upload_backoff=0.2, uploaders=2, leak_passes=2)

CONFIG = ZK_HEADER + """
images-dir: {images}
build-log-dir: {logs}
build-log-retention: 2
images-dir-required-free: 0
labels:
  - name: built
diskimages:
  - name: base
    abstract: true
    dib-cmd: {dib}
    elements: [debian-minimal, vm]
    release: bookworm
    username: debian
    python-path: /usr/bin/python3
    env-vars:
      FAKE_DIB_RECORD: {record}
  - name: debian-built
    parent: base
    metadata:
      team: infra
{extra_images}
providers:
  - name: sim-cloud
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    image-upload-timeout: 20
    diskimages:
      - name: debian-built
        meta:
          purpose: ci
{extra_provider_images}
    pools:
      - name: main
        max-servers: 4
        host-key-checking: false
        labels:
          - name: built
            diskimage: debian-built
            flavor-name: m1.tiny
"""


def write_config(path: Path, zk_tls: dict, tmp: Path, name: str = "nb", env: str = "",
                 extra_images: str = "", extra_provider_images: str = "") -> Path:
    images, logs = tmp / f"{name}-images", tmp / f"{name}-logs"
    text = nodepool_yaml(zk_tls, CONFIG, images=images, logs=logs, dib=FAKE_DIB,
                         record=tmp / "dib-record.jsonl", extra_images=extra_images,
                         extra_provider_images=extra_provider_images)
    if env:
        text = text.replace("      FAKE_DIB_RECORD:", env + "      FAKE_DIB_RECORD:", 1)
    path.write_text(text)
    return path


@pytest.fixture
def start_builder(zk_tls: dict, tmp_path: Path, ctl: Any) -> Iterator[Any]:
    started: list[Builder] = []

    def start(name: str = "nb", tuning: Tuning = FAST, edit: Any = None, **kw: Any) -> Builder:
        path = write_config(tmp_path / f"{name}.yaml", zk_tls, tmp_path, name, **kw)
        if edit is not None:
            path.write_text(edit(path.read_text()))
        builder = Builder(str(path), hostname=name, tuning=tuning)
        builder.start()
        started.append(builder)
        return builder
    yield start
    for builder in started:
        builder.stop(10)


def ready(watch: ImageWatch, image: str = "debian-built") -> list[str]:
    return [b for b, d in watch.builds(image).items() if d["state"] == "ready"]


def ready_uploads(watch: ImageWatch, image: str = "debian-built",
                  provider: str = "sim-cloud") -> dict[tuple[str, str], dict]:
    return {k: u for k, u in watch.uploads(image, provider).items() if u["state"] == "ready"}


def cloud_images(ctl: Any) -> dict[str, dict]:
    return {i["id"]: i for i in ctl.state()["images"]}


def test_a_build_is_uploaded_and_a_launcher_boots_a_node_from_it(
        start_builder: Any, watch: ImageWatch, zk_client: Any, ctl: Any, conn: Any,
        tmp_path: Path) -> None:
    builder = start_builder()
    uploads = watch.wait(lambda: ready_uploads(watch), what="a ready upload")
    (build_id, upload_id), upload = next(iter(uploads.items()))
    build = watch.builds("debian-built")[build_id]
    # Nodepool's record keys and values.
    assert build["builder"] == "nb" and build["builder_id"] == builder.builder_id
    assert build["formats"] == "qcow2" and build["username"] == "debian"
    assert build["python_path"] == "/usr/bin/python3" and "shell_type" in build
    assert len(build_id) == 32 and len(upload_id) == 10
    # Nodepool's keys in Nodepool's order (json.dumps of its toDict()).
    assert list(build) == ["state", "state_time", "builder", "builder_id", "formats",
                           "username", "python_path", "shell_type"]
    assert list(upload) == ["state", "state_time", "external_id", "external_name", "format",
                            "username", "python_path", "shell_type"]
    assert upload["format"] == "qcow2" and upload["username"] == "debian"
    # The stand-in was run as Nodepool runs disk-image-create.
    run = json.loads((tmp_path / "dib-record.jsonl").read_text().splitlines()[0])
    assert run["argv"][:6] == ["-x", "-t", "qcow2", "--checksum", "--no-tmpfs",
                               "--qemu-img-options"]
    assert run["elements"] == ["debian-minimal", "vm"]
    assert run["output"] == f"{tmp_path}/nb-images/debian-built-{build_id}"
    assert run["env"]["DIB_RELEASE"] == "bookworm"
    assert run["env"]["DIB_IMAGE_NAME"] == "debian-built"
    assert Path(f"{run['output']}.qcow2").is_file()
    assert (tmp_path / "nb-logs" / f"debian-built-{build_id}.log").is_file()
    # In Glance, tagged with the build and upload ids and the metadata.
    image = conn.image.get_image(upload["external_id"])
    assert image.status == "active" and image.disk_format == "qcow2"
    assert image.name == upload["external_name"]
    assert image.properties["nodepool_build_id"] == build_id
    assert image.properties["nodepool_upload_id"] == upload_id
    assert image.properties["nodepool_provider_name"] == "sim-cloud"
    assert image.properties["team"] == "infra" and image.properties["purpose"] == "ci"
    assert image.size == Path(f"{run['output']}.qcow2").stat().st_size
    # A real launcher on the simulator boots a node of the diskimage label from it.
    launcher = Launcher(str(tmp_path / "nb.yaml"), hostname="nl")
    launcher.start()
    try:
        rq = Requestor(zk_client)
        req = rq.wait(rq.submit(["built"]))
        assert req["state"] == "fulfilled", req
        node = rq.node(req["nodes"][0])
        assert node["image_id"] == (f"/nodepool/images/debian-built/builds/{build_id}"
                                    f"/providers/sim-cloud/images/{upload_id}")
        assert node["username"] == "debian"
        server = {s["id"]: s for s in ctl.servers()}[node["external_id"]]
        assert server["image"] == upload["external_id"]
    finally:
        launcher.stop()


def request_build(zk_client: Any, image: str = "debian-built") -> None:
    """What `nodepool image-build` writes (Nodepool's flag)."""
    zk_client.ensure_path(f"/nodepool/images/{image}/request-build")


def test_rebuilds_rotate_the_oldest_upload_away_but_not_while_a_node_uses_it(
        start_builder: Any, watch: ImageWatch, zk_client: Any, ctl: Any,
        tmp_path: Path) -> None:
    builder = start_builder()
    (first, first_upload), up = next(iter(watch.wait(lambda: ready_uploads(watch)).items()))
    first_path = (f"/nodepool/images/debian-built/builds/{first}/providers/sim-cloud/images/"
                  f"{first_upload}")
    # A node booted from the first upload (as a launcher records it).
    zk_client.create("/nodepool/nodes/0000000001", json.dumps(
        {"state": "in-use", "image_id": first_path, "type": ["built"]}).encode(),
        makepath=True)
    for count in (2, 3):
        request_build(zk_client)   # served at once: the flag's data watch wakes the builder
        watch.wait(lambda: len({b for b, _ in ready_uploads(watch)}) >= count
                   and not zk_client.exists("/nodepool/images/debian-built/request-build"),
                   what=f"{count} builds uploaded")
    # Two newest builds kept; the first one's upload stays while its node exists.
    watch.wait(lambda: watch.builds("debian-built")[first]["state"] == "ready"
               and builder.cleanup.passes >= 3, what="cleanup passes")
    assert first_path in {f"/nodepool/images/debian-built/builds/{b}/providers/sim-cloud/"
                          f"images/{u}" for b, u in ready_uploads(watch)}
    assert up["external_id"] in cloud_images(ctl)
    zk_client.delete("/nodepool/nodes/0000000001", recursive=True)
    builder.cleanup.wake.set()
    watch.wait(lambda: first not in watch.builds("debian-built"), what="oldest build removed")
    assert up["external_id"] not in cloud_images(ctl)   # deleted from the cloud first
    assert len(ready(watch)) == 2 and len(ready_uploads(watch)) == 2
    # The pass that removed the record deletes the files on disk at its end.
    passes = builder.cleanup.passes
    # Counted at a pass's end: the next count is the removing pass's own, or (woken now) a
    # later one; either way the removing pass has ended.
    builder.cleanup.wake.set()
    watch.wait(lambda: builder.cleanup.passes > passes, what="the removing pass ended")
    assert not list((tmp_path / "nb-images").glob(f"debian-built-{first}*"))


def test_a_failed_build_is_recorded_with_its_log_and_retried_with_backoff(
        start_builder: Any, watch: ImageWatch, zk_tls: dict, tmp_path: Path) -> None:
    builder = start_builder(env="      FAKE_DIB_FAIL: no mirror reachable\n")
    failed: set[str] = set()

    def two_failures() -> bool:
        failed.update(b for b, d in watch.builds("debian-built").items()
                      if d["state"] == "failed")
        return len(failed) >= 2
    watch.wait(two_failures, what="two failed builds")
    logs = tmp_path / "nb-logs"
    for build_id in failed:
        text = (logs / f"debian-built-{build_id}.log").read_text()
        assert "ERROR: no mirror reachable" in text and "Exit code: 1" in text
    assert not watch.uploads("debian-built", "sim-cloud")
    assert not list((tmp_path / "nb-images").glob("debian-built-*.qcow2"))
    assert builder.builds.failures["debian-built"] >= 2
    # Fixed: the next try builds it (the reload wakes the worker).
    write_config(tmp_path / "nb.yaml", zk_tls, tmp_path)
    assert builder.check_config()
    watch.wait(lambda: ready_uploads(watch), what="built after the fix")
    assert len(list(logs.glob("debian-built-*.log"))) <= 3   # build-log-retention 2 (+ new)


def test_a_failed_upload_keeps_the_previous_image_and_is_retried(
        start_builder: Any, watch: ImageWatch, zk_client: Any, ctl: Any) -> None:
    start_builder()
    (first, _), up = next(iter(watch.wait(lambda: ready_uploads(watch)).items()))
    ctl.inject("http_error", status=500, count=2, method="PUT", path=r"/images/[^/]+/file$")
    request_build(zk_client)
    seen: list[dict] = []

    def failed_then_ready() -> bool:
        uploads = watch.uploads("debian-built", "sim-cloud")
        seen.extend(u for (b, _), u in uploads.items() if b != first)
        return any(u["state"] == "failed" for u in seen) and \
            len({b for b, _ in ready_uploads(watch)}) == 2
    watch.wait(failed_then_ready, what="a failed upload, then a ready one")
    # Recorded as Nodepool records them: no format while uploading, no facts when failed.
    failed = next(u for u in seen if u["state"] == "failed")
    assert (failed["external_id"], failed["format"], failed["username"]) == (None, None, None)
    # The first upload served all along, and is still there (two builds are kept).
    assert watch.uploads("debian-built", "sim-cloud")[(first, _first_upload(watch, first))][
        "state"] == "ready"
    assert cloud_images(ctl)[up["external_id"]]["status"] == "active"
    tagged = [i for i in cloud_images(ctl).values() if "nodepool_build_id" in i["properties"]]
    assert len(tagged) == 2   # no half-made image left by the failed tries


def _first_upload(watch: ImageWatch, build: str) -> str:
    return next(u for b, u in watch.uploads("debian-built", "sim-cloud") if b == build)


SECOND_IMAGE = """  - name: ubuntu-built
    parent: base
"""
SECOND_PROVIDER_IMAGE = """      - name: ubuntu-built
"""


def test_two_builders_share_the_builds_one_build_per_image(
        start_builder: Any, watch: ImageWatch, tmp_path: Path) -> None:
    hold = tmp_path / "go"
    kw = dict(env=f"      FAKE_DIB_WAIT_FILE: {hold}\n", extra_images=SECOND_IMAGE,
              extra_provider_images=SECOND_PROVIDER_IMAGE)
    start_builder("nb1", **kw)
    start_builder("nb2", **kw)

    def both_building() -> set[str] | None:
        who = {d["builder"] for i in ("debian-built", "ubuntu-built")
               for d in watch.builds(i).values() if d["state"] == "building"}
        return who if len(who) == 2 else None
    assert watch.wait(both_building, what="each builder building one image") == {"nb1", "nb2"}
    hold.touch()
    for image in ("debian-built", "ubuntu-built"):
        watch.wait(lambda image=image: ready_uploads(watch, image), what=f"{image} uploaded")
        builds = watch.builds(image)
        assert len(builds) == 1, builds   # never built twice
    builders = {next(iter(watch.builds(i).values()))["builder"]
                for i in ("debian-built", "ubuntu-built")}
    assert builders == {"nb1", "nb2"}


def test_the_daemon_stops_on_sigterm_and_leaves_its_component(
        zk_tls: dict, tmp_path: Path, watch: ImageWatch, zk_client: Any, ctl: Any) -> None:
    config = write_config(tmp_path / "nb.yaml", zk_tls, tmp_path)
    with builder_process(config, tmp_path / "builder.log") as proc:
        watch.wait(lambda: ready_uploads(watch), what="a ready upload")
        assert [json.loads(zk_client.get(f"/nodepool/components/builder/{c}")[0])["hostname"]
                for c in zk_client.get_children("/nodepool/components/builder")]
        stop_by(proc, signal.SIGTERM)
        assert zk_client.get_children("/nodepool/components/builder") == []
    assert "Builder stopped" in (tmp_path / "builder.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_builder_killed_or_stopped_mid_upload_leaves_nothing_after_cleanup(
        start_builder: Any, zk_tls: dict, tmp_path: Path, watch: ImageWatch, ctl: Any,
        sig: int) -> None:
    ctl.inject("latency", seconds=60, count=1, method="PUT", path=r"/file$")
    config = write_config(tmp_path / "killed.yaml", zk_tls, tmp_path, "killed")
    config.write_text(config.read_text().replace("images-dir:", "zookeeper-timeout: 2\n"
                                                 "images-dir:", 1))
    def uploading() -> bool:
        states = [u["state"] for u in watch.uploads("debian-built", "sim-cloud").values()]
        return states == ["uploading"] and any(
            "nodepool_upload_id" in i["properties"] for i in cloud_images(ctl).values())
    with builder_process(config, tmp_path / "killed.log") as proc:
        watch.wait(uploading, what="an upload in progress")
        stop_by(proc, sig)
    if sig == signal.SIGTERM:
        assert "Leaving the uploads in progress" in (tmp_path / "killed.log").read_text()
    # Another builder's cleanup removes the record once the dead one's lock has gone with
    # its session, and the cloud image as a leak (seen on two passes).
    start_builder("nb2", tuning=dataclasses.replace(FAST, cleanup_interval=0.2))
    watch.wait(lambda: not watch.uploads("debian-built", "sim-cloud")
               and not [i for i in cloud_images(ctl).values()
                        if "nodepool_upload_id" in i["properties"]],
               what="the upload record and its cloud image gone")
    assert ready(watch)   # the build itself stays (its files are on the dead builder's disk)


def test_a_config_change_is_picked_up_and_the_new_image_built(
        start_builder: Any, zk_tls: dict, tmp_path: Path, watch: ImageWatch) -> None:
    builder = start_builder(tuning=dataclasses.replace(FAST, config_check_interval=0.1))
    watch.wait(lambda: ready_uploads(watch), what="the first image uploaded")
    write_config(tmp_path / "nb.yaml", zk_tls, tmp_path, extra_images=SECOND_IMAGE,
                 extra_provider_images=SECOND_PROVIDER_IMAGE)
    watch.wait(lambda: ready_uploads(watch, "ubuntu-built"), what="the added image uploaded")
    assert builder.reloads == 1


def test_post_upload_hook_runs_and_delete_after_upload_keeps_only_keep_formats(
        start_builder: Any, zk_tls: dict, tmp_path: Path, watch: ImageWatch) -> None:
    hook = tmp_path / "hook"
    hook.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/hook-args\n")
    hook.chmod(0o755)

    def edit(text: str) -> str:
        text = text.replace("    image-upload-timeout: 20\n",
                            f"    image-upload-timeout: 20\n    post-upload-hook: {hook}\n")
        return text.replace("  - name: debian-built\n    parent: base\n",
                            "  - name: debian-built\n    parent: base\n"
                            "    delete-after-upload: true\n    keep-formats: [raw]\n")
    start_builder(edit=edit)
    (build_id, _), upload = next(iter(watch.wait(lambda: ready_uploads(watch)).items()))
    assert watch.builds("debian-built")[build_id]["formats"] == "qcow2,raw"
    base = tmp_path / "nb-images" / f"debian-built-{build_id}"
    assert (tmp_path / "hook-args").read_text().split() == [
        "sim-cloud", upload["external_id"], f"{base}.qcow2"]
    watch.wait(lambda: not Path(f"{base}.qcow2").exists(), what="the uploaded format pruned")
    assert Path(f"{base}.raw").is_file() and Path(f"{base}.raw.md5").is_file()


def test_the_example_config_is_valid_for_the_builder() -> None:
    from nodepool.builder.daemon import check_builder_config
    from nodepool.builder.plan import wanted_formats
    from nodepool.config import parse_config
    path = Path(__file__).resolve().parent.parent / "etc" / "nodepool-builder.yaml"
    config = parse_config(path.read_text(), str(path))
    check_builder_config(config)
    assert wanted_formats(config, lambda provider: "qcow2") == {
        "ubuntu-noble": ["qcow2"], "debian-bookworm": ["qcow2", "raw"]}


def test_a_config_without_images_dir_is_refused_naming_the_key(
        zk_tls: dict, tmp_path: Path, capsys: Any) -> None:
    from nodepool.builder.main import main
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, ZK_HEADER))
    assert main(["-c", str(path)]) == 1
    assert f"{path}: images-dir: required by nodepool-builder" in capsys.readouterr().err


def test_builds_and_uploads_are_sent_to_statsd_under_nodepools_names(
        start_builder: Any, watch: ImageWatch, monkeypatch: Any) -> None:
    from statsd_listener import StatsdListener
    listener = StatsdListener()
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", str(listener.port))
    try:
        start_builder()
        watch.wait(lambda: ready_uploads(watch), what="a ready upload")
        key = "nodepool.dib_image_build.debian-built"
        listener.wait(f"{key}.status.duration", "ms")
        assert [s.value for s in listener.wait(f"{key}.status.rc", "g")] == ["0"]
        assert int(listener.wait(f"{key}.qcow2.size", "g")[0].value) > 0
        listener.wait("nodepool.image_update.debian-built.sim-cloud", "c")
        listener.wait("nodepool.image_update.debian-built.sim-cloud", "ms")
        listener.wait("nodepool.image_build_requests", "g")
        listener.wait("nodepool.builder.nb.image.debian-built.build.state", "g")
    finally:
        listener.close()


def test_two_build_workers_of_one_builder_build_two_images_at_once(
        start_builder: Any, watch: ImageWatch, tmp_path: Path) -> None:
    hold = tmp_path / "go"
    start_builder("nb", tuning=dataclasses.replace(FAST, builders=2),
                  env=f"      FAKE_DIB_WAIT_FILE: {hold}\n", extra_images=SECOND_IMAGE,
                  extra_provider_images=SECOND_PROVIDER_IMAGE)
    images = ("debian-built", "ubuntu-built")
    watch.wait(lambda: all(any(d["state"] == "building" for d in watch.builds(i).values())
                           for i in images), what="both images building at once")
    hold.touch()
    for image in images:
        watch.wait(lambda image=image: ready_uploads(watch, image), what=f"{image} uploaded")
        assert len(watch.builds(image)) == 1


def test_worker_counts_below_one_are_refused(tmp_path: Path, capsys: Any) -> None:
    from nodepool.builder.main import main
    assert main(["-c", str(tmp_path / "none.yaml"), "--upload-workers", "0"]) == 2
    assert "--upload-workers must be at least 1" in capsys.readouterr().err


def test_zookeeper_away_at_start_is_retried_until_a_stop(zk_tls: dict, tmp_path: Path) -> None:
    from zookeeper import free_port
    config = write_config(tmp_path / "nb.yaml", zk_tls, tmp_path)
    text = config.read_text()
    port = zk_tls["hosts"].split(",")[0].rsplit(":", 1)[1]
    text = text.replace("images-dir:", "zookeeper-timeout: 1\nimages-dir:", 1)
    config.write_text(text.replace(f"port: {port}", f"port: {free_port()}", 1))
    log = tmp_path / "builder.log"
    with builder_process(config, log) as proc:
        wait_for(lambda: "retrying in 1s" in log.read_text(), timeout=30,
                 what="a retry logged")
        stop_by(proc, signal.SIGTERM)
    assert "Stopped while waiting for ZooKeeper" in log.read_text()


def test_an_upload_that_hangs_past_image_upload_timeout_is_retried(
        start_builder: Any, watch: ImageWatch, ctl: Any, caplog: Any) -> None:
    ctl.inject("latency", seconds=4, count=1, method="PUT", path=r"/file$")
    start_builder(edit=lambda text: text.replace("image-upload-timeout: 20",
                                                 "image-upload-timeout: 1"))
    (build_id, upload_id), upload = next(iter(watch.wait(lambda: ready_uploads(watch)).items()))
    # One record (the timed-out try was retried inside it); 1, not 0: the upload lock's
    # directory took the first sequence number, as with Nodepool's builder.
    assert upload_id == "0000000001"
    assert list(watch.uploads("debian-built", "sim-cloud")) == [(build_id, upload_id)]
    ours = [i for i in cloud_images(ctl).values() if "nodepool_upload_id" in i["properties"]]
    assert [i["id"] for i in ours] == [upload["external_id"]]   # the first try's image went
    assert any("Upload try 1 failed" in r.getMessage() and "timed out" in r.getMessage()
               for r in caplog.records)


SECOND_PROVIDER = """  - name: sim-cloud-2
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    diskimages:
      - name: debian-built
"""


def test_uploads_to_several_providers_run_in_parallel(
        start_builder: Any, watch: ImageWatch, ctl: Any) -> None:
    ctl.inject("latency", seconds=2, count=2, method="PUT", path=r"/file$")
    start_builder(edit=lambda text: text.replace("providers:\n", "providers:\n" + SECOND_PROVIDER,
                                                 1))
    both = ("sim-cloud", "sim-cloud-2")
    watch.wait(lambda: all(u["state"] == "uploading" for p in both
                           for u in watch.uploads("debian-built", p).values())
               and all(watch.uploads("debian-built", p) for p in both),
               what="both uploads in progress at once")
    for provider in both:
        watch.wait(lambda provider=provider: ready_uploads(watch, provider=provider),
                   what=f"uploaded to {provider}")
    tags = sorted(i["properties"]["nodepool_provider_name"] for i in cloud_images(ctl).values()
                  if "nodepool_provider_name" in i["properties"])
    assert tags == ["sim-cloud", "sim-cloud-2"]


def test_an_image_build_request_skips_the_backoff_of_a_failed_build(
        start_builder: Any, watch: ImageWatch, zk_client: Any) -> None:
    builder = start_builder(tuning=dataclasses.replace(FAST, build_backoff=600.0,
                                                       build_backoff_max=600.0),
                            env="      FAKE_DIB_FAIL: broken element\n")
    failed: dict[str, dict] = {}

    def failures(n: int) -> bool:
        failed.update((b, d) for b, d in watch.builds("debian-built").items()
                      if d["state"] == "failed")
        return len(failed) >= n
    # The failed record is written before the backoff is set in memory: wait for both.
    watch.wait(lambda: failures(1) and "debian-built" in builder.builds.retry_at,
               what="a failed build and its backoff")
    assert builder.builds.retry_at["debian-built"] > time.time() + 500   # backing off
    request_build(zk_client)   # the operator fixed something and asks again
    watch.wait(lambda: failures(2), what="the requested build tried at once")
    for record in failed.values():   # as Nodepool's: no formats, the image's facts
        assert "formats" not in record and record["username"] == "debian"
