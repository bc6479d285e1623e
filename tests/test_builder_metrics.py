"""The builder's Prometheus series: a real builder (the stand-in disk-image-create, uploads to
the simulator over HTTP) scraped over HTTP on --metrics-port, parsed with prometheus_client."""

from __future__ import annotations

import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builderproc import builder_process, stop_by
from imagewatch import ImageWatch
from prometheus_client.parser import text_string_to_metric_families
from requestor import wait_for
from test_builder import FAST, ready_uploads, write_config

from nodepool.builder.daemon import Builder
from nodepool.builder.main import main

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

IMAGE, PROVIDER = "debian-built", "sim-cloud"


@pytest.fixture
def builders() -> Iterator[list[Builder]]:
    started: list[Builder] = []
    yield started
    for builder in started:
        builder.stop(10)


def scrape(port: int) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, from GET /metrics over HTTP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        body = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(port: int, name: str, **labels: str) -> float | None:
    return scrape(port).get((name, tuple(sorted(labels.items()))))


def test_one_build_and_one_upload_are_scraped_from_the_metrics_port(
        zk_tls: dict, tmp_path: Path, ctl: Any, watch: ImageWatch, zk_client: Any,
        builders: list[Builder]) -> None:
    hold = tmp_path / "go"
    config = write_config(tmp_path / "nb.yaml", zk_tls, tmp_path,
                          env=f"      FAKE_DIB_WAIT_FILE: {hold}\n")
    builder = Builder(str(config), hostname="nb", tuning=FAST,
                      metrics_listen=("127.0.0.1", 0))
    builders.append(builder)
    builder.start()
    port = builder.metrics_port
    assert port
    wait_for(lambda: value(port, "nodepool_builder_image_build_state", image=IMAGE) == 1,
             timeout=30, what="the image building (state 1)")
    hold.touch()
    uploads = watch.wait(lambda: ready_uploads(watch), what="a ready upload")
    (build_id, _), _ = next(iter(uploads.items()))
    state_time = watch.builds(IMAGE)[build_id]["state_time"]
    # The cleanup pass after the upload refreshes the per-image gauges.
    wait_for(lambda: value(port, "nodepool_builder_image_ready_build_timestamp_seconds",
                           image=IMAGE) == state_time and
             value(port, "nodepool_builder_uploads_total", image=IMAGE, provider=PROVIDER,
                   result="ready") == 1,
             timeout=30, what="the upload and the ready build scraped")
    figures = scrape(port)

    def got(name: str, **labels: str) -> float | None:
        return figures.get((name, tuple(sorted(labels.items()))))

    assert got("nodepool_builder_builds_total", image=IMAGE, result="ready") == 1
    assert got("nodepool_builder_builds_total", image=IMAGE, result="failed") is None
    assert got("nodepool_builder_build_duration_seconds_count", image=IMAGE,
               result="ready") == 1
    assert got("nodepool_builder_build_duration_seconds_sum", image=IMAGE, result="ready") > 0
    assert got("nodepool_builder_image_size_bytes", image=IMAGE, format="qcow2") > 0
    assert got("nodepool_builder_upload_duration_seconds_count", image=IMAGE,
               provider=PROVIDER, result="ready") == 1
    assert got("nodepool_builder_uploads_total", image=IMAGE, provider=PROVIDER,
               result="failed") is None
    assert got("nodepool_builder_image_build_requests", image=IMAGE) == 0
    assert got("nodepool_builder_image_build_state", image=IMAGE) == 0
    # doc/builder.md lists every series the builder serves, and no other.
    doc = (Path(__file__).resolve().parent.parent / "doc" / "builder.md").read_text()
    documented = {re.sub("_total$", "", n) for n in re.findall(r"`(nodepool_builder_\w+)`", doc)}
    assert documented == {f.name for f in builder.stats.registry.collect()}


def start(zk_tls: dict, tmp_path: Path, builders: list[Builder], **kw: Any) -> int:
    """A builder with metrics on a free loopback port; that port."""
    tmp_path.mkdir(exist_ok=True)
    config = write_config(tmp_path / "nb.yaml", zk_tls, tmp_path, **kw)
    builder = Builder(str(config), hostname="nb", tuning=FAST,
                      metrics_listen=("127.0.0.1", 0))
    builders.append(builder)
    builder.start()
    return builder.metrics_port


def test_failed_builds_and_uploads_are_counted_by_result(
        zk_tls: dict, tmp_path: Path, ctl: Any, builders: list[Builder]) -> None:
    port = start(zk_tls, tmp_path / "b", builders,
                 env="      FAKE_DIB_FAIL: no mirror reachable\n")
    wait_for(lambda: (value(port, "nodepool_builder_builds_total", image=IMAGE,
                            result="failed") or 0) >= 1,
             timeout=30, what="a failed build counted")
    figures = scrape(port)
    assert (("nodepool_builder_builds_total", (("image", IMAGE), ("result", "ready")))
            not in figures)
    assert not [k for k in figures if k[0] == "nodepool_builder_image_size_bytes"]
    builders.pop().stop(10)
    # The first upload fails both its tries (FAST: 2), the next one is ready.
    ctl.inject("http_error", status=500, count=2, method="PUT", path=r"/images/[^/]+/file$")
    port = start(zk_tls, tmp_path / "a", builders)
    wait_for(lambda: value(port, "nodepool_builder_uploads_total", image=IMAGE,
                           provider=PROVIDER, result="ready") == 1,
             timeout=30, what="a ready upload after a failed one")
    assert value(port, "nodepool_builder_uploads_total", image=IMAGE, provider=PROVIDER,
                 result="failed") == 1
    assert value(port, "nodepool_builder_upload_duration_seconds_count", image=IMAGE,
                 provider=PROVIDER, result="failed") == 1


def test_the_daemon_serves_metrics_on_metrics_port_and_address(
        zk_tls: dict, tmp_path: Path, ctl: Any, watch: ImageWatch) -> None:
    from zookeeper import free_port
    port = free_port()
    config = write_config(tmp_path / "nb.yaml", zk_tls, tmp_path)
    log = tmp_path / "builder.log"
    with builder_process(config, log, "--metrics-port", str(port),
                         "--metrics-address", "127.0.0.1") as proc:
        watch.wait(lambda: ready_uploads(watch), what="a ready upload")
        wait_for(lambda: value(port, "nodepool_builder_uploads_total", image=IMAGE,
                               provider=PROVIDER, result="ready") == 1,
                 timeout=30, what="the upload scraped from the daemon")
        assert f"Prometheus metrics listening on 127.0.0.1:{port}" in log.read_text()
        stop_by(proc, signal.SIGTERM)


def test_a_metrics_port_in_use_fails_the_start_naming_it(
        zk_tls: dict, tmp_path: Path, ctl: Any) -> None:
    config = write_config(tmp_path / "nb.yaml", zk_tls, tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        builder = Builder(str(config), hostname="nb", tuning=FAST,
                          metrics_listen=("127.0.0.1", port))
        with pytest.raises(OSError, match=f"metrics: cannot listen on 127.0.0.1:{port}: "
                                          "Address already in use"):
            builder.start()
    assert builder.zk is None   # refused before connecting


def test_a_metrics_port_out_of_range_is_refused(tmp_path: Path, capsys: Any) -> None:
    assert main(["-c", str(tmp_path / "none.yaml"), "--metrics-port", "70000"]) == 2
    assert "--metrics-port: expected a port from 1 to 65535, got 70000" in \
        capsys.readouterr().err
