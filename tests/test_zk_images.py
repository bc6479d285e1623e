"""Image records in a real ZooKeeper: Nodepool's layout, ids, locks, flags, export/import."""

import json
import re
from pathlib import Path

import pytest
from kazoo.recipe.lock import Lock

from nodepool.errors import LockFailed, NotFound, VersionConflict
from nodepool.zk import image_flags, image_locks, image_store, image_transfer, images, locks, paths
from nodepool.zk.image_records import BuildState, UploadState, new_build, new_upload

RECORDED = json.loads((Path(__file__).parent / "data" / "nodepool-images" / "records.json")
                      .read_text())["records"]


def recorded(how: str) -> dict:
    return next(r for r in RECORDED if how in r["how"])


def write_recorded(kazoo, *hows: str) -> None:
    """Put records Nodepool wrote (tests/data/nodepool-images) at their paths."""
    for how in hows:
        r = recorded(how)
        kazoo.create(r["path"], r["data"].encode(), makepath=True)


def ready_build(kazoo, image="deb", **kw):
    build = image_store.create_build(kazoo, new_build(image, "", formats=["qcow2"], **kw))
    return image_store.update_build(kazoo, build.with_state(BuildState.READY))


def test_build_ids_are_uuid_hex_and_upload_ids_ten_digit_sequences(zk_client):
    build = image_store.create_build(zk_client, new_build("deb", "", formats=["raw"],
                                                          builder="nb1", builder_id="u-1"))
    assert re.fullmatch(r"[0-9a-f]{32}", build.id)
    raw, _ = zk_client.get(f"/nodepool/images/deb/builds/{build.id}")
    assert json.loads(raw)["state"] == "building" and json.loads(raw)["formats"] == "raw"
    first = image_store.create_upload(zk_client, new_upload("deb", build.id, "cloud1"))
    second = image_store.create_upload(zk_client, new_upload("deb", build.id, "cloud1"))
    assert (first.id, second.id) == ("0000000000", "0000000001")
    assert zk_client.exists(f"/nodepool/images/deb/builds/{build.id}/providers/cloud1/images/"
                            f"{second.id}")
    assert image_store.get_upload(zk_client, "deb", build.id, "cloud1", second.id) == second


def test_lock_znodes_are_never_listed_as_builds_or_uploads(zk_client):
    build = ready_build(zk_client)
    upload = image_store.create_upload(zk_client, new_upload("deb", build.id, "cloud1"))
    with image_locks.holding(image_locks.lock_build(zk_client, "deb")), \
            image_locks.holding(image_locks.lock_upload(zk_client, "deb", build.id, "cloud1")), \
            image_locks.holding(image_locks.lock_upload_number(zk_client, upload)):
        assert zk_client.exists(paths.image_build_lock("deb"))
        assert [b.id for b in image_store.list_builds(zk_client, "deb")] == [build.id]
        assert image_store.upload_ids(zk_client, "deb", build.id, "cloud1") == [upload.id]
        assert [u.id for u in images.all_uploads(zk_client)] == [upload.id]


def test_our_build_lock_and_nodepools_exclude_each_other(zk_client, zk_tls):
    from zkhelpers import make_client
    other = make_client(zk_tls)   # a second session: Nodepool's builder
    try:
        theirs = Lock(other.kazoo, "/nodepool/images/deb/builds/lock")   # as Nodepool takes it
        assert theirs.acquire(blocking=False)
        with pytest.raises(LockFailed, match="image deb build lock"):
            image_locks.lock_build(zk_client, "deb")
        assert image_locks.is_locked(zk_client, paths.image_build_lock("deb"))
        theirs.release()
        mine = image_locks.lock_build(zk_client, "deb")
        assert not Lock(other.kazoo, "/nodepool/images/deb/builds/lock").acquire(blocking=False)
        locks.release(mine)
        assert not image_locks.is_locked(zk_client, paths.image_build_lock("deb"))
    finally:
        other.disconnect()


def test_upload_lock_is_at_nodepools_path_and_excludes(zk_client, zk_tls):
    from zkhelpers import make_client
    build = ready_build(zk_client)
    mine = image_locks.lock_upload(zk_client, "deb", build.id, "cloud1")
    other = make_client(zk_tls)
    try:
        theirs = Lock(other.kazoo, f"/nodepool/images/deb/builds/{build.id}/providers/cloud1/"
                                   f"images/lock")
        assert not theirs.acquire(blocking=False)
        locks.release(mine)
        assert theirs.acquire(blocking=False)
        theirs.release()
    finally:
        other.disconnect()


def test_build_id_lock_of_a_deleted_build_does_not_recreate_it(zk_client):
    build = ready_build(zk_client)
    assert image_store.delete_build(zk_client, "deb", build.id)
    with pytest.raises(NotFound):
        image_locks.lock_build_id(zk_client, "deb", build.id)
    assert zk_client.exists(build.path) is None


