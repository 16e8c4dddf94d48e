"""A pytest plugin: faulthandler's thread dump follows each test's own timeout.

pytest arms ``faulthandler.dump_traceback_later`` with the global ``faulthandler_timeout`` for
every test, so a passing test whose ``@pytest.mark.timeout`` is longer than that value printed a
dump of every thread. Here the dump is re-armed for the test's own timeout plus
``MARGIN``: it prints only for a test that outlived its timeout (pytest-timeout has failed it by
then) and hangs on. A test with no timeout keeps the global value.
"""

from __future__ import annotations

import faulthandler
import os

import pytest
from _pytest.faulthandler import fault_handler_stderr_fd_key

MARGIN = 10.0  # seconds past a test's timeout before its threads are dumped


def limit_of(item: pytest.Item) -> float:
    """The test's pytest-timeout limit in seconds (marker, then option, environment, ini); 0
    for none."""
    marker = item.get_closest_marker("timeout")
    value = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if value is None:
        value = item.config.getvalue("timeout")
    if value is None:
        value = os.environ.get("PYTEST_TIMEOUT") or item.config.getini("timeout")
    return float(value or 0)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Re-arm the dump that pytest armed for this test at its own timeout plus ``MARGIN``
    (pytest cancels it when the test ends)."""
    limit = limit_of(item)
    armed = float(item.config.getini("faulthandler_timeout") or 0)
    if limit <= 0 or armed <= 0 or fault_handler_stderr_fd_key not in item.config.stash:
        return
    faulthandler.dump_traceback_later(limit + MARGIN,
                                      file=item.config.stash[fault_handler_stderr_fd_key])
