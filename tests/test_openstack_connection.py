"""The driver's connection against the simulator: raw compute calls, the environment read once."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from nodepool.errors import TransientError

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                   "NO_PROXY", "all_proxy", "ALL_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_server_created_and_deleted_by_raw_calls_is_there_then_gone(
        make_adapter: Callable, ctl: Any) -> None:
    adapter = make_adapter("sim-fip")
    cloud = adapter.cloud
    flavor = adapter.catalog.flavor_for(adapter.provider.pools["main"].labels["small"]).id
    image = adapter.catalog.cloud_image_id(adapter.provider.cloud_images["cirros"])
    server_id = cloud.create_server("create server raw", {
        "name": "raw-1", "flavor_id": flavor, "image_id": image, "networks": "auto",
        "metadata": {"nodepool_node_id": "0000000001"}})
    server = cloud.get_server(server_id)
    assert server is not None and server["name"] == "raw-1"
    assert server["metadata"]["nodepool_node_id"] == "0000000001"
    cloud.delete_server("delete server raw", server_id)
    cloud.delete_server("delete server raw again", server_id)   # gone or going: no error


def test_no_proxy_from_the_environment_still_reaches_the_cloud_directly(
        make_adapter: Callable, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    adapter = make_adapter("sim-fip")
    adapter.list_instances()
    session = adapter.cloud.connection().session.session
    assert session.trust_env is False   # read once: not on every request


def test_the_environment_is_read_at_connect_and_a_new_connection_uses_its_proxy(
        make_adapter: Callable, clean_env: pytest.MonkeyPatch) -> None:
    adapter = make_adapter("sim-fip")
    adapter.list_instances()            # connected with no proxy
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")   # the discard port: refused
    adapter.list_instances()            # read at connect: this connection goes direct
    with pytest.raises(TransientError):
        make_adapter("sim-fip").list_instances()   # a new one goes through the proxy


def test_a_ca_bundle_from_the_environment_becomes_the_sessions_verify(
        make_adapter: Callable, clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    adapter = make_adapter("sim-fip")
    adapter.list_instances()
    session = adapter.cloud.connection().session
    assert session.verify == str(bundle)
    assert session.session.trust_env is False
