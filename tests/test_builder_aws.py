"""nodepool-builder's AWS uploads against moto's server over HTTP: the file to S3, the import
task (answered by the test proxy: moto lacks it, plugins/awsimport.py), the AMI registered
and tagged, a launcher booting it, rotation and leak cleanup of AMIs, snapshots, objects,
the post-upload-hook (a failing one deletes what the upload made), and a builder killed or
stopped while EC2 imports (another builder's cleanup removes the record and what it made)."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from builderproc import builder_process, stop_by
from imagewatch import ImageWatch
from plugins.motoaws import REGION, FaultProxy, Rule
from requestor import Requestor
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool.builder.daemon import Builder
from nodepool.builder.plan import Tuning
from nodepool.config import ConfigError, parse_config
from nodepool.launcher.daemon import Launcher

FAKE_DIB = str(Path(__file__).resolve().parent / "fake-disk-image-create")
AWS_FAST = Tuning(cleanup_interval=30.0, upload_sweep_interval=30.0, config_check_interval=60.0,
                  build_backoff=0.2, build_backoff_max=1.0, upload_attempts=2,
                  upload_retry_delay=0.05, upload_backoff=0.2, uploaders=2, leak_passes=2,
                  import_poll_interval=0.05)
BUCKET = "np-images"
PROVIDER = "ec2-img"

CONFIG = ZK_HEADER + """
images-dir: {images}
build-log-dir: {logs}
images-dir-required-free: 0
labels:
  - name: built-aws
diskimages:
  - name: debian-built
    dib-cmd: {dib}
    elements: [debian-minimal, vm]
    username: debian
    env-vars:
      FAKE_DIB_SIZE: 2M
      FAKE_DIB_FILL: "0:boot sector,1600000:root fs"
    metadata:
      team: infra
providers:
  - name: ec2-img
    driver: aws
    region-name: us-east-1
    rate: 1000
    image-import-timeout: {timeout}
    object-storage:
      bucket-name: np-images
    diskimages:
      - name: debian-built
        import-method: {method}
        volume-type: gp3
        tags:
          purpose: ci
    pools:
      - name: main
        max-servers: 4
        subnet-id: {subnet}
        security-group-id: {group}
        host-key-checking: false
        labels:
          - name: built-aws
            diskimage: debian-built
            instance-type: t3.medium
            key-name: zuul
"""


@pytest.fixture
def s3(moto_server: str, aws_env: dict) -> Any:
    client = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


def write_config(path: Path, zk_tls: dict, network: dict, name: str = "nb",
                 method: str = "snapshot", timeout: int = 3600, hook: Path | None = None,
                 extra: str = "") -> Path:
    """The builder's config; its images in `<name>-images` next to it (one per builder)."""
    text = nodepool_yaml(
        zk_tls, CONFIG, images=path.parent / f"{name}-images", logs=path.parent / "logs",
        dib=FAKE_DIB, method=method, timeout=timeout, subnet=network["subnets"][0],
        group=network["group"])
    if hook is not None:
        text = text.replace("    object-storage:", f"    post-upload-hook: {hook}\n"
                            "    object-storage:", 1)
    path.write_text(text.replace("images-dir:", extra + "images-dir:", 1))
    return path


@pytest.fixture
def start_builder(zk_tls: dict, tmp_path: Path, aws_network: dict, s3: Any) -> Iterator[Any]:
    started: list[Builder] = []

    def start(method: str = "snapshot", tuning: Any = AWS_FAST, timeout: int = 3600,
              hook: Path | None = None) -> Builder:
        path = write_config(tmp_path / "nb.yaml", zk_tls, aws_network, method=method,
                            timeout=timeout, hook=hook)
        builder = Builder(str(path), hostname="nb", tuning=tuning)
        builder.start()
        started.append(builder)
        return builder
    yield start
    for builder in started:
        builder.stop(10)


def uploads(watch: ImageWatch) -> dict[tuple[str, str], dict]:
    return {k: u for k, u in watch.uploads("debian-built", PROVIDER).items()
            if u["state"] == "ready"}


def request_build(zk_client: Any) -> None:
    """What `nodepool image-build` writes (Nodepool's flag)."""
    zk_client.ensure_path("/nodepool/images/debian-built/request-build")


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def our_amis(ec2: Any) -> dict[str, dict]:
    return {i["ImageId"]: i for i in ec2.describe_images(Owners=["self"])["Images"]}


