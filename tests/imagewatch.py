"""Waiting on image records as facts: a kazoo TreeCache on /nodepool/images wakes the check."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.cache import TreeCache

IMAGES = "/nodepool/images"


class ImageWatch:
    """Re-evaluates a condition on every change below /nodepool/images (no fixed sleeps)."""

    def __init__(self, kazoo: KazooClient):
        self.kazoo = kazoo
        kazoo.ensure_path(IMAGES)
        self.changed = threading.Event()
        self.cache = TreeCache(kazoo, IMAGES)
        self.cache.listen(lambda event: self.changed.set())
        self.cache.start()

    def close(self) -> None:
        self.cache.close()

    def wait(self, condition: Callable[[], Any], timeout: float = 30.0,
             what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            value = condition()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what} not reached within {timeout}s; images: "
                                     f"{json.dumps(self.tree(), indent=1)}")
            # A change wakes us at once; the bounded wait also covers facts outside the tree.
            self.changed.wait(min(left, 0.5))

    def builds(self, image: str) -> dict[str, dict]:
        found = {}
        base = f"{IMAGES}/{image}/builds"
        for child in _children(self.kazoo, base):
            if child != "lock":
                data = _data(self.kazoo, f"{base}/{child}")
                if data is not None:
                    found[child] = data
        return found

    def uploads(self, image: str, provider: str) -> dict[tuple[str, str], dict]:
        found = {}
        for build in self.builds(image):
            base = f"{IMAGES}/{image}/builds/{build}/providers/{provider}/images"
            for child in _children(self.kazoo, base):
                if child != "lock":
                    data = _data(self.kazoo, f"{base}/{child}")
                    if data is not None:
                        found[(build, child)] = data
        return found

    def tree(self) -> dict:
        out = {}
        for image in _children(self.kazoo, IMAGES):
            out[image] = {b: d.get("state") for b, d in self.builds(image).items()}
        return out


def _children(kazoo: KazooClient, path: str) -> list[str]:
    from kazoo.exceptions import NoNodeError
    try:
        return sorted(kazoo.get_children(path))
    except NoNodeError:
        return []


def _data(kazoo: KazooClient, path: str) -> dict | None:
    from kazoo.exceptions import NoNodeError
    try:
        raw, _ = kazoo.get(path)
    except NoNodeError:
        return None
    return json.loads(raw) if raw else None


@pytest.fixture
def watch(zk_client: Any) -> Iterator[ImageWatch]:
    """An ImageWatch on the test's ZooKeeper chroot, closed after the test."""
    w = ImageWatch(zk_client)
    yield w
    w.close()
