"""Drivers: the Adapter contract (adapter.py) and one package per cloud kind."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from nodepool.drivers.adapter import Adapter

# Imported lazily so that a launcher without boto3 (say) still runs OpenStack.
_BUILTIN = {
    "openstack": "nodepool.drivers.openstack:OpenStackAdapter",
    "static": "nodepool.drivers.static:StaticAdapter",
}

AdapterFactory = Callable[[Any], Adapter]


def adapter_for(provider: Any) -> Adapter:
    """Build the adapter of a provider's config value from its `driver` name."""
    target = _BUILTIN.get(provider.driver)
    if target is None:
        raise ValueError(f"provider {provider.name}: no adapter for driver {provider.driver!r}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(provider)
