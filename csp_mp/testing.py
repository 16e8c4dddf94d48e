"""Test tools: fake time, ``wait_all_blocked`` and leak checks; mirrors Go's
``testing/synctest`` and ``go.uber.org/goleak`` (the pytest plugin lives in
``csp_mp._testing.plugin`` and loads itself through the ``pytest11`` entry point).

(*) Fake time needs a runtime with one P.
"""

from ._testing.faketime import FakeClock as FakeClock
from ._testing.faketime import fake_time as fake_time
from ._testing.faketime import wait_all_blocked as wait_all_blocked
from ._testing.leaks import ignore_leaks as ignore_leaks

for _f in (fake_time, wait_all_blocked, ignore_leaks):
    _f.__module__ = "csp_mp.testing"
del _f

__all__ = ["FakeClock", "fake_time", "ignore_leaks", "wait_all_blocked"]
