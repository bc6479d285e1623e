"""Image build and upload records: Nodepool's JSON, byte for byte, and the state tables."""

import json
from pathlib import Path

import pytest

from nodepool.errors import InvalidTransition, ProtocolError
from nodepool.zk import paths
from nodepool.zk.image_records import (
    BuildState,
    ImageBuild,
    ImageUpload,
    UploadState,
    new_build,
    new_upload,
)

RECORDED = json.loads((Path(__file__).parent / "data" / "nodepool-images" / "records.json")
                      .read_text())


def parse(path: str, raw: bytes):
    """The record at `path` (Nodepool's layout), by its place in the tree."""
    parts = path.split("/")
    if len(parts) == 6:     # /nodepool/images/<image>/builds/<build>
        return ImageBuild.from_bytes(parts[3], parts[5], raw)
    assert len(parts) == 10, path
    return ImageUpload.from_bytes(parts[3], parts[5], parts[7], parts[9], raw)


@pytest.mark.parametrize("record", RECORDED["records"], ids=lambda r: r["how"])
def test_nodepool_written_records_reserialise_identically(record):
    raw = record["data"].encode("utf8")
    parsed = parse(record["path"], raw)
    assert parsed.path == record["path"]
    assert parsed.to_bytes() == raw


def test_recorded_lock_and_flag_paths_are_ours():
    found = RECORDED["paths"]
    image, build, provider = "ubuntu-noble", "8c5a0f1e2d3b4c5d9e8f7a6b5c4d3e2f", "rax-dfw"
    assert found == {
        "build_lock": paths.image_build_lock(image),
        "build_id_lock": paths.image_build_id_lock(image, build),
        "upload_lock": paths.image_upload_lock(image, build, provider),
        "upload_number_lock": paths.image_upload_number_lock(image, build, provider,
                                                             "0000000001"),
        "pause": paths.image_pause(image),
        "request_build": paths.image_build_request(image),
    }


def test_recorded_ready_build_reads_as_nodepool_means_it():
    raw = next(r for r in RECORDED["records"] if "DIB succeeded" in r["how"])
    build = parse(raw["path"], raw["data"].encode())
    assert build.state is BuildState.READY and build.formats == ("qcow2", "raw", "vhd")
    assert (build.builder, build.username, build.python_path, build.shell_type) == (
        "nb01.opendev.org", "zuul", "auto", None)
    assert build.name == "ubuntu-noble-8c5a0f1e2d3b4c5d9e8f7a6b5c4d3e2f"


def test_build_keys_follow_nodepool_order_and_presence_rules():
    build = new_build("deb", "abc", formats=["raw", "qcow2"], now=5.0)
    # builder, builder_id only when known; formats sorted and only when any.
    assert list(build.to_dict()) == ["state", "state_time", "formats", "username",
                                     "python_path", "shell_type"]
    assert build.to_dict()["formats"] == "qcow2,raw"
    bare = ImageBuild("deb", "abc", BuildState.FAILED, 6.0)
    assert bare.to_bytes() == (b'{"state": "failed", "state_time": 6.0, "username": null, '
                               b'"python_path": null, "shell_type": null}')


def test_unknown_keys_of_others_are_kept_after_ours():
    raw = b'{"state": "ready", "state_time": 1, "external_id": "x", "zz_note": [1]}'
    upload = ImageUpload.from_bytes("deb", "abc", "p", "0000000001", raw)
    assert upload.extra == {"zz_note": [1]}
    assert list(upload.to_dict())[-1] == "zz_note"
    assert upload.with_state(UploadState.DELETING).to_dict()["zz_note"] == [1]


def test_missing_keys_read_as_null_not_nodepools_old_defaults():
    # Nodepool reads a missing username as "zuul" and python_path as /usr/bin/python2
    # (records older than those keys); the launcher then prefers the label's own.
    build = ImageBuild.from_bytes("deb", "abc", b'{"state": "ready", "state_time": 1}')
    assert build.username is None and build.python_path is None and build.formats == ()


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"),
    (b"[1]", "expected a JSON object"),
    (b'{"state": "cooking"}', "unknown state 'cooking'"),
    (b'{"state": "ready", "formats": ["raw"]}', "formats must be a comma-joined string"),
])
def test_unreadable_build_names_its_path(raw, message):
    with pytest.raises(ProtocolError, match=message) as e:
        ImageBuild.from_bytes("deb", "abc", raw)
    assert "/nodepool/images/deb/builds/abc" in str(e.value)


def test_state_changes_stamp_time_and_refuse_illegal_edges():
    upload = new_upload("deb", "abc", "p", now=1.0)
    ready = upload.with_state(UploadState.READY, now=2.0, external_id="img-1")
    assert (ready.state, ready.state_time, ready.external_id) == (UploadState.READY, 2.0, "img-1")
    with pytest.raises(InvalidTransition, match="ready -> uploading"):
        ready.with_state(UploadState.UPLOADING)
    build = new_build("deb", "abc", now=1.0).with_state(BuildState.FAILED)
    with pytest.raises(InvalidTransition, match="failed -> ready"):
        build.with_state(BuildState.READY)
    assert build.with_state(BuildState.DELETING).state is BuildState.DELETING
