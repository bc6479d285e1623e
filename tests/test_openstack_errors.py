"""The OpenStack classify() table on plain error responses; the rate limiter on a fixed clock."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Callable

import pytest
import requests
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as sdk_exc

from nodepool.drivers.openstack.errors import classify, classify_fault, retry_after
from nodepool.drivers.ratelimit import RateLimiter
from nodepool.errors import (
    CapacityError,
    ConfigurationError,
    LaunchFailure,
    QuotaError,
    TransientError,
)

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]


def http_error(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Exception:
    """The exception openstacksdk raises for this answer."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if body is not None else b""
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    try:
        sdk_exc.raise_from_response(response)
    except sdk_exc.SDKException as e:
        return e
    raise AssertionError("not an error status")


def nova(status: int, key: str, message: str, **headers: str) -> Exception:
    return http_error(status, {key: {"code": status, "message": message}}, headers)


def neutron(status: int, kind: str, message: str) -> Exception:
    return http_error(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


@pytest.mark.parametrize("error, expected", [
    (nova(403, "forbidden", "Quota exceeded for instances: Requested 1, but already used 10 of "
                            "10 instances"), QuotaError),
    (nova(403, "forbidden", "Policy doesn't allow os_compute_api:servers:create to be "
                            "performed."), ConfigurationError),
    (neutron(409, "OverQuota", "Quota exceeded for resources: ['floatingip']."), QuotaError),
    (neutron(409, "IpAddressGenerationFailure", "No more IP addresses available"), CapacityError),
    (neutron(409, "FloatingIPPortAlreadyAssociated", "already has a floating IP"), LaunchFailure),
    (nova(429, "overLimit", "This request was rate-limited."), TransientError),
    (nova(500, "computeFault", "Unexpected API Error."), TransientError),
    (nova(503, "serviceUnavailable", "try later"), TransientError),
    (nova(400, "badRequest", "Flavor 9 could not be found."), ConfigurationError),
    (nova(400, "badRequest", "Image 0c6e3f1a could not be found."), ConfigurationError),
    (nova(400, "badRequest", "Network 42 could not be found."), ConfigurationError),
    (nova(400, "badRequest", "Invalid key_name provided."), ConfigurationError),
    (nova(400, "badRequest", "The requested availability zone is not available"),
     ConfigurationError),
    (nova(400, "badRequest", "Something else entirely"), LaunchFailure),
    (http_error(401, {"error": {"code": 401, "message": "The request you have made requires "
                                                        "authentication."}}), ConfigurationError),
    (ks_exc.ConnectFailure("Connection refused"), TransientError),
    (ks_exc.ConnectTimeout("timed out"), TransientError),
    (ks_exc.DiscoveryFailure("Could not find versioned identity endpoints"), TransientError),
    (sdk_exc.ConfigException("Cloud nope was not found."), ConfigurationError),
    (ks_exc.EndpointNotFound("compute in RegionTwo"), ConfigurationError),
    (ValueError("a bug"), LaunchFailure),
])
def test_create_errors_are_classified_from_the_table(error: Exception, expected: type) -> None:
    classified = classify(error, "create server")
    assert type(classified) is expected, classified
    assert str(classified).startswith("create server")


def test_unmatched_errors_take_the_callers_default() -> None:
    odd = nova(400, "badRequest", "odd")
    assert type(classify(odd, "delete", TransientError)) is TransientError
    assert type(classify(ValueError("?"), "list", TransientError)) is TransientError
    assert type(classify(nova(403, "forbidden", "Quota exceeded for cores"), "delete",
                         TransientError)) is QuotaError


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    assert classify(nova(429, "overLimit", "slow", **{"Retry-After": "7"}), "x").retry_after == 7.0
    assert classify(nova(503, "x", "y", **{"Retry-After": "0.5"}), "x").retry_after == 0.5
    assert classify(nova(500, "computeFault", "boom"), "x").retry_after is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    response = requests.Response()
    response.headers["Retry-After"] = later
    assert 25 <= retry_after(response) <= 31
    response.headers["Retry-After"] = "soon"
    assert retry_after(response) is None


@pytest.mark.parametrize("message, expected", [
    ("No valid host was found. There are not enough hosts available.", CapacityError),
    ("Exceeded maximum number of retries. Exhausted all hosts available for retrying build "
     "failures for instance x.", CapacityError),
    ("Build of instance x aborted: Failed to allocate the network(s), not rescheduling.",
     LaunchFailure),
    ("", LaunchFailure),
])
def test_error_faults_are_classified(message: str, expected: type) -> None:
    assert type(classify_fault(message, "server s went to ERROR")) is expected


# -- the rate limiter ----------------------------------------------------------

class FixedClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_rate_limiter_hands_out_slots_interval_apart() -> None:
    clock = FixedClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep)
    assert [limiter.wait() for _ in range(3)] == [0.0, 0.5, 0.5]
    clock.now += 2.0  # idle time is not banked into a burst
    assert limiter.wait() == 0.0 and limiter.wait() == 0.5


def test_rate_zero_never_waits() -> None:
    clock = FixedClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    assert [limiter.wait() for _ in range(5)] == [0.0] * 5 and clock.slept == []


def test_every_api_call_of_the_adapter_is_spaced_by_the_providers_rate(
        make_adapter: Callable, ctl: Any) -> None:
    """Every call takes a slot of the provider's limiter first. The limiter runs on a
    clock of its own here, so the spacing it hands out is exact whatever the load."""
    adapter = make_adapter("sim-fip", rate=0.05)
    adapter.list_instances()  # connect: auth and discovery
    clock = [1000.0]
    slots: list[float] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    def now() -> float:
        return clock[0]
    limiter = RateLimiter(0.05, clock=now, sleep=sleep)
    waited = limiter.wait
    adapter.cloud.limiter.wait = lambda: (waited(), slots.append(now()))[0]
    ctl.clear_calls()
    adapter.quota_limits()    # limits, volume limits, flavors (the fresh listing is reused)
    adapter.list_instances()
    adapter.list_resources()  # floating IPs, then ports
    # The first block-storage call discovers its version inside the SDK: one call of ours.
    assert [r["route"] for r in ctl.requests()] == [
        "/compute/v2.1/limits", "/volume/v3", "/volume/v3/{project}/limits",
        "/compute/v2.1/flavors/detail", "/compute/v2.1/servers/detail",
        "/network/v2.0/floatingips", "/network/v2.0/ports"]
    assert len(slots) == 6
    gaps = [round(b - a, 6) for a, b in zip(slots, slots[1:], strict=False)]
    assert all(g >= 0.05 for g in gaps), gaps
