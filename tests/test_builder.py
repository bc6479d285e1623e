"""nodepool-builder end to end: the stand-in disk-image-create, uploads to the simulator over
HTTP, a launcher booting the upload, rotation, failures, and two builders sharing the work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagewatch import ImageWatch
from requestor import Requestor
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
def watch(zk_client: Any) -> Iterator[ImageWatch]:
    w = ImageWatch(zk_client)
    yield w
    w.close()


@pytest.fixture
def start_builder(zk_tls: dict, tmp_path: Path, ctl: Any) -> Iterator[Any]:
    started: list[Builder] = []

    def start(name: str = "nb", tuning: Tuning = FAST, **kw: Any) -> Builder:
        path = write_config(tmp_path / f"{name}.yaml", zk_tls, tmp_path, name, **kw)
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
