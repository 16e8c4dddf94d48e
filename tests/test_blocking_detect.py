"""Hub-blocking detection: a goroutine that blocks its P in a foreign call is reported once per
call site with ``BlockingWarning``, naming the call and carrying the goroutine's stack."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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


STARVED_LOOPS = textwrap.dedent("""
    import os, signal, sys, time, warnings
    import csp_mp

    cpu, load = int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]]

    def starve_this_thread() -> None:
        # Linux: affinity and nice are per thread; sysmon's thread keeps its CPU and samples on
        # time while the hub thread gets a sliver of a CPU the load processes keep busy
        os.sched_setaffinity(0, {cpu})
        os.nice(19)

    def bytecode_loop() -> None:  # the reported shape: a loop of plain bytecode
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            k = 27
            while k != 1:
                k = k // 2 if k % 2 == 0 else 3 * k + 1

    def call_loop() -> None:  # most of its time just after a C call returned
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass

    def main() -> None:
        starve_this_thread()
        wg = csp_mp.WaitGroup()
        wg.go(bytecode_loop)
        wg.wait()
        wg.go(call_loop)
        wg.wait()
        for pid in load:  # the starved thread cannot be un-niced: end the load instead
            os.kill(pid, signal.SIGKILL)

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        csp_mp.run(main, procs=1)
    print([str(w.message) for w in got if issubclass(w.category, csp_mp.BlockingWarning)])
""")

LOAD = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nprint(flush=True)\n" \
       "while True:\n    pass\n"


def test_a_cpu_loop_starved_by_a_loaded_machine_is_not_reported():
    """A thread that waits for a CPU is not blocked: three busy processes share one CPU with
    the hub thread, niced so that it gets a sliver of it (well under 5 % of the time)."""
    cpu = min(os.sched_getaffinity(0))
    load = [subprocess.Popen([sys.executable, "-c", LOAD, str(cpu)], stdout=subprocess.PIPE)
            for _ in range(3)]
    try:
        for p in load:
            assert p.stdout is not None and p.stdout.readline() == b"\n"  # running, pinned
        env = dict(os.environ, CSP_MP_PREEMPT="0")  # each loop keeps the P to itself
        r = subprocess.run([sys.executable, "-c", STARVED_LOOPS, str(cpu),
                            *(str(p.pid) for p in load)],
                           capture_output=True, text=True, timeout=120, env=env)
    finally:
        for p in load:
            p.kill()
            p.wait()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


SLEEP_UNDER_C = textwrap.dedent("""
    import time, warnings
    import csp_mp
    from csp_mp._patch import unpatch_blocking

    unpatch_blocking()

    def napper():
        time.sleep(0.3)

    def main():
        wg = csp_mp.WaitGroup()
        wg.go(napper)
        wg.wait()

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        csp_mp.run(main, procs=1)
    for w in got:
        if issubclass(w.category, csp_mp.BlockingWarning):
            print(w.filename, w.lineno, str(w.message).splitlines()[0])
""")


def test_reported_under_python_c_naming_the_call():
    """Without source lines (``python -c``) the call is named from the bytecode."""
    r = subprocess.run([sys.executable, "-c", SLEEP_UNDER_C], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    assert lines[0].startswith("<string> 9 "), lines[0]
    assert "in a call to time.sleep (<string>:9)" in lines[0], lines[0]
