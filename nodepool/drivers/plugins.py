"""Drivers as plug-ins: one DriverPlugin per driver, found once from the `nodepool.drivers`
entry points (built-ins included, from setup.cfg), so a package adds a driver by itself."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodepool.config.driverapi import Driver
    from nodepool.drivers.adapter import Adapter

GROUP = "nodepool.drivers"

log = logging.getLogger("nodepool.drivers")

AdapterFactory = Callable[[Any], "Adapter"]


@dataclasses.dataclass(frozen=True)
class DriverPlugin:
    """What a driver registers under the `nodepool.drivers` entry-point group.

    ``config`` validates and builds its providers[] entries (its name is the
    provider's ``driver`` value and must be the entry point's name);
    ``adapter`` builds a provider's Adapter from the provider's frozen value:
    a callable, or ``"module:attribute"`` naming one, imported only when a
    provider of this driver runs, so every installed driver's config can be
    validated, and other drivers run, without this driver's cloud SDK.
    """

    config: Driver
    adapter: str | AdapterFactory

    @property
    def name(self) -> str:
        return self.config.name

    def adapter_factory(self) -> AdapterFactory:
        """The callable that builds an Adapter (imports its module on first use)."""
        if not isinstance(self.adapter, str):
            return self.adapter
        module, _, attribute = self.adapter.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def make_adapter(self, provider: Any) -> Adapter:
        return self.adapter_factory()(provider)


@dataclasses.dataclass(frozen=True)
class LoadFailure:
    """A `nodepool.drivers` entry point that gave no usable driver, and why."""

    name: str           # the entry point's name (the driver it meant to add)
    value: str          # what it points at, "module:attribute"
    distribution: str   # the package that declares it, "name version"
    reason: str

    def __str__(self) -> str:
        return (f"driver entry point {self.name!r} = {self.value} of distribution "
                f"{self.distribution}: {self.reason}")


@dataclasses.dataclass(frozen=True)
class InstalledDrivers:
    """Every driver found, by name, and the entry points that failed to load."""

    plugins: Mapping[str, DriverPlugin]
    failures: tuple[LoadFailure, ...] = ()

    def get(self, name: str) -> DriverPlugin | None:
        return self.plugins.get(name)

    def names(self) -> list[str]:
        return sorted(self.plugins)

    def failure(self, name: str) -> LoadFailure | None:
        """Why the entry point of that name gave no driver (None: it did, or there is none)."""
        if name in self.plugins:
            return None
        return next((f for f in self.failures if f.name == name), None)

    def unknown(self, name: str) -> str:
        """What to tell someone who named a driver that is not installed."""
        installed = ", ".join(self.names()) or "none (is nodepool installed? pip install .)"
        failed = self.failure(name)
        if failed is not None:
            return f"driver {name!r} failed to load ({failed}); installed drivers: {installed}"
        return f"unknown driver {name!r}; installed drivers: {installed}"


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "(unknown distribution)"


def _load(ep: importlib.metadata.EntryPoint) -> DriverPlugin | str:
    """The entry point's DriverPlugin, or why it is not one."""
    try:
        plugin = ep.load()
    except Exception as e:  # a broken third-party package must not stop the others
        return f"cannot be loaded: {type(e).__name__}: {e}"
    if not isinstance(plugin, DriverPlugin):
        return (f"is a {type(plugin).__name__}, not a nodepool.drivers.plugins.DriverPlugin")
    if plugin.name != ep.name:
        return f"gives a driver named {plugin.name!r}; the entry point's name must be the same"
    return plugin


def discover(entry_points: Iterable[importlib.metadata.EntryPoint]) -> InstalledDrivers:
    """The drivers of these entry points; a failing one is recorded and logged, never raised."""
    plugins: dict[str, DriverPlugin] = {}
    sources: dict[str, str] = {}
    failures: list[LoadFailure] = []
    for ep in entry_points:
        dist = _distribution(ep)
        if ep.name in plugins:
            why: DriverPlugin | str = (f"ignored: distribution {sources[ep.name]} already "
                                       f"provides driver {ep.name!r}")
        else:
            why = _load(ep)
        if isinstance(why, DriverPlugin):
            plugins[ep.name] = why
            sources[ep.name] = dist
        else:
            failures.append(LoadFailure(ep.name, ep.value, dist, why))
    for failure in failures:
        log.warning("%s", failure)
    return InstalledDrivers(MappingProxyType(plugins), tuple(failures))


@functools.cache
def installed() -> InstalledDrivers:
    """The drivers installed in this Python environment, found once per process."""
    return discover(importlib.metadata.entry_points(group=GROUP))
