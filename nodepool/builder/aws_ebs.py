"""`import-method: ebs-direct`: a raw image file written into a new EBS snapshot through the
EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot), no S3 and no import task.

As Nodepool's EBS uploader: 512 KiB blocks, each with its SHA256 checksum (checked against
the answer), the last one padded with zeros, the snapshot tagged at its start, the size
the file's rounded up to GiB. One difference: blocks that are all zeros are not sent (a new
snapshot reads as zeros where nothing was written), so a sparse raw image costs the blocks
it uses. Block writes are not under the provider's `rate` (EBS allows 1,000 a second; as
Nodepool), the other calls are.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Callable

from nodepool.drivers.aws.ec2 import Ec2
from nodepool.drivers.aws.errors import TRANSIENT_TYPES, error_code

log = logging.getLogger("nodepool.builder.aws")

BLOCK = 512 * 1024
GIB = 1024 ** 3
WORKERS = 8          # block writes in flight
BLOCK_TRIES = 5      # per block, for the errors EBS says to retry
RETRYABLE = frozenset({"RequestThrottledException", "InternalServerException",
                       "ValidationException", "ThrottlingException"})


def blocks(filename: str) -> Iterator[tuple[int, bytes]]:
    """(index, 512 KiB of data) of every block that is not all zeros."""
    zeros = bytes(BLOCK)
    with open(filename, "rb") as f:
        index = 0
        while chunk := f.read(BLOCK):
            chunk = chunk.ljust(BLOCK, b"\0")
            if chunk != zeros:
                yield index, chunk
            index += 1


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put_block(client: Any, snapshot_id: str, index: int, data: bytes,
              pause: Callable[[float], None] = time.sleep) -> None:
    expected = checksum(data)
    for attempt in range(1, BLOCK_TRIES + 1):
        try:
            answer = client.put_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=len(data),
                Checksum=expected, ChecksumAlgorithm="SHA256")
        except Exception as e:
            retry = error_code(e) in RETRYABLE or isinstance(e, TRANSIENT_TYPES)
            if not retry or attempt == BLOCK_TRIES:
                raise
            pause(0.2 * 2 ** attempt)
            continue
        if answer.get("Checksum") != expected:
            raise RuntimeError(f"snapshot {snapshot_id} block {index}: checksum "
                               f"{answer.get('Checksum')} returned, {expected} sent")
        return


def write_blocks(client: Any, snapshot_id: str, filename: str) -> int:
    """Every non-zero block of the file into the snapshot, WORKERS at once; how many."""
    count = 0
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ebs-block") as pool:
        pending: set[Future] = set()
        for index, data in blocks(filename):
            if len(pending) >= 2 * WORKERS:   # bounded: the file is never all in memory
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
            pending.add(pool.submit(put_block, client, snapshot_id, index, data))
            count += 1
        for future in pending:
            future.result()
    return count


def upload_snapshot(ec2: Ec2, name: str, filename: str, tags: list[dict[str, str]],
                    deadline: float, pause: Callable[[], None]) -> tuple[int, str]:
    """(size in GiB, snapshot id) of a completed snapshot holding the file."""
    gib = max(1, math.ceil(os.path.getsize(filename) / GIB))
    started = ec2.call(f"start snapshot for {name}", lambda c: c.start_snapshot(
        VolumeSize=gib, ClientToken=uuid.uuid4().hex, Tags=tags, Description=name),
        service="ebs")
    snapshot_id = started["SnapshotId"]
    log.info("provider=%s Writing %s into snapshot %s (%d GiB)", ec2.provider.name, filename,
             snapshot_id, gib)
    try:
        count = write_blocks(ec2.client("ebs"), snapshot_id, filename)
        status = ec2.call(f"complete snapshot {snapshot_id}", lambda c: c.complete_snapshot(
            SnapshotId=snapshot_id, ChangedBlocksCount=count), service="ebs")["Status"]
        while status != "completed":
            if status == "error" or time.monotonic() >= deadline:
                raise RuntimeError(f"snapshot {snapshot_id} ended {status!r}, not completed")
            pause()
            found = ec2.call(f"describe snapshot {snapshot_id}", lambda c: c.describe_snapshots(
                SnapshotIds=[snapshot_id]))["Snapshots"]
            status = found[0]["State"] if found else "error"
    except BaseException:
        try:
            ec2.call(f"delete snapshot {snapshot_id}",
                     lambda c: c.delete_snapshot(SnapshotId=snapshot_id))
        except Exception as e:
            log.warning("provider=%s Could not delete the unfinished snapshot %s: %s (leak "
                        "cleanup will)", ec2.provider.name, snapshot_id, e)
        raise
    return gib, snapshot_id