def our_snapshots(ec2: Any) -> dict[str, dict]:
    return {s["SnapshotId"]: s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def objects(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents") or []]


def expected_tags(build_id: str, upload_id: str) -> dict[str, str]:
    return {"nodepool_provider_name": PROVIDER, "nodepool_build_id": build_id,
            "nodepool_upload_id": upload_id, "team": "infra", "purpose": "ci"}


def test_a_build_is_imported_as_a_snapshot_registered_tagged_and_a_launcher_boots_it(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_proxy: FaultProxy,
        zk_client: Any, tmp_path: Path) -> None:
    start_builder()
    (build_id, upload_id), upload = next(iter(watch.wait(lambda: uploads(watch)).items()))
    assert watch.builds("debian-built")[build_id]["formats"] == "raw"   # image-format's default
    assert upload["format"] == "raw" and upload["username"] == "debian"
    ami = our_amis(ec2)[upload["external_id"]]
    assert ami["Name"] == upload["external_name"] and ami["State"] == "available"
    assert tags(ami) == expected_tags(build_id, upload_id)
    # The import task named the S3 object NAME.FORMAT, carried the tags, and was polled.
    (task,) = aws_proxy.imports.tasks.values()
    assert (task["bucket"], task["key"]) == (BUCKET, f"{upload['external_name']}.raw")
    assert task["format"] == "raw" and task["tags"] == expected_tags(build_id, upload_id)
    assert task["size"] == (tmp_path / "nb-images" / f"debian-built-{build_id}.raw").stat().st_size
    snapshot = our_snapshots(ec2)[task["snapshot"]]
    assert tags(snapshot) == expected_tags(build_id, upload_id)
    assert aws_proxy.calls["RegisterImage"] == 1
    assert objects(s3) == []   # the S3 object is deleted once imported
    # A launcher on the same config boots the diskimage label from the AMI.
    launcher = Launcher(str(tmp_path / "nb.yaml"), hostname="nl")
    launcher.start()
    try:
        rq = Requestor(zk_client)
        req = rq.wait(rq.submit(["built-aws"]))
        assert req["state"] == "fulfilled", req
        node = rq.node(req["nodes"][0])
        assert node["image_id"] == (f"/nodepool/images/debian-built/builds/{build_id}"
                                    f"/providers/{PROVIDER}/images/{upload_id}")
        assert node["username"] == "debian"
        found = ec2.describe_instances(InstanceIds=[node["external_id"]])
        assert found["Reservations"][0]["Instances"][0]["ImageId"] == upload["external_id"]
    finally:
        launcher.stop()


def test_import_method_image_imports_an_ami_and_tags_it_and_its_snapshot(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_proxy: FaultProxy) -> None:
    start_builder("image")
    (build_id, upload_id), upload = next(iter(watch.wait(lambda: uploads(watch)).items()))
    (task,) = aws_proxy.imports.tasks.values()
    assert task["kind"] == "image" and upload["external_id"] == task["image"]
    assert "RegisterImage" not in aws_proxy.calls   # the import made the AMI
    assert tags(our_amis(ec2)[task["image"]]) == expected_tags(build_id, upload_id)
    assert tags(our_snapshots(ec2)[task["snapshot"]]) == expected_tags(build_id, upload_id)
    assert objects(s3) == []


def test_a_failed_import_is_retried_and_leaves_no_object_or_snapshot(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_proxy: FaultProxy) -> None:
    aws_proxy.imports.fail_next("ClientError: Disk validation failed [Unsupported format]")
    start_builder()
    (_, upload_id), upload = next(iter(watch.wait(lambda: uploads(watch)).items()))
    failed, done = sorted(aws_proxy.imports.tasks.values(), key=lambda t: t["snapshot"] or "")
    assert failed["status"] == "deleted" and failed["snapshot"] is None
    assert done["status"] == "completed"
    assert [tags(s).get("nodepool_upload_id") for s in our_snapshots(ec2).values()
            if tags(s)] == [upload_id]
    assert objects(s3) == []


def test_an_import_past_image_import_timeout_is_cancelled_and_the_try_failed(
        start_builder: Any, watch: ImageWatch, s3: Any, aws_proxy: FaultProxy) -> None:
    aws_proxy.imports.polls = 10 ** 6   # tasks stay active
    # No retry of the failed upload during the test (it would start a third task).
    start_builder(timeout=1, tuning=dataclasses.replace(AWS_FAST, upload_backoff=3600))
    failed = watch.wait(lambda: [u for u in watch.uploads("debian-built", PROVIDER).values()
                                 if u["state"] == "failed"], what="a failed upload")
    assert failed[0]["external_id"] is None
    cancelled = list(aws_proxy.imports.tasks.values())
    assert len(cancelled) == 2 and aws_proxy.calls["CancelImportTask"] == 2   # both tries
    assert {t["status"] for t in cancelled} == {"deleted"} and objects(s3) == []


def test_too_many_import_tasks_waits_and_starts_the_import_again(
        start_builder: Any, watch: ImageWatch, aws_proxy: FaultProxy) -> None:
    aws_proxy.add(Rule("ImportSnapshot", "busy", count=2))   # ResourceCountLimitExceeded
    start_builder()
    watch.wait(lambda: uploads(watch))
    assert aws_proxy.calls["ImportSnapshot"] == 3 and len(aws_proxy.imports.tasks) == 1
    assert len(watch.uploads("debian-built", PROVIDER)) == 1   # within one try, no failure


def test_rotation_deletes_the_oldest_ami_and_its_snapshots(
        start_builder: Any, watch: ImageWatch, ec2: Any, aws_proxy: FaultProxy,
        zk_client: Any) -> None:
    start_builder()
    (first, _), up = next(iter(watch.wait(lambda: uploads(watch)).items()))
    first_snapshot = next(iter(aws_proxy.imports.tasks.values()))["snapshot"]
    seen = {first}
    for count in (2, 3):
        request_build(zk_client)
        # The newest build is never rotated away, so "a build not seen before is uploaded" is a
        # fact that stays true; the count of builds is not (keep 2 may already have removed one).
        new = watch.wait(lambda: not zk_client.exists("/nodepool/images/debian-built/request-build")
                         and {b for b, _ in uploads(watch)} - seen, what=f"build {count} uploaded")
        seen |= new
    watch.wait(lambda: first not in watch.builds("debian-built"), what="oldest build removed")
    assert up["external_id"] not in our_amis(ec2)
    assert first_snapshot not in our_snapshots(ec2)
    kept = {u["external_id"] for u in uploads(watch).values()}
    assert len(kept) == 2 and kept <= set(our_amis(ec2))


def test_leak_cleanup_deletes_tagged_amis_snapshots_and_objects_never_untagged_ones(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_network: dict) -> None:
    leak = [{"Key": "nodepool_provider_name", "Value": PROVIDER},
            {"Key": "nodepool_build_id", "Value": "0" * 32},
            {"Key": "nodepool_upload_id", "Value": "0000000001"}]
    other = [{"Key": "nodepool_provider_name", "Value": "someone-else"}] + leak[1:]

    def ami(tag_list: list) -> str:
        image_id = ec2.register_image(Name=f"img-{len(our_amis(ec2))}", Architecture="x86_64",
                                      RootDeviceName="/dev/sda1")["ImageId"]
        if tag_list:
            ec2.create_tags(Resources=[image_id], Tags=tag_list)
        return image_id

    def snapshot(tag_list: list) -> str:
        volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
        spec = [{"ResourceType": "snapshot", "Tags": tag_list}] if tag_list else []
        return ec2.create_snapshot(VolumeId=volume, TagSpecifications=spec)["SnapshotId"]

    leaked_ami, leaked_snap = ami(leak), snapshot(leak)
    kept = {ami([]), ami(other), snapshot([]), snapshot(other)}
    s3.put_object(Bucket=BUCKET, Key="leaked.raw", Body=b"x",
                  Tagging="nodepool_provider_name=ec2-img&nodepool_build_id=b&"
                          "nodepool_upload_id=0000000002")
    s3.put_object(Bucket=BUCKET, Key="untagged.raw", Body=b"x")
    builder = start_builder(tuning=dataclasses.replace(AWS_FAST, cleanup_interval=0.2))
    watch.wait(lambda: uploads(watch) and leaked_ami not in our_amis(ec2)
               and leaked_snap not in our_snapshots(ec2) and "leaked.raw" not in objects(s3),
               what="the leaked AMI, snapshot and object deleted")
    assert builder.cleanup.passes >= 2
    assert kept <= set(our_amis(ec2)) | set(our_snapshots(ec2))
    assert objects(s3) == ["untagged.raw"]
    (upload,) = uploads(watch).values()
    assert upload["external_id"] in our_amis(ec2)   # an upload with a record stays


PLAIN_HEADER = "zookeeper-servers:\n  - host: zk.example.org\n"


def config_error(body: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(PLAIN_HEADER + body)
    return str(info.value)


AWS_PROVIDER = """
labels: [{{name: a}}]
diskimages: [{{name: d, elements: [x]}}]
providers:
  - name: ec2
    driver: aws
    region-name: us-east-1
{storage}    diskimages:
      - name: d
{image}    pools:
      - name: p
        labels: [{{name: a, diskimage: d, instance-type: t3.small, key-name: k}}]
"""


def test_aws_upload_keys_are_validated_naming_the_key() -> None:
    storage = "    object-storage: {bucket-name: b}\n"
    assert "providers[0].object-storage: required with diskimages" in config_error(
        AWS_PROVIDER.format(storage="", image=""))
    assert "providers[0].diskimages[0].import-method: ebs-direct writes the file's bytes" in \
        config_error(AWS_PROVIDER.format(storage="    image-format: vhd\n",
                                         image="        import-method: ebs-direct\n"))
    parse_config(PLAIN_HEADER + AWS_PROVIDER.format(   # ebs-direct needs no bucket
        storage="", image="        import-method: ebs-direct\n"))
    assert "providers[0].diskimages[0].imds-support: v2.0 needs import-method snapshot" in \
        config_error(AWS_PROVIDER.format(storage=storage, image="        import-method: image\n"
                                         "        imds-support: v2.0\n"))
    assert "providers[0].image-format: expected" in config_error(AWS_PROVIDER.format(
        storage=storage + "    image-format: qcow2\n", image=""))


def test_the_aws_example_config_is_valid_for_the_builder() -> None:
    from nodepool.builder.daemon import check_builder_config
    from nodepool.builder.plan import wanted_formats
    path = Path(__file__).resolve().parent.parent / "etc" / "nodepool-aws-builder.yaml"
    config = parse_config(path.read_text(), str(path))
    check_builder_config(config)
    provider = config.providers["aws-us-east-1"]
    assert wanted_formats(config, lambda p: p.image_format) == {
        "debian-bookworm": ["raw"], "debian-bookworm-arm": ["raw"]}
    assert provider.diskimages["debian-bookworm-arm"].import_method == "image"
    assert provider.diskimages["debian-bookworm"].meta == {"purpose": "ci-node"}


def test_ebs_direct_writes_the_raw_files_blocks_into_a_tagged_snapshot_without_s3(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_proxy: FaultProxy,
        moto_server: str, tmp_path: Path) -> None:
    start_builder("ebs-direct")
    (build_id, upload_id), upload = next(iter(watch.wait(lambda: uploads(watch)).items()))
    assert aws_proxy.imports.tasks == {} and objects(s3) == []   # no import task, no S3
    (snapshot,) = [s for s in our_snapshots(ec2).values()
                   if tags(s).get("nodepool_upload_id") == upload_id]
    assert tags(snapshot) == expected_tags(build_id, upload_id)
    assert snapshot["VolumeSize"] == 1 and snapshot["State"] == "completed"
    assert tags(our_amis(ec2)[upload["external_id"]]) == expected_tags(build_id, upload_id)
    assert aws_proxy.calls["RegisterImage"] == 1
    # Only the blocks holding data were written (of the 2 MiB file's four), byte for byte.
    ebs = boto3.client("ebs", endpoint_url=moto_server, region_name=REGION)
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot["SnapshotId"])
    # (moto reports BlockSize 512 where EBS reports 524288: not checked)
    indexes = sorted(b["BlockIndex"] for b in listed["Blocks"])   # written in parallel
    assert indexes == [0, 3]
    data = (tmp_path / "nb-images" / f"debian-built-{build_id}.raw").read_bytes()
    for block in listed["Blocks"]:
        got = ebs.get_snapshot_block(SnapshotId=snapshot["SnapshotId"],
                                     BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"])
        start = block["BlockIndex"] * 512 * 1024
        assert got["BlockData"].read() == data[start:start + 512 * 1024]


def test_ebs_blocks_are_512k_the_last_padded_and_all_zero_ones_skipped(tmp_path: Path) -> None:
    from nodepool.builder.aws_ebs import BLOCK, blocks
    path = tmp_path / "disk.raw"
    path.write_bytes(b"a" + bytes(BLOCK - 1) + bytes(BLOCK) + b"z" * 10)   # 2 blocks + 10 B
    found = list(blocks(str(path)))
    assert [i for i, _ in found] == [0, 2]
    assert all(len(data) == BLOCK for _, data in found)
    assert found[1][1] == b"z" * 10 + bytes(BLOCK - 10)


def test_alien_image_list_shows_builder_tagged_amis_without_a_ready_upload(
        start_builder: Any, watch: ImageWatch, ec2: Any, tmp_path: Path, capsys: Any) -> None:
    import json

    from nodepool import cli
    builder = start_builder()
    (_, upload), = [(k, u) for k, u in watch.wait(lambda: uploads(watch)).items()]
    builder.stop(10)   # its leak cleanup would delete the alien one
    alien = ec2.register_image(Name="left-behind", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.create_tags(Resources=[alien], Tags=[{"Key": "nodepool_build_id", "Value": "x"}])
    ec2.register_image(Name="not-a-builders", RootDeviceName="/dev/sda1")
    assert cli.main(["-c", str(tmp_path / "nb.yaml"), "alien-image-list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"provider": PROVIDER, "name": "left-behind", "id": alien}]
    assert upload["external_id"] != alien


def test_what_an_orphaned_import_task_made_is_tagged_from_the_task_and_cleaned_up(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_proxy: FaultProxy) -> None:
    """An uploader that died while EC2 imported leaves an untagged snapshot; the task's tags
    name it (as Nodepool's adapter finds them). Another provider's stays untagged."""
    proxied = boto3.client("ec2", endpoint_url=aws_proxy.url, region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key="orphan.raw", Body=b"x")

    def orphan(provider: str) -> str:
        tags = [{"Key": "nodepool_provider_name", "Value": provider},
                {"Key": "nodepool_build_id", "Value": "f" * 32},
                {"Key": "nodepool_upload_id", "Value": "0000000009"}]
        task = proxied.import_snapshot(
            DiskContainer={"Format": "raw", "UserBucket": {"S3Bucket": BUCKET,
                                                           "S3Key": "orphan.raw"}},
            TagSpecifications=[{"ResourceType": "import-snapshot-task", "Tags": tags}])
        for _ in range(2):   # active on the first look, completed on the second
            done = proxied.describe_import_snapshot_tasks(ImportTaskIds=[task["ImportTaskId"]])
        return done["ImportSnapshotTasks"][0]["SnapshotTaskDetail"]["SnapshotId"]

    ours, theirs = orphan(PROVIDER), orphan("someone-else")
    assert tags(our_snapshots(ec2)[ours]) == {}
    start_builder(tuning=dataclasses.replace(AWS_FAST, cleanup_interval=0.2))
    watch.wait(lambda: ours not in our_snapshots(ec2), what="the orphaned snapshot deleted")
    assert tags(our_snapshots(ec2)[theirs]) == {}


def hook_script(tmp_path: Path, fail_first: bool) -> Path:
    """A post-upload-hook that appends its arguments to `hook-args`; `fail_first`: the
    first run exits 3."""
    hook = tmp_path / "hook"
    fail = (f"[ -e {tmp_path}/failed-once ] || {{ touch {tmp_path}/failed-once; exit 3; }}\n"
            if fail_first else "")
    hook.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/hook-args\n{fail}')
    hook.chmod(0o755)
    return hook


def hook_calls(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "hook-args").read_text().splitlines()]


def tagged_with(ec2: Any, s3: Any, upload_id: str) -> list[str]:
    """The AMIs, snapshots and S3 objects tagged with this upload."""
    found = [i for i, r in {**our_amis(ec2), **our_snapshots(ec2)}.items()
             if tags(r).get("nodepool_upload_id") == upload_id]
    for key in objects(s3):
        tag_set = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        if tags({"Tags": tag_set}).get("nodepool_upload_id") == upload_id:
            found.append(key)
    return found


def test_post_upload_hook_runs_with_the_provider_the_ami_and_the_file(
        start_builder: Any, watch: ImageWatch, ec2: Any, tmp_path: Path) -> None:
    start_builder(hook=hook_script(tmp_path, fail_first=False))
    (build_id, _), upload = next(iter(watch.wait(lambda: uploads(watch)).items()))
    assert hook_calls(tmp_path) == [[PROVIDER, upload["external_id"],
                                     str(tmp_path / "nb-images" / f"debian-built-{build_id}.raw")]]
    assert our_amis(ec2)[upload["external_id"]]["State"] == "available"


@pytest.mark.parametrize("method", ["snapshot", "image", "ebs-direct"])
def test_a_failing_post_upload_hook_deletes_the_ami_snapshots_and_object_and_is_retried(
        start_builder: Any, watch: ImageWatch, ec2: Any, s3: Any, aws_proxy: FaultProxy,
        tmp_path: Path, method: str) -> None:
    start_builder(method, hook=hook_script(tmp_path, fail_first=True))
    failed: dict[str, Any] = {}

    def failed_then_ready() -> Any:
        for (_, upload_id), upload in watch.uploads("debian-built", PROVIDER).items():
            if upload["state"] == "failed" and not failed:
                # What the failed upload left, looked at once its record says failed.
                failed.update(id=upload_id, record=upload, left=tagged_with(ec2, s3, upload_id))
        return failed and uploads(watch)
    (_, ready_id), ready = next(iter(watch.wait(failed_then_ready).items()))
    first, second = hook_calls(tmp_path)
    assert failed["id"] != ready_id and second[1] == ready["external_id"] != first[1]
    assert failed["record"]["external_id"] is None and failed["left"] == []
    assert first[1] not in our_amis(ec2)
    made = [t for t in aws_proxy.imports.tasks.values()
            if t["tags"]["nodepool_upload_id"] == failed["id"]]
    assert len(made) == (0 if method == "ebs-direct" else 1)
    for task in made:   # what the failed upload's import made is gone
        assert task["status"] == "completed" and task["snapshot"] not in our_snapshots(ec2)
        assert task["image"] in (None, first[1])
    assert set(tagged_with(ec2, s3, ready_id)) >= {ready["external_id"]}
    assert objects(s3) == []


def importing(watch: ImageWatch, aws_proxy: FaultProxy) -> str | None:
    """The upload id while its record is `uploading` and its import task is active."""
    ups = watch.uploads("debian-built", PROVIDER)
    active = [t for t in aws_proxy.imports.tasks.values() if t["status"] == "active"]
    if [u["state"] for u in ups.values()] != ["uploading"] or not active:
        return None
    return next(iter(ups))[1]


@pytest.mark.parametrize("sig, method", [(signal.SIGKILL, "snapshot"),
                                         (signal.SIGTERM, "snapshot"),
                                         (signal.SIGKILL, "image")],
                         ids=["killed", "stopped", "killed-image"])
def test_a_builder_killed_or_stopped_mid_import_leaves_nothing_after_cleanup(
        start_builder: Any, zk_tls: dict, tmp_path: Path, aws_network: dict, s3: Any,
        watch: ImageWatch, ec2: Any, aws_proxy: FaultProxy, sig: int, method: str) -> None:
    aws_proxy.imports.polls = 10 ** 6   # the import stays active while the builder lives
    config = write_config(tmp_path / "killed.yaml", zk_tls, aws_network, "killed",
                          method=method, extra="zookeeper-timeout: 2\n")
    with builder_process(config, tmp_path / "killed.log") as proc:   # AWS_* point it at moto
        upload_id = watch.wait(lambda: importing(watch, aws_proxy), what="an import under way")
        stop_by(proc, sig)
    (task,) = aws_proxy.imports.tasks.values()
    with aws_proxy.imports.lock:
        task["polls"] = 0   # EC2 finishes the import on its own: an untagged snapshot (AMI)
    # Another builder's cleanup removes the record once the dead one's lock has gone with
    # its session; the task's tags name what it made, deleted as a leak with the S3 object.
    start_builder(tuning=dataclasses.replace(AWS_FAST, cleanup_interval=0.2))
    watch.wait(lambda: not watch.uploads("debian-built", PROVIDER) and all_gone(
        ec2, s3, upload_id, task), timeout=60, what="the record and what the import made gone")
    # The build stays (its files are on the dead builder's disk).
    assert [b["state"] for b in watch.builds("debian-built").values()] == ["ready"]


def all_gone(ec2: Any, s3: Any, upload_id: str, task: dict) -> bool:
    """The import task made its snapshot (and AMI), and none of it, nor the S3 object, nor
    anything tagged with the upload is left."""
    return (task["status"] == "completed" and task["snapshot"] not in our_snapshots(ec2)
            and task["image"] not in our_amis(ec2) and objects(s3) == []
            and not tagged_with(ec2, s3, upload_id))
