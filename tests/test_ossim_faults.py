"""Injected faults in the OpenStack simulator reach openstacksdk callers as a real cloud's would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions
from ossim import ControlClient, ControlError, Simulator, Timings, wait_for
from ossim.testing import connect, wait_for_gone, wait_for_status


# `conn` and `ctl` come from tests/plugins/ossim.py, on this module's own `sim`.
@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(timings=Timings(boot_delay=0.02, delete_delay=0.02)) as simulator:
        yield simulator


def boot(conn: Any, name: str = "node", flavor: str = "m1.small") -> Any:
    return conn.compute.create_server(name=name, flavor_id=conn.compute.find_flavor(flavor).id,
                                      image_id=conn.image.find_image("cirros-0.6.2").id, networks="auto")


def test_injected_create_error_ends_in_error_with_fault(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("create_error", count=1, message="No valid host was found. Exceeded max scheduling attempts")
    server = wait_for_status(conn, boot(conn, "broken").id)
    assert server.status == "ERROR"
    assert server.fault["code"] == 500
    assert server.fault["message"].startswith("No valid host was found")
    assert server.addresses == {}  # a failed build gives its ports back
    assert wait_for_status(conn, boot(conn, "fine").id).status == "ACTIVE"  # count=1 was used up


def test_create_timeout_leaves_server_in_build(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("create_timeout")
    stuck = boot(conn, "stuck")
    wait_for_status(conn, boot(conn, "later").id)  # created after, already ACTIVE
    server = conn.compute.get_server(stuck.id)
    assert (server.status, server.task_state) == ("BUILD", "scheduling")


def test_real_quota_exceeded_is_the_exact_nova_403(conn: Any, ctl: ControlClient) -> None:
    ctl.set_quotas(instances=1)
    boot(conn, "only-one")
    with pytest.raises(exceptions.ForbiddenException) as err:
        boot(conn, "one-too-many")
    assert err.value.response.json() == {"forbidden": {
        "code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"}}


def test_core_and_ram_quota(conn: Any, ctl: ControlClient) -> None:
    ctl.set_quotas(cores=3, ram=-1)
    boot(conn, "two-cores", flavor="m1.medium")
    with pytest.raises(exceptions.ForbiddenException,
                       match="Quota exceeded for cores: Requested 2, but already used 2 of 3 cores"):
        boot(conn, "two-more", flavor="m1.medium")


def test_injected_quota_fault_at_default_usage(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("create_quota")
    with pytest.raises(exceptions.ForbiddenException, match="Quota exceeded for instances: Requested 1, "
                                                           "but already used 10 of 10 instances"):
        boot(conn)


def test_injected_500_is_an_http_exception(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("create_500")
    with pytest.raises(exceptions.HttpException) as err:
        boot(conn)
    assert err.value.status_code == 500
    assert "computeFault" in err.value.response.json()
    assert ctl.state()["servers"] == []


def test_429_surfaces_without_retries_by_default(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("rate_limit", count=1, retry_after=0, path="/servers/detail$")
    with pytest.raises(exceptions.HttpException) as err:
        list(conn.compute.servers())
    assert err.value.status_code == 429
    assert err.value.response.headers["Retry-After"] == "0"
    assert list(conn.compute.servers()) == []


def test_sdk_retries_429_when_status_code_retries_is_set(sim: Simulator, ctl: ControlClient,
                                                         tmp_path: Path) -> None:
    retrying = connect(sim, str(tmp_path), status_code_retries=3)
    list(retrying.compute.servers())  # discovery first, so only the listing is counted below
    ctl.clear_calls()
    ctl.inject("rate_limit", count=2, retry_after=0, path="/servers/detail$")
    assert list(retrying.compute.servers()) == []
    assert ctl.count("GET /compute/v2.1/servers/detail") == 3


def test_image_api_retries_503_but_not_429_by_default(conn: Any, ctl: ControlClient) -> None:
    # openstacksdk's image proxy sets status_code_retries=5 for 503 only; compute and network retry nothing.
    ctl.inject("http_error", status=503, count=1, retry_after=0, path="^/image/v2/images$")
    assert conn.image.find_image("debian-12") is not None
    assert ctl.count("GET /image/v2/images") == 2
    ctl.inject("rate_limit", count=1, retry_after=0, path="^/image/v2/images$")
    with pytest.raises(exceptions.HttpException) as err:
        list(conn.image.images())
    assert err.value.status_code == 429


def test_rate_limit_by_rate_answers_429_over_the_rate(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("rate_limit", rate=0.001, burst=2, retry_after=0, path="/flavors")
    conn.compute.get_flavor("2")
    conn.compute.get_flavor("3")
    with pytest.raises(exceptions.HttpException) as err:
        conn.compute.get_flavor("4")
    assert err.value.status_code == 429


def test_delete_500_then_retry_succeeds(conn: Any, ctl: ControlClient) -> None:
    server = wait_for_status(conn, boot(conn).id)
    ctl.inject("delete_500")
    with pytest.raises(exceptions.HttpException) as err:
        conn.compute.delete_server(server.id)
    assert err.value.status_code == 500
    conn.compute.delete_server(server.id)
    wait_for_gone(conn, server.id)


def test_delete_hang_stays_deleting_until_released(conn: Any, ctl: ControlClient) -> None:
    hung, normal = wait_for_status(conn, boot(conn, "hung").id), wait_for_status(conn, boot(conn, "ok").id)
    ctl.inject("delete_hang")
    conn.compute.delete_server(hung.id)
    conn.compute.delete_server(normal.id)
    wait_for_gone(conn, normal.id)
    assert conn.compute.get_server(hung.id).task_state == "deleting"
    assert conn.compute.get_limits().absolute.instances_used == 1  # a deleting server still counts
    ctl.finish_delete(hung.id)
    wait_for_gone(conn, hung.id)


def test_delete_error_puts_server_in_error(conn: Any, ctl: ControlClient) -> None:
    server = wait_for_status(conn, boot(conn).id)
    ctl.inject("delete_error")
    conn.compute.delete_server(server.id)
    failed = wait_for_status(conn, server.id, ("ERROR",))
    assert "Failed to delete" in failed.fault["message"]
    conn.compute.delete_server(server.id)
    wait_for_gone(conn, server.id)


def test_deleted_window_shows_status_deleted_before_404(conn: Any, ctl: ControlClient) -> None:
    ctl.set_timings(delete_delay=0, deleted_window=0.5)
    server = wait_for_status(conn, boot(conn).id)
    conn.compute.delete_server(server.id)
    assert wait_for_status(conn, server.id, ("DELETED",)).vm_state == "deleted"
    wait_for_gone(conn, server.id)


def test_http_error_on_any_route(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("http_error", status=503, method="GET", path="/network/v2.0/ports$")
    with pytest.raises(exceptions.HttpException) as err:
        list(conn.network.ports())
    assert err.value.status_code == 503
    assert list(conn.network.ports()) == []


def test_latency_fault_delays_the_answer(conn: Any, ctl: ControlClient) -> None:
    ctl.inject("latency", seconds=0.2, path="/os-availability-zone")
    started = time.monotonic()
    list(conn.compute.availability_zones())
    assert time.monotonic() - started >= 0.2


def test_floating_ip_quota_is_neutrons_409(conn: Any, ctl: ControlClient) -> None:
    ctl.set_quotas(floating_ips=1)
    public = conn.network.find_network("public")
    conn.network.create_ip(floating_network_id=public.id)
    with pytest.raises(exceptions.ConflictException, match="Quota exceeded for resources: \\['floatingip'\\]"):
        conn.network.create_ip(floating_network_id=public.id)


def test_revoked_token_is_renewed_by_the_sdk(conn: Any, ctl: ControlClient) -> None:
    list(conn.compute.servers())
    ctl.clear_calls()
    ctl.revoke_tokens()
    assert list(conn.compute.servers()) == []
    assert ctl.count("POST /identity/v3/auth/tokens") == 1


def test_server_can_be_failed_after_it_was_active(conn: Any, ctl: ControlClient) -> None:
    server = wait_for_status(conn, boot(conn).id)
    ctl.force_status(server.id, "ERROR", "hypervisor lost")
    assert conn.compute.get_server(server.id).fault["message"] == "hypervisor lost"


def test_timings_change_at_run_time_and_reset_restores_them(conn: Any, ctl: ControlClient) -> None:
    ctl.set_timings(boot_delay=30)
    network_id = conn.network.find_network("private").id
    server = boot(conn)
    assert conn.compute.get_server(server.id).status == "BUILD"
    ctl.reset()
    assert ctl.config()["timings"]["boot_delay"] == 0.02
    assert conn.compute.find_server(server.id) is None
    assert conn.network.find_network("private").id == network_id  # ids a driver cached stay valid


def test_control_api_rejects_bad_input_with_reasons(ctl: ControlClient) -> None:
    with pytest.raises(ControlError, match="unknown fault kind 'explode'"):
        ctl.inject("explode")
    with pytest.raises(ControlError, match="http_error needs a status"):
        ctl.inject("http_error")
    with pytest.raises(ControlError, match="unknown timing 'warp'"):
        ctl.set_timings(warp=1)


def test_unsupported_microversion_is_406(conn: Any, ctl: ControlClient) -> None:
    response = conn.compute.get("/servers/detail", microversion="2.200")
    assert response.status_code == 406
    assert "maximum is 2.96" in response.json()["notAcceptable"]["message"]


def test_calls_from_threads_are_all_answered(conn: Any, sim: Simulator, ctl: ControlClient) -> None:
    import concurrent.futures
    ctl.set_quotas(instances=-1, cores=-1, ram=-1)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: boot(conn, f"par-{i}").id, range(24)))
    wait_for(lambda: all(s["status"] == "ACTIVE" for s in ctl.servers()), what="24 ACTIVE servers")
    assert len({s.id for s in conn.compute.servers()} & set(ids)) == 24
