"""One provider's boto3 EC2 client, made once and lazily; every call rate-limited, classified."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, TypeVar

import boto3
import botocore.config

from nodepool.drivers.aws.errors import classify, is_not_found
from nodepool.drivers.ratelimit import RateLimiter, guarded_call
from nodepool.errors import DriverError, TransientError

log = logging.getLogger("nodepool.drivers.aws")

T = TypeVar("T")

# The core owns backoff (TransientError.retry_after): botocore must not retry or sleep.
# The endpoint comes from the standard AWS configuration (AWS_ENDPOINT_URL_EC2,
# AWS_ENDPOINT_URL or the profile's endpoint_url), so configs stay Nodepool's.
CLIENT_CONFIG = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                       connect_timeout=10, read_timeout=60)
PAGE_SIZE = 1000


class Ec2:
    """The provider's clients (ec2, service-quotas) and the one door every call goes through."""

    def __init__(self, provider: Any, fence: Callable[[], None] = lambda: None,
                 observe: Callable[[str, float, str | None], None] = lambda *_: None):
        self.provider = provider
        self.fence = fence
        self.observe = observe
        self.limiter = RateLimiter(getattr(provider, "rate", 0.0))
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def client(self, service: str = "ec2") -> Any:
        client = self._clients.get(service)
        if client is not None:
            return client
        with self._lock:   # boto3 sessions are not thread-safe; clients are
            if service not in self._clients:
                session = boto3.session.Session(profile_name=self.provider.profile_name,
                                                region_name=self.provider.region_name)
                self._clients[service] = session.client(service, config=CLIENT_CONFIG)
            return self._clients[service]

    def call(self, what: str, fn: Callable[[Any], T], *, service: str = "ec2",
             default: type[DriverError] = TransientError, not_found: Any = ...) -> T:
        """Run one API call under the rate limit; errors come out classified.

        `not_found`, when given, is returned for a "NotFound" error code instead of raising.
        """
        return guarded_call(self.limiter, self.fence, self.observe, what,
                            lambda: fn(self.client(service)), classify, is_not_found,
                            f"provider {self.provider.name}", default, not_found)

    def describe_instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every instance matching `filters`, one call per page of 1,000."""
        instances: list[dict[str, Any]] = []
        args: dict[str, Any] = {"Filters": filters, "MaxResults": PAGE_SIZE}
        while True:
            page = self.call("describe instances", lambda c: c.describe_instances(**args))
            for reservation in page.get("Reservations") or []:
                instances.extend(reservation.get("Instances") or [])
            token = page.get("NextToken")
            if not token:
                return instances
            args["NextToken"] = token

    def describe_volumes(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        volumes: list[dict[str, Any]] = []
        args: dict[str, Any] = {"Filters": filters, "MaxResults": 500}
        while True:
            page = self.call("describe volumes", lambda c: c.describe_volumes(**args))
            volumes.extend(page.get("Volumes") or [])
            token = page.get("NextToken")
            if not token:
                return volumes
            args["NextToken"] = token
