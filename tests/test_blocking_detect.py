"""Hub-blocking detection: a goroutine that blocks its P in a foreign call is reported once per
call site with ``BlockingWarning``, naming the call and carrying the goroutine's stack."""

from __future__ import annotations

import time
import warnings

import pytest

import csp_mp
from csp_mp._patch import unpatch_blocking

BLOCK = 0.3  # well above the 0.1 s threshold


@pytest.fixture(autouse=True)
def _unpatched():
    unpatch_blocking()  # these tests need the real, blocking time.sleep


def _blocker(times: int) -> None:
    for _ in range(times):
        time.sleep(BLOCK)  # the reported call site


BLOCKER_LINE = _blocker.__code__.co_firstlineno + 2


def _run_recording(main) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        csp_mp.run(main, procs=1)
    return [w for w in got if issubclass(w.category, csp_mp.BlockingWarning)]


def test_reported_once_per_call_site_with_its_stack():
    def main() -> None:
        wg = csp_mp.WaitGroup()
        wg.go(_blocker, 3)
        wg.wait()

    got = _run_recording(main)
    assert len(got) == 1
    w = got[0]
    text = str(w.message)
    assert "time.sleep" in text
    assert w.filename == __file__
    assert w.lineno == BLOCKER_LINE
    assert f'File "{__file__}", line {BLOCKER_LINE}, in _blocker' in text
    assert "goroutine" in text


def test_each_call_site_is_reported():
    def other_site() -> None:
        time.sleep(BLOCK)

    def main() -> None:
        wg = csp_mp.WaitGroup()
        wg.go(_blocker, 2)
        wg.go(other_site)
        wg.wait()

    got = _run_recording(main)
    assert sorted(w.lineno for w in got) == sorted(
        [BLOCKER_LINE, other_site.__code__.co_firstlineno + 1])


def test_busy_cpu_goroutine_is_not_reported(monkeypatch):
    monkeypatch.setenv("CSP_MP_PREEMPT", "0")  # it then keeps the P for the whole loop

    def busy() -> None:
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:
            pass

    def main() -> None:
        wg = csp_mp.WaitGroup()
        wg.go(busy)
        wg.wait()

    assert _run_recording(main) == []


def test_parked_goroutines_are_not_reported():
    def main() -> None:
        csp_mp.sleep(0.3)
        csp_mp.blocking(time.sleep, 0.3)  # on an M thread: the P stays free

    assert _run_recording(main) == []


def test_pytest_warns_sees_it():
    def main() -> None:
        _blocker(1)

    with pytest.warns(csp_mp.BlockingWarning, match=r"time\.sleep"):
        csp_mp.run(main, procs=1)


def test_warning_as_error_fails_the_program():
    def main() -> None:
        _blocker(1)

    with warnings.catch_warnings():
        warnings.simplefilter("error", csp_mp.BlockingWarning)
        with pytest.raises(csp_mp.Panic) as info:
            csp_mp.run(main, procs=1)
    assert isinstance(info.value.__cause__, csp_mp.BlockingWarning)
