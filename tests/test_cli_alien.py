"""`nodepool alien-image-list` against the OpenStack simulator over HTTP and a real ZooKeeper."""

import json

import pytest
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool import cli
from nodepool.zk import image_store
from nodepool.zk.image_records import BuildState, UploadState, new_build, new_upload

CONFIG = ZK_HEADER + """
labels:
  - name: built
diskimages:
  - name: ubuntu
providers:
  - name: sim-cloud
    cloud: simcloud
    region-name: RegionOne
    rate: 0
    diskimages:
      - name: ubuntu
    pools:
      - name: main
        max-servers: 2
        labels:
          - name: built
            diskimage: ubuntu
            flavor-name: m1.tiny
  - name: static-one
    driver: static
    pools:
      - name: main
        nodes:
          - name: host1.example.org
            labels: [built]
"""


@pytest.fixture
def cfg(tmp_path, zk_tls, sim, ctl):
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, CONFIG))
    return str(path)


def cloud_image(conn, name: str, **meta) -> str:
    return conn.image.create_image(name=name, disk_format="qcow2", container_format="bare",
                                   **meta).id


def recorded_upload(kazoo, external_id: str, state: UploadState) -> None:
    build = image_store.create_build(kazoo, new_build("ubuntu", "", formats=["qcow2"]))
    image_store.update_build(kazoo, build.with_state(BuildState.READY))
    upload = image_store.create_upload(kazoo, new_upload("ubuntu", build.id, "sim-cloud"))
    image_store.update_upload(kazoo, upload.with_state(state, external_id=external_id))


def test_lists_builder_tagged_cloud_images_without_a_ready_upload(capsys, cfg, conn, zk_client):
    known = cloud_image(conn, "ubuntu-1", nodepool_build_id="b1", nodepool_upload_id="1")
    leaked = cloud_image(conn, "ubuntu-2", nodepool_build_id="b2", nodepool_upload_id="1")
    going = cloud_image(conn, "ubuntu-3", nodepool_build_id="b3", nodepool_upload_id="1")
    cloud_image(conn, "someone-elses", purpose="not ours")
    recorded_upload(zk_client, known, UploadState.READY)
    recorded_upload(zk_client, going, UploadState.DELETING)   # Nodepool counts ready ones only

    assert cli.main(["-c", cfg, "alien-image-list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["provider"], r["name"], r["id"]) for r in rows) == sorted([
        ("sim-cloud", "ubuntu-2", leaked), ("sim-cloud", "ubuntu-3", going)])

    assert cli.main(["-c", cfg, "alien-image-list", "sim-cloud"]) == 0
    out = capsys.readouterr().out
    assert [h.strip() for h in out.splitlines()[1].strip("|").split("|")] == [
        "Provider", "Name", "Image ID"]
    assert leaked in out and known not in out and "someone-elses" not in out


def test_an_unknown_provider_and_an_unreachable_cloud_are_said(capsys, cfg, zk_client, ctl):
    assert cli.main(["-c", cfg, "alien-image-list", "nope"]) == 1
    assert "provider 'nope' is not in the configuration" in capsys.readouterr().err
    ctl.inject("http_error", status=500, count=5, method="GET", path=r"/image/v2/images")
    assert cli.main(["-c", cfg, "alien-image-list"]) == 1
    err = capsys.readouterr().err
    assert "cannot list the images of provider sim-cloud" in err and "Traceback" not in err
