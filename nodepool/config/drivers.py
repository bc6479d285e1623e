"""The driver table: which config driver handles a provider's ``driver`` value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.config import openstack, static
from nodepool.config.driverapi import DEFAULT_DRIVER, Driver
from nodepool.config.schema import describe

# Adding a driver (aws, ...) means writing its module like openstack.py and
# listing its DRIVER here.
DRIVERS: Mapping[str, Driver] = {d.name: d for d in (openstack.DRIVER, static.DRIVER)}


def driver_for(raw: Mapping[str, Any]) -> Driver | None:
    """The driver of a providers[] entry, or None if it names no known driver."""
    name = raw.get("driver", DEFAULT_DRIVER)
    return DRIVERS.get(name) if isinstance(name, str) else None


def validate_provider(raw: Any) -> Any:
    """voluptuous validator for one providers[] entry, dispatched on ``driver``."""
    if not isinstance(raw, dict):
        raise v.Invalid(f"expected a mapping, got {describe(raw)}")
    driver = driver_for(raw)
    if driver is None:
        name = raw.get("driver")
        shown = repr(name) if isinstance(name, str) else describe(name)
        known = ", ".join(sorted(DRIVERS))
        raise v.Invalid(f"unknown driver {shown}; known drivers: {known}",
                        path=["driver"])
    return driver.schema(raw)
