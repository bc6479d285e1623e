"""MemoryAdapter: nodepool's reference FakeAdapter over an in-memory cloud of its own."""

from __future__ import annotations

from typing import Any

from nodepool.testing.fake_adapter import FakeAdapter


class MemoryAdapter(FakeAdapter):
    """One in-memory cloud per provider lease (servers come up at once)."""

    def __init__(self, provider: Any):
        super().__init__(provider)
