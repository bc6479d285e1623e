"""Fail a test when any thread logged an unexpected error during it (a pytest plugin).

An exception on a background thread fails no test by itself: kazoo's callback
and connection threads, executors, the scan thread and apscheduler's jobs
catch it and log it, or Python prints it and the thread dies. This plugin
makes each of those a failure of the test during which it happened:

* every log record at ERROR or above that carries a traceback (`exc_info`),
  from any logger, on any thread;
* every record at CRITICAL;
* every exception that ends a thread (`threading.excepthook`), and every
  "unraisable" exception (`sys.unraisablehook`: `__del__`, callbacks of gc).

A test that provokes such an error on purpose says so:

    @pytest.mark.expect_errors(r"Writing .* failed", logger="nodepool.launcher")

(a regular expression searched in the record's message and traceback text;
`logger` a logger name prefix). Records that match are allowed, others still
fail the test. A background thread may log just after its test ended: the
record is then charged to the test running at that moment, and its text
names the thread so the culprit can be found.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Caught:
    """One unexpected error: where it came from and its text with traceback."""

    source: str      # logger name, or "thread" / "unraisable"
    thread: str
    text: str

    def summary(self) -> str:
        return f"[{self.source} on thread {self.thread}]\n{self.text}"


class _Collector(logging.Handler):
    """Collects the records and exceptions this plugin fails tests for."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.caught: list[Caught] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        traced = bool(record.exc_info) and record.exc_info[0] is not None
        if not traced and record.levelno < logging.CRITICAL:
            return
        try:
            text = record.getMessage()
        except Exception:   # a bad format string is itself worth showing
            text = f"{record.msg!r} % {record.args!r}"
        if traced:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.add(Caught(record.name, record.threadName or "?", text))

    def add(self, caught: Caught) -> None:
        with self._guard:
            self.caught.append(caught)

    def take(self) -> list[Caught]:
        with self._guard:
            taken, self.caught = self.caught, []
        return taken


_collector = _Collector()


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    _collector.add(Caught("thread", args.thread.name if args.thread else "?", text))


def _unraisable_hook(unraisable) -> None:
    text = f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}\n"
    if unraisable.exc_type is not None:
        text += "".join(traceback.format_exception(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))
    _collector.add(Caught("unraisable", threading.current_thread().name, text))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "expect_errors(pattern, logger=None): this test provokes logged errors "
                   "matching `pattern` (regex) on purpose; plugins/errorwatch.py")
    logging.getLogger().addHandler(_collector)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # After every plugin's configure: pytest's own hooks would only warn; ours fail the test.
    threading.excepthook = _thread_hook
    sys.unraisablehook = _unraisable_hook


def _allowed(item: pytest.Item) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(mark.args[0], re.S), mark.kwargs.get("logger") or "")
            for mark in item.iter_markers("expect_errors")]


def _expected(caught: Caught, allowed: list[tuple[re.Pattern[str], str]]) -> bool:
    return any(pattern.search(caught.text) and caught.source.startswith(prefix)
               for pattern, prefix in allowed)


@pytest.fixture(autouse=True)
def _no_unexpected_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test (at teardown) with every unexpected error logged or raised during it."""
    earlier = _collector.take()   # from between tests (a module fixture's teardown...)
    yield
    caught = earlier + _collector.take()
    allowed = _allowed(request.node)
    unexpected = [c for c in caught if not _expected(c, allowed)]
    if unexpected:
        shown = "\n\n".join(c.summary() for c in unexpected[:5])
        more = f"\n\n... and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        pytest.fail(f"{len(unexpected)} unexpected error(s) on some thread during this test "
                    f"(mark it expect_errors if they are intended):\n\n{shown}{more}",
                    pytrace=False)
