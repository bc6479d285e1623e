"""The shared listing is taken only while a machine waits on the cloud."""

from __future__ import annotations

import logging
import time
import types
from concurrent.futures import Future

from nodepool.launcher.cloudview import CloudView
from nodepool.launcher.tuning import DEFAULT


class Scope:
    """What CloudView uses of a ProviderScope; calls run at once and are counted."""

    def __init__(self):
        self.tuning = DEFAULT
        self.name = "p1"
        self.log = logging.getLogger("test.cloudview")
        self.listings = 0
        self.adapter = types.SimpleNamespace(list_instances=self._list)

    def _list(self):
        self.listings += 1
        return []

    def call(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def wake(self) -> None:
        pass


def view_with_a_listing(waits: list) -> tuple[CloudView, Scope]:
    scope = Scope()
    view = CloudView(scope, reads_limits=False)
    view.follow_waits(lambda: list(waits))
    waits.append(("wait-active", time.monotonic()))
    view.want_listing()
    view.act(time.monotonic())   # the first listing is due at once
    view.sync()
    assert scope.listings == 1 and view.listing is not None
    return view, scope


def test_a_listing_asked_for_by_a_wait_that_goes_on_is_taken_when_due():
    waits: list = []
    view, scope = view_with_a_listing(waits)
    view.want_listing()
    due = view.listing_due()
    assert due is not None and view.timers() == [due]
    view.act(due)
    assert scope.listings == 2


def test_a_listing_asked_for_by_a_wait_that_ended_is_not_taken():
    # A machine asks for the next listing when its step is sent; the step ends the wait.
    waits: list = []
    view, scope = view_with_a_listing(waits)
    view.want_listing()
    waits.clear()
    assert view.listing_due() is None
    assert view.timers() == []              # no pass is woken for it
    view.act(time.monotonic() + 60)
    assert scope.listings == 1
    waits.append(("wait-gone", time.monotonic()))   # a later wait still gets its listing
    view.want_listing()
    view.act(time.monotonic() + 60)
    assert scope.listings == 2
