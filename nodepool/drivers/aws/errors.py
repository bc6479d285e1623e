"""The one place EC2 errors become nodepool.errors: a table of AWS error codes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from botocore import exceptions as boto_exc

from nodepool.errors import (
    CapacityError,
    ConfigurationError,
    DriverError,
    LaunchFailure,
    QuotaError,
    TransientError,
)

# AWS error codes (the `Error.Code` of a response); anything else takes the caller's
# default: LaunchFailure for a create, TransientError for listings and deletes.
ERROR_CLASSES: Mapping[str, type[DriverError]] = {
    "InstanceLimitExceeded": QuotaError,
    "VcpuLimitExceeded": QuotaError,
    "MaxSpotInstanceCountExceeded": QuotaError,
    "VolumeLimitExceeded": QuotaError,
    "HostLimitExceeded": QuotaError,
    "InsufficientInstanceCapacity": CapacityError,
    "InsufficientHostCapacity": CapacityError,
    "InsufficientReservedInstanceCapacity": CapacityError,
    "SpotMaxPriceTooLow": CapacityError,
    "Unsupported": CapacityError,   # the instance type is not offered in this AZ
    "RequestLimitExceeded": TransientError,
    "Throttling": TransientError,
    "ThrottlingException": TransientError,
    "InternalError": TransientError,
    "ServiceUnavailable": TransientError,
    "Unavailable": TransientError,
    "InvalidAMIID.NotFound": ConfigurationError,
    "InvalidAMIID.Malformed": ConfigurationError,
    "InvalidKeyPair.NotFound": ConfigurationError,
    "InvalidSubnetID.NotFound": ConfigurationError,
    "InvalidGroup.NotFound": ConfigurationError,
    "InvalidInstanceType": ConfigurationError,
    "InvalidParameterValue": ConfigurationError,
    "AuthFailure": ConfigurationError,
    "UnauthorizedOperation": ConfigurationError,
    "InvalidClientTokenId": ConfigurationError,
}

# Codes that mean "it is gone": for deletes and lookups an answer, not an error.
TEMPLATE_NOT_FOUND = frozenset({"InvalidLaunchTemplateName.NotFoundException",
                                "InvalidLaunchTemplateId.NotFound"})
NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed",
                       "InvalidVolume.NotFound", "InvalidVolume.Malformed",
                       "InvalidHostID.NotFound", "InvalidHostId.NotFound",
                       "InvalidHostID.Malformed", "InvalidHostId.Malformed",
                       *TEMPLATE_NOT_FOUND})

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    boto_exc.EndpointConnectionError, boto_exc.ConnectionClosedError,
    boto_exc.ReadTimeoutError, boto_exc.ConnectTimeoutError, ConnectionError, TimeoutError,
)
CONFIG_TYPES: tuple[type[BaseException], ...] = (
    boto_exc.NoCredentialsError, boto_exc.ProfileNotFound, boto_exc.NoRegionError,
    boto_exc.PartialCredentialsError,
)


def error_code(error: BaseException) -> str | None:
    if isinstance(error, boto_exc.ClientError):
        return (error.response.get("Error") or {}).get("Code")
    return None


def retry_after(error: BaseException) -> float | None:
    """Seconds from a Retry-After header, when the endpoint sent one (delta or HTTP date)."""
    response: Any = getattr(error, "response", None) or {}
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def classify(error: BaseException, what: str,
             default: type[DriverError] = LaunchFailure) -> DriverError:
    """The taxonomy class of an exception raised by boto3 during `what`."""
    if isinstance(error, DriverError):
        return error
    code = error_code(error)
    if code is not None:
        message = (error.response.get("Error") or {}).get("Message", "")  # type: ignore[attr-defined]
        return classify_code(code, f"{what}: {code}: {message}", default, retry_after(error))
    if isinstance(error, CONFIG_TYPES):
        return ConfigurationError(f"{what}: {type(error).__name__}: {error}")
    if isinstance(error, TRANSIENT_TYPES) or default is TransientError:
        return TransientError(f"{what}: {type(error).__name__}: {error}")
    return default(f"{what}: {type(error).__name__}: {error}")


def classify_code(code: str, text: str, default: type[DriverError] = LaunchFailure,
                  retry: float | None = None) -> DriverError:
    """The taxonomy class of an AWS error code (raised, or listed in a CreateFleet answer)."""
    cls = ERROR_CLASSES.get(code, default)
    if cls is TransientError:
        return TransientError(text, retry_after=retry)
    return cls(text)


def is_not_found(error: BaseException) -> bool:
    return error_code(error) in NOT_FOUND
