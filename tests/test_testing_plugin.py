"""The pytest plugin (loaded through the pytest11 entry point): the csp_mp marker, the
csp_procs fixture, goleak-style leak checks and --csp-mp-leaks, run in a nested pytest."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

HEADER = """
import pytest
import csp_mp
from csp_mp import Chan, go, context, sleep, runtime
from csp_mp.testing import ignore_leaks, wait_all_blocked
"""


def _run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=HEADER + body)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args)


def test_marker_runs_the_test_as_the_main_goroutine(pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
@pytest.mark.csp_mp
def test_one_p(csp_procs):
    assert csp_procs == 1
    assert runtime.current_p() == 0 and runtime.num_goroutine() == 1
    ch = Chan()
    go(ch.send, 42)
    assert ch.recv() == 42

@pytest.mark.csp_mp(procs=2)
def test_two_ps(csp_procs):
    assert csp_procs == 2 and runtime.gomaxprocs() == 2
    out = Chan(4)
    for i in range(4):
        go(out.send, i)
    assert sorted(out.recv() for _ in range(4)) == [0, 1, 2, 3]

@pytest.mark.parametrize("csp_procs", [1, 2])
@pytest.mark.csp_mp
def test_parametrized(csp_procs):
    assert runtime.gomaxprocs() == csp_procs

@pytest.mark.csp_mp(fake_time=True)
def test_fake_time():
    ctx, cancel = context.with_timeout(context.background(), 30)
    ctx.done().recv()
    assert isinstance(ctx.err(), context.DeadlineExceeded)
    cancel()
""")
    res.assert_outcomes(passed=5)


def test_a_leaking_test_fails_with_function_and_wait_reason(pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
def stuck_forever(ch):
    ch.recv()

@pytest.mark.csp_mp
def test_leaks():
    go(stuck_forever, Chan())
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([
        "*found 1 unexpected goroutine still alive after the test*",
        "goroutine * ?chan receive? on P0: test_inner.stuck_forever",
        "*line 7, in stuck_forever*",
        "created by test_inner.test_leaks in goroutine 1",
        "\t*test_inner.py:11",
        "*ignore_leaks('test_inner.stuck_forever')*",
    ])
    # head, frame, exemption: once each in the report (the short summary repeats the message,
    # whole when pytest sees CI set)
    report = res.stdout.str().split("short test summary info")[0]
    assert report.count("stuck_forever") == 3, report


def test_leaked_goroutines_stuck_at_the_same_place_are_one_entry(
        pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
def stuck_forever(ch):
    ch.recv()

@pytest.mark.csp_mp
def test_leaks():
    ch = Chan()
    for _ in range(4):
        csp_mp.go_local(stuck_forever, ch)
    go(stuck_forever, Chan())
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([
        "*found 5 unexpected goroutines still alive after the test*",
        "4 goroutines ?chan receive? on P0: test_inner.stuck_forever (2, 3, 4, 5)",
        "*line 7, in stuck_forever*",
        "created by test_inner.test_leaks in goroutine 1",
        "\t*test_inner.py:13",
        "goroutine 6 ?chan receive? on P0: test_inner.stuck_forever",
        "*line 7, in stuck_forever*",
        "created by test_inner.test_leaks in goroutine 1",
        "\t*test_inner.py:14",
    ])


@pytest.mark.parametrize("debug", ["0", "1"])
def test_a_failing_test_shows_its_own_frames_only(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  debug: str) -> None:
    monkeypatch.setenv("CSP_MP_DEBUG", debug)
    res = _run(pytester, """
@pytest.mark.csp_mp
def test_fails():
    ch = Chan(1)
    ch.send(1)
    assert ch.recv() == 2

@pytest.mark.csp_mp
def test_deadlocks():
    Chan().recv()
""")
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    assert "assert 1 == 2" in out and "DeadlockError" in out, out
    runtime_files = re.findall(r"csp_mp/\w+(?:/\w+)*\.py:\d+", out)
    if debug == "1":
        assert runtime_files, out  # CSP_MP_DEBUG=1 keeps the runtime's frames
    else:
        assert not runtime_files, out  # no plugin.py, _run.py, chan.py or hub.py frame


def test_a_leak_on_another_p_is_reported(pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
def parked(ch):
    ch.recv()

@pytest.mark.csp_mp(procs=2)
def test_leaks_on_p1():
    ch = Chan()
    started = Chan()
    go(lambda: (started.send(runtime.current_p()), parked(ch)))
    started.recv()
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["goroutine * ?chan receive? on P*: test_inner.test_leaks_on_p1.*"])


def test_shared_objects_a_test_leaves_live_fail_it(pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
from csp_mp import Mutex
from csp_mp.atomic import Int64

KEPT = []

def use(done, ch, n, mu):
    with mu:
        n.add(1)
    done.send(runtime.current_p())

def share_on_p1(*objs):
    done = Chan(1)
    while True:  # until a goroutine that got them ran on P1
        go(use, done, *objs)
        if done.recv() == 1:
            return

@pytest.mark.csp_mp(procs=2)
def test_keeps_shared_objects():
    ch, n, mu = Chan(1), Int64(0), Mutex()
    share_on_p1(ch, n, mu)
    KEPT.append((ch, n, mu))

@pytest.mark.csp_mp(procs=2)
def test_drops_them():
    ch, n, mu = Chan(1), Int64(0), Mutex()
    share_on_p1(ch, n, mu)
""")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines([
        "*test_keeps_shared_objects*",
        "*shared objects made by the test still live after it*: 1 chan, 1 int64, 1 sema*",
    ])


def test_goroutines_that_end_in_time_and_ignored_ones_pass(pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
def known_daemon(ch):
    ch.recv()

@pytest.mark.csp_mp
def test_finishing():
    go(sleep, 0.05)   # still asleep when the body returns, ends while the check waits

@pytest.mark.csp_mp
def test_ignored():
    ignore_leaks("known_daemon")
    go(known_daemon, Chan())

@pytest.mark.csp_mp
def test_ignore_is_per_test():
    go(known_daemon, Chan())
""")
    res.assert_outcomes(passed=2, failed=1)
    res.stdout.fnmatch_lines(["*test_ignore_is_per_test*"])


def test_failures_and_panics_pass_through_unchanged(pytester: pytest.Pytester) -> None:
    res = _run(pytester, """
@pytest.mark.csp_mp
def test_assert():
    assert 1 + 1 == 3

@pytest.mark.csp_mp
def test_skip():
    pytest.skip("not here")

def boom():
    raise ValueError("boom")

@pytest.mark.csp_mp
def test_panic():
    go(boom)
    Chan().recv()

@pytest.mark.csp_mp(fake_time=True, procs=2)
def test_fake_time_on_two_ps():
    pass
""")
    res.assert_outcomes(failed=3, skipped=1)
    res.stdout.fnmatch_lines_random([
        "*assert (1 + 1) == 3*",
        "*Panic*ValueError: boom*",
        "*fake_time() needs a runtime with one P*",
    ])


def test_leaks_option_checks_the_implicit_runtime(pytester: pytest.Pytester) -> None:
    body = """
def waiter(ch):
    ch.recv()

def test_implicit_leak():
    go(waiter, Chan())
    wait_all_blocked()

def test_implicit_clean():
    ch = Chan()
    go(ch.send, 1)
    assert ch.recv() == 1
"""
    pytester.makeini("[pytest]\n")
    res = _run(pytester, body, "--csp-mp-leaks")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["goroutine * ?chan receive? on P*: test_inner.waiter"])
    _run(pytester, body).assert_outcomes(passed=2)  # without the option: no check
