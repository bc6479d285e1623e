"""Running diskimage-builder: the command line Nodepool runs, its log, its files on disk."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Mapping

from nodepool.config import Config, DiskImage

log = logging.getLogger("nodepool.builder.dib")

# As Nodepool: qcow2 images are made compatible with old qemu (0.10).
QEMU_IMG_OPTIONS = "--qemu-img-options 'compat=0.10'"
# <image>-<build id hex>.<ext>: a local build file (and .md5 / .sha256 beside it).
LOCAL_FILE_RE = re.compile(r"^(.*)-([0-9a-f]+)\.(\w+)$")


@dataclasses.dataclass(frozen=True)
class BuildResult:
    ok: bool
    returncode: int | None
    timed_out: bool
    stopped: bool
    seconds: float
    log_path: str


def output_base(images_dir: str, image: str, build_id: str) -> str:
    return str(Path(images_dir) / f"{image}-{build_id}")


def command(diskimage: DiskImage, formats: list[str], output: str) -> list[str]:
    """Nodepool's: `<dib-cmd> -x -t <formats> --checksum --no-tmpfs [qemu options] -o <out> <elements>`."""
    types = ",".join(formats)
    qemu = QEMU_IMG_OPTIONS if "qcow2" in formats else ""
    line = (f"{diskimage.dib_cmd} -x -t {types} --checksum --no-tmpfs {qemu} -o {output} "
            f"{' '.join(diskimage.elements)}")
    return shlex.split(line)


def environment(diskimage: DiskImage, config: Config, output: str,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["DIB_RELEASE"] = diskimage.release or ""
    env["DIB_IMAGE_NAME"] = diskimage.name
    env["DIB_IMAGE_FILENAME"] = output
    if config.elements_dir:
        env["ELEMENTS_PATH"] = config.elements_dir
    env.update({str(k): str(v) for k, v in diskimage.env_vars.items()})
    return env


def log_path(config: Config, image: str, build_id: str) -> str:
    return str(Path(config.build_log_dir) / f"{image}-{build_id}.log")


def prune_logs(config: Config, image: str) -> None:
    """Keep the newest `build-log-retention` logs of `image` (at least one); negative: all."""
    if config.build_log_retention < 0:
        return
    keep = max(config.build_log_retention, 1)
    folder = Path(config.build_log_dir)
    logs = sorted((p for p in folder.glob(f"{image}-*.log") if _log_of(p.name, image)),
                  key=lambda p: p.stat().st_mtime)
    for old in logs[:-keep]:
        log.info("Deleting old build log %s", old)
        old.unlink(missing_ok=True)


def _log_of(name: str, image: str) -> bool:
    rest = name[len(image) + 1:-len(".log")]
    return re.fullmatch(r"[0-9a-f]+", rest) is not None


def run(cmd: list[str], env: dict[str, str], log_file: str, timeout: float,
        stop: threading.Event) -> BuildResult:
    """Run the build to its end, its output in `log_file`; killed after `timeout` s or on stop."""
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_file, "wb") as out:
        out.write(f"Running {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as e:
            out.write(f"Failed to run {cmd[0]}: {e.strerror}\n".encode())
            return BuildResult(False, None, False, False, 0.0, log_file)
        timed_out = stopped = False
        while True:
            try:
                proc.wait(timeout=0.2 if not stop.is_set() else 0)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set() or time.monotonic() - started > timeout:
                timed_out, stopped = not stop.is_set(), stop.is_set()
                _kill(proc)
                break
        rc = proc.returncode
        note = "Build timed out" if timed_out else "Build stopped" if stopped else f"Exit code: {rc}"
        out.write(f"{note}\n".encode())
    seconds = time.monotonic() - started
    return BuildResult(rc == 0 and not timed_out and not stopped, rc, timed_out, stopped,
                       seconds, log_file)


def _kill(proc: subprocess.Popen) -> None:
    # Its own session: DIB's children (qemu-img, chroots) go with it.
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()


def local_files(images_dir: str, image: str, build_id: str) -> dict[str, str]:
    """The build's image files on disk by format: {"qcow2": "/images/x-<id>.qcow2"}."""
    found = {}
    folder = Path(images_dir)
    if not folder.is_dir():
        return found
    prefix = f"{image}-{build_id}."
    for entry in folder.iterdir():
        name = entry.name
        if entry.is_file() and name.startswith(prefix):
            ext = name[len(prefix):]
            if "." not in ext:
                found[ext] = str(entry)
    return found


def checksum(path: str, kind: str) -> str | None:
    """DIB's `<file>.md5` / `.sha256` (md5sum's "<hex>  <file>"), the hex part."""
    try:
        text = Path(f"{path}.{kind}").read_text()
    except OSError:
        return None
    return text.split()[0] if text.split() else None


def local_builds(images_dir: str) -> set[tuple[str, str]]:
    """(image, build id) of every build with a file in images_dir."""
    found = set()
    folder = Path(images_dir)
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        m = LOCAL_FILE_RE.match(entry.name)
        if m and entry.is_file():
            found.add((m.group(1), m.group(2)))
    return found


def delete_local(images_dir: str, image: str, build_id: str,
                 formats: set[str] | None = None) -> None:
    """Remove the build's files (only `formats` when given), checksums, and its .d when all go."""
    for fmt, path in local_files(images_dir, image, build_id).items():
        if formats is not None and fmt not in formats:
            continue
        for item in (path, f"{path}.md5", f"{path}.sha256"):
            try:
                os.remove(item)
                log.info("Removed DIB file %s", item)
            except FileNotFoundError:
                pass
    if formats is None:
        shutil.rmtree(f"{output_base(images_dir, image, build_id)}.d", ignore_errors=True)


def free_mib(folder: str) -> float:
    usage = shutil.disk_usage(folder)
    return usage.free / (1024 * 1024)
