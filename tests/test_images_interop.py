"""Our launcher boots from image records exactly as Nodepool's builder writes them
(tests/data/nodepool-images), on the OpenStack simulator over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugins.ossim import LAUNCHER_CONFIG
from requestor import Requestor, wait_for
from zkhelpers import nodepool_yaml

from nodepool.launcher.daemon import Launcher
from nodepool.zk import image_store
from nodepool.zk.image_records import UploadState

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

RECORDED = json.loads((Path(__file__).parent / "data" / "nodepool-images" / "records.json")
                      .read_text())["records"]
IMAGE, BUILD, PROVIDER = "ubuntu-noble", "8c5a0f1e2d3b4c5d9e8f7a6b5c4d3e2f", "rax-dfw"

CONFIG = LAUNCHER_CONFIG.replace("  - name: small\n", "  - name: small\n  - name: noble\n"
                                 "diskimages:\n  - name: ubuntu-noble\n", 1) \
    .replace("  - name: sim-cloud\n", f"  - name: {PROVIDER}\n") \
    .replace("    pools:", "    diskimages:\n      - name: ubuntu-noble\n    pools:") \
    .replace("            flavor-name: m1.tiny\n", "            flavor-name: m1.tiny\n"
             "          - name: noble\n            diskimage: ubuntu-noble\n"
             "            flavor-name: m1.tiny\n")


def recorded(how: str) -> dict:
    return next(r for r in RECORDED if how in r["how"])


def glance_image(conn: Any, image_id: str, name: str) -> None:
    """An active image with the id Nodepool's record names (the builder uploaded it)."""
    conn.image.create_image(id=image_id, name=name, disk_format="vhd", container_format="bare")
    response = conn.image.put(f"/images/{image_id}/file", data=b"\0" * 512,
                              headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 204, response.text


@pytest.fixture
def launcher(zk_tls: dict, tmp_path: Any, ctl: Any) -> Iterator[Launcher]:
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, CONFIG))
    daemon = Launcher(str(path), hostname="nl-interop")
    daemon.start()
    yield daemon
    daemon.stop()


def test_a_node_boots_from_the_upload_nodepools_builder_recorded(launcher, zk_client, conn, ctl):
    upload = recorded("_uploadImage: state ready")
    external_id = json.loads(upload["data"])["external_id"]
    glance_image(conn, external_id, "ubuntu-noble-1733140000")
    for how in ("DIB succeeded", "DIB failed", "_uploadImage: state ready", "upload failed"):
        r = recorded(how)
        zk_client.create(r["path"], r["data"].encode(), makepath=True)
    wait_for(lambda: launcher.workers.get(PROVIDER), what="provider up")

    rq = Requestor(zk_client)
    req = rq.wait(rq.submit(["noble"]))
    assert req["state"] == "fulfilled", req
    node = rq.node(req["nodes"][0])
    assert node["image_id"] == upload["path"]     # the upload's znode path, as Nodepool's
    assert node["username"] == "zuul" and node["python_path"] == "auto"
    server = {s["id"]: s for s in ctl.servers()}[node["external_id"]]
    assert server["image"] == external_id
    # The records were only read: Nodepool's bytes are still there, untouched.
    raw, _ = zk_client.get(upload["path"])
    assert raw == upload["data"].encode()
    assert image_store.get_upload(zk_client, IMAGE, BUILD, PROVIDER, "0000000001").state \
        is UploadState.READY
