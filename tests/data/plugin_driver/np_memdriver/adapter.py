"""MemoryAdapter: nodepool's reference FakeAdapter over an in-memory cloud of its own."""

from __future__ import annotations

from typing import Any

from nodepool.testing.fake_adapter import FakeAdapter, FakeCloud


class MemoryAdapter(FakeAdapter):
    """One in-memory cloud per adapter unless given one (the contract suite shares one
    between two adapters: a restarted launcher)."""

    def __init__(self, provider: Any, cloud: FakeCloud | None = None):
        super().__init__(provider, cloud)