def test_build_is_not_deleted_while_an_upload_record_remains(zk_client):
    build = ready_build(zk_client)
    upload = image_store.create_upload(zk_client, new_upload("deb", build.id, "cloud1"))
    assert not image_store.delete_build(zk_client, "deb", build.id)
    assert image_store.get_build(zk_client, "deb", build.id) is not None
    image_store.delete_upload(zk_client, "deb", build.id, "cloud1", upload.id)
    image_store.delete_upload(zk_client, "deb", build.id, "cloud1", upload.id)   # gone: done
    assert image_store.delete_build(zk_client, "deb", build.id)
    assert image_store.get_build(zk_client, "deb", build.id) is None


def test_an_upload_of_a_missing_build_is_refused_not_recreated(zk_client):
    with pytest.raises(NotFound, match="build deb-nope does not exist"):
        image_store.create_upload(zk_client, new_upload("deb", "nope", "cloud1"))
    assert zk_client.exists("/nodepool/images/deb/builds/nope") is None


def test_writes_of_a_record_read_earlier_are_version_checked(zk_client):
    build = ready_build(zk_client)
    stale = image_store.get_build(zk_client, "deb", build.id)
    image_store.update_build(zk_client, stale.with_state(BuildState.DELETING))
    with pytest.raises(VersionConflict):
        image_store.update_build(zk_client, stale.with_state(BuildState.DELETING))


def test_launcher_boots_the_newest_ready_upload_of_nodepool_written_records(zk_client):
    write_recorded(zk_client, "DIB succeeded", "upload failed", "_uploadImage: state ready")
    upload = images.latest_upload(zk_client, "ubuntu-noble", "rax-dfw")
    assert upload.path == recorded("_uploadImage: state ready")["path"]
    assert (upload.external_id, upload.username, upload.python_path) == (
        "9d2e4c1a-5b7f-4e3d-8c6a-1f0e9d8c7b6a", "zuul", "auto")
    assert images.latest_upload(zk_client, "ubuntu-noble", "ovh-bhs1") is None   # failed only


def test_uploads_of_a_build_being_deleted_are_not_booted(zk_client):
    build = ready_build(zk_client)
    up = image_store.create_upload(zk_client, new_upload("deb", build.id, "cloud1"))
    image_store.update_upload(zk_client, up.with_state(UploadState.READY, external_id="img-1"))
    assert images.latest_upload(zk_client, "deb", "cloud1").external_id == "img-1"
    image_store.update_build(zk_client, image_store.get_build(zk_client, "deb", build.id)
                             .with_state(BuildState.DELETING))
    assert images.latest_upload(zk_client, "deb", "cloud1") is None


def test_pause_flag_and_build_request_pending_then_building(zk_client):
    assert not image_flags.is_paused(zk_client, "deb")
    image_flags.set_paused(zk_client, "deb", True)
    image_flags.set_paused(zk_client, "deb", True)
    assert zk_client.exists("/nodepool/images/deb/pause")
    image_flags.set_paused(zk_client, "deb", False)
    assert not image_flags.is_paused(zk_client, "deb")

    assert image_flags.build_request(zk_client, "deb") is None
    image_flags.request_build(zk_client, "deb")
    assert zk_client.exists("/nodepool/images/deb/request-build")
    assert image_flags.build_request(zk_client, "deb").pending
    with image_locks.holding(image_locks.lock_build(zk_client, "deb")):
        assert image_flags.build_request(zk_client, "deb").pending   # locked, no build yet
        image_store.create_build(zk_client, new_build("deb", ""))
        assert not image_flags.build_request(zk_client, "deb").pending
    image_flags.remove_build_request(zk_client, "deb")
    assert not image_flags.has_build_request(zk_client, "deb")


def test_export_then_import_restores_records_and_advances_upload_sequence(zk_client):
    write_recorded(zk_client, "DIB succeeded", "DIB failed", "_uploadImage: state ready",
                   "upload failed")
    image_flags.set_paused(zk_client, "ubuntu-noble", True)
    exported = image_transfer.export_data(zk_client)
    assert exported["/nodepool/images/ubuntu-noble/pause"] == ""
    assert exported[recorded("upload failed")["path"]] == recorded("upload failed")["data"]
    assert len(exported) == 5
    zk_client.delete(paths.IMAGES, recursive=True)

    assert image_transfer.import_data(zk_client, exported) == 5
    assert image_transfer.export_data(zk_client) == exported
    build_id = "8c5a0f1e2d3b4c5d9e8f7a6b5c4d3e2f"
    # The failed upload was 0000000003: the next one there comes after it.
    nxt = image_store.create_upload(zk_client, new_upload("ubuntu-noble", build_id, "ovh-bhs1"))
    assert int(nxt.id) > 3
    assert image_store.upload_ids(zk_client, "ubuntu-noble", build_id, "ovh-bhs1") == [
        "0000000003", nxt.id]


def test_import_names_a_bad_path_in_the_file():
    with pytest.raises(Exception, match="x.json: '/nodepool/nodes/1' is not an image record"):
        image_transfer.check_data({"/nodepool/nodes/1": "{}"}, "x.json")
