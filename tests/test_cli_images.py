"""The CLI's image commands on a real ZooKeeper: Nodepool's columns, --json, the records they write."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool import cli
from nodepool.zk import image_flags, image_locks, image_store, paths
from nodepool.zk.image_records import BuildState, UploadState, new_build, new_upload

RECORDED = json.loads((Path(__file__).parent / "data" / "nodepool-images" / "records.json")
                      .read_text())["records"]
IMAGE, BUILD = "ubuntu-noble", "8c5a0f1e2d3b4c5d9e8f7a6b5c4d3e2f"

CONFIG = ZK_HEADER + """
labels:
  - name: noble
diskimages:
  - name: base
    abstract: true
    elements: [vm]
  - name: ubuntu-noble
    parent: base
  - name: frozen
    pause: true
providers:
  - name: rax-dfw
    cloud: local
    diskimages:
      - name: ubuntu-noble
    pools:
      - name: main
        max-servers: 5
        labels:
          - name: noble
            diskimage: ubuntu-noble
            flavor-name: m1.small
"""


@pytest.fixture
def cfg(tmp_path, zk_tls):
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, CONFIG))
    return str(path)


def run_cli(capsys, cfg, *argv):
    code = cli.main(["-c", cfg, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def nodepool_tree(kazoo) -> None:
    """Records as Nodepool wrote them: a ready build, its ready upload to rax-dfw and a
    failed one to ovh-bhs1, and a failed build."""
    for how in ("DIB succeeded", "DIB failed", "_uploadImage: state ready", "upload failed"):
        r = next(r for r in RECORDED if how in r["how"])
        kazoo.create(r["path"], r["data"].encode(), makepath=True)


def header(out: str) -> list[str]:
    return [h.strip() for h in out.splitlines()[1].strip("|").split("|")]


def test_image_list_and_dib_image_list_show_nodepool_written_records(capsys, cfg, zk_client):
    nodepool_tree(zk_client)
    code, out, _ = run_cli(capsys, cfg, "image-list")
    assert code == 0 and header(out) == ["Build ID", "Upload ID", "Provider", "Image",
                                         "Provider Image Name", "Provider Image ID", "State",
                                         "Age"]
    assert "ubuntu-noble-1733140000" in out and "9d2e4c1a-5b7f-4e3d-8c6a-1f0e9d8c7b6a" in out
    code, out, _ = run_cli(capsys, cfg, "image-list", "--json")
    rows = json.loads(out)
    assert {(r["provider"], r["upload_id"], r["state"]) for r in rows} == {
        ("rax-dfw", "0000000001", "ready"), ("ovh-bhs1", "0000000003", "failed")}
    assert all(r["id"] == BUILD and isinstance(r["age"], int) for r in rows)

    code, out, _ = run_cli(capsys, cfg, "dib-image-list")
    assert header(out) == ["ID", "Image", "Builder", "Formats", "State", "Age"]
    assert f"{IMAGE}-{BUILD}" in out and "qcow2,raw,vhd" in out
    image_flags.set_paused(zk_client, IMAGE, True)
    code, out, _ = run_cli(capsys, cfg, "dib-image-list", "--json")
    ready = next(r for r in json.loads(out) if r["id"] == f"{IMAGE}-{BUILD}")
    assert ready["state"] == "paused" and ready["formats"] == ["qcow2", "raw", "vhd"]
    assert ready["builder"] == "nb01.opendev.org"


def test_image_build_writes_the_request_flag_and_image_status_shows_it(capsys, cfg, zk_client):
    code, out, _ = run_cli(capsys, cfg, "image-build", IMAGE)
    assert code == 0 and "requested" in out
    assert zk_client.exists(f"/nodepool/images/{IMAGE}/request-build")
    code, out, _ = run_cli(capsys, cfg, "image-status")
    assert header(out) == ["Image", "Paused", "Build Request", "Build Request Age"]
    code, out, _ = run_cli(capsys, cfg, "image-status", "--json")
    (row,) = json.loads(out)
    assert (row["image"], row["paused"], row["build_request"]) == (IMAGE, False, "pending")
    with image_locks.holding(image_locks.lock_build(zk_client, IMAGE)):
        image_store.create_build(zk_client, new_build(IMAGE, ""))
        code, out, _ = run_cli(capsys, cfg, "image-status", "--json")
        assert json.loads(out)[0]["build_request"] == "building"


@pytest.mark.parametrize("name, message", [
    ("nope", "image 'nope' is not a diskimage of the configuration"),
    ("base", "image 'base' is not a diskimage"),            # abstract: only a parent
    ("frozen", "image frozen is paused in the configuration"),
])
def test_image_build_of_what_cannot_be_built_fails_clearly(capsys, cfg, zk_client, name,
                                                           message):
    code, _, err = run_cli(capsys, cfg, "image-build", name)
    assert code == 1 and message in err and "Traceback" not in err
    assert zk_client.exists(f"/nodepool/images/{name}/request-build") is None


def test_image_delete_marks_the_upload_deleting(capsys, cfg, zk_client):
    nodepool_tree(zk_client)
    args = ["image-delete", "--provider", "rax-dfw", "--image", IMAGE, "--build-id", BUILD,
            "--upload-id", "0000000001"]
    code, out, _ = run_cli(capsys, cfg, *args)
    assert code == 0 and "marked for deletion" in out
    upload = image_store.get_upload(zk_client, IMAGE, BUILD, "rax-dfw", "0000000001")
    assert upload.state is UploadState.DELETING
    assert upload.external_id == "9d2e4c1a-5b7f-4e3d-8c6a-1f0e9d8c7b6a"   # the rest kept
    assert run_cli(capsys, cfg, *args)[0] == 0   # already deleting: done
    code, _, err = run_cli(capsys, cfg, *args[:-1], "0000000042")
    assert code == 1 and "upload 0000000042 of build" in err and "not found" in err


def test_image_delete_refuses_an_upload_in_progress(capsys, cfg, zk_client):
    build = image_store.create_build(zk_client, new_build("deb", ""))
    upload = image_store.create_upload(zk_client, new_upload("deb", build.id, "rax-dfw"))
    code, _, err = run_cli(capsys, cfg, "image-delete", "--provider", "rax-dfw", "--image",
                           "deb", "--build-id", build.id, "--upload-id", upload.id)
    assert code == 1 and "it is being uploaded" in err
    assert image_store.get_upload(zk_client, "deb", build.id, "rax-dfw", upload.id).state \
        is UploadState.UPLOADING


def test_dib_image_delete_marks_the_build_deleting_but_not_one_being_built(capsys, cfg,
                                                                           zk_client):
    nodepool_tree(zk_client)
    code, out, _ = run_cli(capsys, cfg, "dib-image-delete", f"{IMAGE}-{BUILD}")
    assert code == 0 and "marked for deletion" in out
    assert image_store.get_build(zk_client, IMAGE, BUILD).state is BuildState.DELETING
    building = image_store.create_build(zk_client, new_build("deb", ""))
    code, _, err = run_cli(capsys, cfg, "dib-image-delete", building.name)
    assert code == 1 and "it is being built" in err
    code, _, err = run_cli(capsys, cfg, "dib-image-delete", "deb-0000000099")
    assert code == 1 and "build deb-0000000099 not found" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["-c", cfg, "dib-image-delete", "nodash"])
    assert e.value.code == 2 and "is not a build name" in capsys.readouterr().err


def test_image_pause_and_unpause_set_nodepools_flag(capsys, cfg, zk_client):
    assert run_cli(capsys, cfg, "image-pause", IMAGE)[0] == 0
    assert zk_client.exists(paths.image_pause(IMAGE))
    code, out, _ = run_cli(capsys, cfg, "image-status", "--json")
    assert json.loads(out) == [{"image": IMAGE, "paused": True, "build_request": None,
                                "build_request_age": None}]
    assert run_cli(capsys, cfg, "image-unpause", IMAGE)[0] == 0
    assert zk_client.exists(paths.image_pause(IMAGE)) is None


def test_export_and_import_image_data_in_nodepools_format(capsys, cfg, zk_client, tmp_path):
    nodepool_tree(zk_client)
    image_flags.set_paused(zk_client, IMAGE, True)
    out_file = tmp_path / "images.json"
    out_file.write_text("x" * 10000)   # an old longer file is replaced, not overwritten in part
    os.chmod(out_file, 0o600)
    code, out, _ = run_cli(capsys, cfg, "export-image-data", str(out_file))
    assert code == 0 and "Exported 5 image record(s)" in out
    exported = json.loads(out_file.read_text())
    assert exported[f"/nodepool/images/{IMAGE}/pause"] == ""
    for r in RECORDED:
        if r["path"] in exported:
            assert exported[r["path"]] in {x["data"] for x in RECORDED}
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    zk_client.delete(paths.IMAGES, recursive=True)
    code, out, _ = run_cli(capsys, cfg, "import-image-data", str(out_file))
    assert code == 0 and "Imported 5 image record(s)" in out
    assert image_store.get_build(zk_client, IMAGE, BUILD).state is BuildState.READY
    assert image_flags.is_paused(zk_client, IMAGE)


def test_import_of_a_bad_file_names_it(capsys, cfg, zk_client, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code, _, err = run_cli(capsys, cfg, "import-image-data", str(bad))
    assert code == 1 and f"{bad}: expected a JSON object" in err
    code, _, err = run_cli(capsys, cfg, "import-image-data", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in err and "No such file" in err


def test_export_new_file_is_private(capsys, cfg, zk_client, tmp_path):
    out_file = tmp_path / "new.json"
    assert run_cli(capsys, cfg, "export-image-data", str(out_file))[0] == 0
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600 and json.loads(out_file.read_text()) == {}


def test_info_shows_the_providers_image_data(capsys, cfg, zk_client):
    nodepool_tree(zk_client)
    code, out, _ = run_cli(capsys, cfg, "info", "rax-dfw")
    assert code == 0 and "Image data:" in out
    assert f"| {IMAGE} | {BUILD} | 0000000001 |" in out.replace("  ", " ")
    code, out, _ = run_cli(capsys, cfg, "info", "ovh-bhs1", "--json")   # images only
    assert code == 0 and json.loads(out)["images"] == [
        {"image": IMAGE, "build_id": BUILD, "upload_ids": ["0000000003"]}]


def test_image_commands_run_as_a_command(cfg, zk_client):
    nodepool_tree(zk_client)
    done = subprocess.run([sys.executable, "-m", "nodepool.cli", "-c", cfg, "image-list",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2


def test_every_command_is_documented_in_doc_cli_md():
    commands = re.findall(r"^    ([a-z][a-z-]+)  ", cli.build_parser().format_help(), re.M)
    assert "alien-image-list" in commands and "list" in commands
    doc = (Path(__file__).resolve().parent.parent / "doc" / "cli.md").read_text()
    assert [name for name in commands if f"`{name}" not in doc] == []
