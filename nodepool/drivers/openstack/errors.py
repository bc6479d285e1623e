"""The one place OpenStack errors become nodepool.errors: tables of statuses, codes, faults."""

from __future__ import annotations

import dataclasses
import email.utils
import re
import time
from typing import Any, Collection

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as sdk_exc

from nodepool.errors import (
    CapacityError,
    ConfigurationError,
    DriverError,
    LaunchFailure,
    QuotaError,
    TransientError,
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """An HTTP error matches when every given field matches.

    `code` is the error's kind as the service names it (Nova's body key such as
    `forbidden`, Neutron's `NeutronError.type` such as `OverQuota`). `message`
    is searched in the error text only where a service gives nothing better:
    Nova answers policy refusals and quota refusals both with a bare 403.
    """

    cls: type[DriverError]
    status: Collection[int] = ()
    code: str | None = None
    message: str | None = None

    def matches(self, status: int | None, code: str | None, text: str) -> bool:
        if self.status and status not in self.status:
            return False
        if self.code is not None and code != self.code:
            return False
        return self.message is None or re.search(self.message, text, re.IGNORECASE) is not None


# First match wins. Anything unmatched takes the caller's default: LaunchFailure
# for a create step, TransientError for listings and deletes (never drop a record).
HTTP_RULES: tuple[Rule, ...] = (
    Rule(QuotaError, status=(403, 413), message=r"quota exceeded"),          # Nova
    Rule(QuotaError, status=(409,), code="OverQuota"),                      # Neutron (FIPs, ports)
    Rule(CapacityError, status=(409,), code="IpAddressGenerationFailure"),  # network is full
    Rule(TransientError, status=(408, 429)),
    Rule(TransientError, status=range(500, 600)),
    Rule(ConfigurationError, status=(400,),
         message=r"(flavor|image|network|port) \S+ could not be found"
                 r"|invalid key_name|availability zone|block device mapping is invalid"
                 r"|invalid input for field/attribute (metadata|security_groups|user_data)"),
    Rule(ConfigurationError, status=(400,), code="NetworkNotFound"),
    Rule(ConfigurationError, status=(401,)),         # credentials refused
    Rule(ConfigurationError, status=(403,)),         # policy: this account may not do it
)

# What Nova writes in an ERROR server's fault when the scheduler found no room.
FAULT_RULES: tuple[Rule, ...] = (
    Rule(CapacityError, message=r"no valid host|exhausted all hosts|exceeded maximum number of "
                                r"retries|insufficient compute resources"),
    Rule(QuotaError, message=r"quota exceeded"),
)

# Errors that are not HTTP answers.
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ks_exc.ConnectionError,      # refused, reset, timed out (api_timeout), TLS hiccups
    ks_exc.DiscoveryFailure,     # version discovery could not reach the service
    ks_exc.RetriableConnectionFailure,
    ConnectionError, TimeoutError,
)
CONFIG_TYPES: tuple[type[BaseException], ...] = (
    sdk_exc.ConfigException,     # no such cloud in clouds.yaml, service disabled
    sdk_exc.EndpointNotFound,
    ks_exc.EndpointNotFound,     # the catalog has no such service in this region
    ks_exc.AuthPluginException,  # missing auth options, unknown auth type
)


def retry_after(response: Any) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), None if absent."""
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_and_response(error: BaseException) -> tuple[int | None, Any]:
    if isinstance(error, sdk_exc.HttpException):
        return error.status_code, error.response
    if isinstance(error, ks_exc.HttpError):
        return error.http_status, error.response
    return None, None


def error_code(response: Any) -> tuple[str | None, str]:
    """(the service's error kind, its message) from an OpenStack error body."""
    try:
        body = response.json()
    except Exception:
        return None, ""
    if not isinstance(body, dict) or not body:
        return None, ""
    neutron = body.get("NeutronError")
    if isinstance(neutron, dict):
        return neutron.get("type"), str(neutron.get("message") or "")
    key, inner = next(iter(body.items()))  # Nova: {"forbidden": {"code": 403, "message": ...}}
    if isinstance(inner, dict):
        return key, str(inner.get("message") or "")
    return None, str(body.get("message") or "")


def classify(error: BaseException, what: str,
             default: type[DriverError] = LaunchFailure) -> DriverError:
    """The taxonomy class of an exception raised by openstacksdk or keystoneauth during `what`."""
    if isinstance(error, DriverError):
        return error
    status, response = _status_and_response(error)
    if status is not None:
        code, body_message = error_code(response)
        details = getattr(error, "details", None) or body_message or str(error)
        text = f"{body_message} {details}"
        cls = next((r.cls for r in HTTP_RULES if r.matches(status, code, text)), default)
        message = f"{what}: HTTP {status}{f' {code}' if code else ''}: {details}"
        if cls is TransientError:
            return TransientError(message, retry_after=retry_after(response))
        return cls(message)
    if isinstance(error, CONFIG_TYPES):
        return ConfigurationError(f"{what}: {type(error).__name__}: {error}")
    if isinstance(error, TRANSIENT_TYPES):
        return TransientError(f"{what}: {type(error).__name__}: {error}")
    if default is TransientError:
        return TransientError(f"{what}: {type(error).__name__}: {error}")
    return default(f"{what}: {type(error).__name__}: {error}")


def classify_fault(message: str, what: str) -> DriverError:
    """The class of a server that went to ERROR, from Nova's fault message."""
    cls = next((r.cls for r in FAULT_RULES if r.matches(None, None, message)), LaunchFailure)
    return cls(f"{what}: {message or 'no fault given'}")


def is_not_found(error: BaseException) -> bool:
    """A 404: for deletes and lookups, gone is an answer, not an error."""
    status, _ = _status_and_response(error)
    return status == 404
