"""Nothing secret leaks: planted credentials never appear in a log line (any level), CLI output,
web endpoint or metric of a launcher that used them.

The run: a launcher on the OpenStack simulator whose clouds.yaml password is a planted value,
over ZooKeeper TLS (its private key is the second secret, the cloud's tokens the third),
logging at DEBUG into a handler that keeps every record; a request is served and its node
deleted; then every CLI listing, every web endpoint (the status page,
/metrics and the request's timeline among them) is read. Each output is searched for each secret.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugins.ossim import LAUNCHER_CONFIG
from requestor import Requestor, wait_for
from test_web import get
from zkhelpers import nodepool_yaml

from nodepool import cli
from nodepool.launcher.daemon import Launcher

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

PASSWORD = "pl4nted-Cl0ud-Passw0rd-7f3a9c"


class KeepAll(logging.Handler):
    """Every record, formatted with its traceback, as an operator's DEBUG log would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def key_fragments(key_path: str) -> list[str]:
    """Lines from the middle of a PEM private key: any one of them in an output is a leak."""
    body = [line for line in Path(key_path).read_text().splitlines()
            if line and not line.startswith("-----")]
    return body[1:-1]


@pytest.fixture
def debug_log() -> Iterator[KeepAll]:
    handler = KeepAll()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.fixture
def secret_cloud(tmp_path: Path) -> Iterator[Any]:
    """A simulator whose only password is the planted one; OS_CLIENT_CONFIG_FILE names it."""
    from ossim.server import Simulator
    with Simulator(password=PASSWORD) as sim:
        path = sim.write_clouds_yaml(str(tmp_path / "clouds.yaml"), "simcloud")
        old = os.environ.get("OS_CLIENT_CONFIG_FILE")
        os.environ["OS_CLIENT_CONFIG_FILE"] = path
        try:
            yield sim, path
        finally:
            if old is None:
                os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
            else:
                os.environ["OS_CLIENT_CONFIG_FILE"] = old


def outputs_of_cli(capsys: Any, config: str) -> dict[str, str]:
    found = {}
    for argv in (["list"], ["list", "--detail"], ["list", "--json"], ["request-list"],
                 ["request-list", "--json"], ["info", "sim-cloud"], ["config-validate"]):
        cli.main(["-c", config, *argv])
        out, err = capsys.readouterr()
        found["nodepool " + " ".join(argv)] = out + err
    return found


WEB = "webapp:\n  listen_address: 127.0.0.1\n  port: 0\n"


def outputs_of_web(port: int, request_id: str, node_id: str) -> dict[str, str]:
    """Every endpoint, in text and JSON; each must answer."""
    found = {}
    for path in ("/", "/status.json", "/ready", "/metrics", "/node-list",
                 f"/node-list?node_id={node_id}", "/request-list", "/label-list",
                 "/image-list", "/dib-image-list", f"/request/{request_id}"):
        for accept in ("text/plain", "application/json"):
            status, _, body = get(port, path, accept=accept)
            assert status == 200, (path, status, body)
            found[f"GET {path} ({accept})"] = body
    return found


def test_no_planted_secret_in_logs_or_cli_output(
        secret_cloud: Any, zk_tls: dict, zk_client: Any, tmp_path: Path, capsys: Any,
        debug_log: KeepAll) -> None:
    sim, clouds_yaml = secret_cloud
    assert PASSWORD in Path(clouds_yaml).read_text()   # the launcher really used it
    config = tmp_path / "nodepool.yaml"
    config.write_text(nodepool_yaml(zk_tls, LAUNCHER_CONFIG) + WEB)
    launcher = Launcher(str(config), hostname="nl-secrets", webapp=True)
    launcher.start()
    try:
        rq = Requestor(zk_client)
        rid = rq.submit(["small"])
        request = rq.wait(rid)
        assert request["state"] == "fulfilled", request
        outputs = outputs_of_cli(capsys, str(config))
        outputs.update(outputs_of_web(launcher.web.port, rid, request["nodes"][0]))
        rq.finish(rq.accept(rid, request))
        wait_for(lambda: all(rq.node(n) is None for n in request["nodes"]), what="node deleted")
    finally:
        launcher.stop()
    # The planted password, the TLS key, and every token the cloud issued to the launcher.
    fragments, tokens = key_fragments(zk_tls["key"]), sorted(sim.state.tokens)
    assert fragments and tokens
    secrets = [PASSWORD, *fragments, *tokens]
    outputs["the DEBUG log"] = "\n".join(debug_log.lines)
    assert len(debug_log.lines) > 50 and any("sim-cloud" in line for line in debug_log.lines)
    leaks = [(where, secret[:12]) for where, text in outputs.items()
             for secret in secrets if secret in text]
    assert leaks == []
