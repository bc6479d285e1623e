"""The suite's error watch (tests/plugins/errorwatch.py) fails tests for errors on any thread."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

INNER = '''
import logging, threading
import pytest

log = logging.getLogger("some.background.part")

def on_thread(fn):
    t = threading.Thread(target=fn, name="worker-x")
    t.start()
    t.join()

def test_quiet():
    log.error("an error without a traceback is not the watch's business")

def test_traceback_logged_on_a_thread():
    def work():
        try:
            {}["missing"]
        except KeyError:
            log.exception("callback failed")
    on_thread(work)

def test_thread_dies_of_an_exception():
    def work():
        raise RuntimeError("thread died")
    on_thread(work)

@pytest.mark.expect_errors(r"callback failed", logger="some.background")
def test_declared_error_is_allowed():
    test_traceback_logged_on_a_thread()

@pytest.mark.expect_errors(r"something else")
def test_declaring_another_error_does_not_allow_this_one():
    test_traceback_logged_on_a_thread()

def test_critical_fails_without_a_traceback():
    log.critical("giving up")
'''


def test_errors_on_threads_fail_the_test_they_happened_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "plugins.errorwatch", "-p", "no:cacheprovider",
                                           f"--rootdir={pytester.path}", "-o",
                                           f"pythonpath={TESTS}")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("errors")) == (6, 4), result.stdout.str()
    out = result.stdout.str()
    for name in ("test_traceback_logged_on_a_thread", "test_thread_dies_of_an_exception",
                 "test_declaring_another_error_does_not_allow_this_one",
                 "test_critical_fails_without_a_traceback"):
        assert f"ERROR at teardown of {name}" in out
    assert "[some.background.part on thread worker-x]" in out
    assert "KeyError: 'missing'" in out
    assert "[thread on thread worker-x]" in out and "RuntimeError: thread died" in out
