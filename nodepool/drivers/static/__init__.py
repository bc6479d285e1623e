"""The static driver: hosts that already exist, lent to jobs slot by slot and never created or deleted."""

from nodepool.drivers.static.adapter import StaticAdapter

__all__ = ["StaticAdapter"]
