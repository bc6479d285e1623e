"""Which config driver handles a provider's ``driver`` value: the installed driver plug-ins'."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.config.driverapi import DEFAULT_DRIVER, Driver
from nodepool.config.schema import BadValue
from nodepool.drivers.plugins import installed


def driver_for(raw: Mapping[str, Any]) -> Driver | None:
    """The driver of a providers[] entry, or None if it names no installed driver."""
    name = raw.get("driver", DEFAULT_DRIVER)
    plugin = installed().get(name) if isinstance(name, str) else None
    return plugin.config if plugin is not None else None


def validate_provider(raw: Any) -> Any:
    """voluptuous validator for one providers[] entry, dispatched on ``driver``."""
    if not isinstance(raw, dict):
        raise BadValue("a mapping", raw)
    driver = driver_for(raw)
    if driver is None:
        name = raw.get("driver", DEFAULT_DRIVER)
        if not isinstance(name, str):
            raise BadValue("a driver name (str)", name, path=["driver"],
                           hint=f"; installed drivers: {', '.join(installed().names())}")
        raise v.Invalid(installed().unknown(name), path=["driver"])
    return driver.schema(raw)
