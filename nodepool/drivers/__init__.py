"""Drivers: the Adapter contract (adapter.py), plug-in discovery (plugins.py) and one
package per cloud kind; `adapter_for` builds a provider's Adapter from its driver's plug-in."""

from __future__ import annotations

from typing import Any

from nodepool.drivers.adapter import Adapter
from nodepool.drivers.plugins import installed


def adapter_for(provider: Any) -> Adapter:
    """Build the adapter of a provider's config value from its `driver` name."""
    plugin = installed().get(provider.driver)
    if plugin is None:
        raise ValueError(f"provider {provider.name}: {installed().unknown(provider.driver)}")
    return plugin.make_adapter(provider)
