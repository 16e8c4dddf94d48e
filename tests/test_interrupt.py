"""Ctrl-C while the runtime runs: KeyboardInterrupt from run(), never a hang.

The programs run in child processes and get a real SIGINT. A Ctrl-C that lands inside the
runtime's own code (a shared channel's lock held, say) is deferred to the hub, which ends the run;
one that lands in user code raises there, as Python does.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import textwrap
import time

import pytest
from proc_helpers import TRAFFIC_DEFS, catching_interrupt, check_clean_end, interrupt_program

import csp_mp
from csp_mp import Chan, go_local, runtime
from csp_mp._hub import current_hub, interrupt
from csp_mp._proc import proc

# Cross-P channel traffic in every P; main alternates buffered receives with short sleeps, so a
# Ctrl-C lands in channel code (locks held) as often as anywhere.
TRAFFIC = catching_interrupt(textwrap.dedent("""
    import sys
    import csp_mp
    from csp_mp import Chan, go, go_local
""") + TRAFFIC_DEFS + textwrap.dedent("""
    def main():
        a, b = Chan(), Chan(4)
        start_traffic(a, b, 4)
        print("ready", flush=True)
        n = 0
        while True:
            b.recv()
            n += 1
            if n % 1000 == 0:
                csp_mp.sleep(0.0001)
"""), "csp_mp.run(main, procs=int(sys.argv[1]))")

# A goroutine blocked in a C call of user code: Ctrl-C must interrupt the call itself.
SLEEPING_IN_C = catching_interrupt(textwrap.dedent("""
    import time
    import csp_mp

    def main():
        print("ready", flush=True)
        time.sleep(60)
"""), "csp_mp.run(main, procs=1)")

# The goroutine body is a C function, called by the runtime's own wrappers: no user frame at all.
BUILTIN_BODY = catching_interrupt(textwrap.dedent("""
    import sys, time
    import csp_mp

    def main():
        how = sys.argv[1]
        if how == "go":
            csp_mp.go_local(time.sleep, 60)
        elif how == "waitgroup":
            csp_mp.WaitGroup().go(time.sleep, 60)
        else:
            csp_mp.errgroup.Group().go(time.sleep, 60)
        csp_mp.runtime.gosched()  # the sleeper runs, blocking the P in the C call
        print("never here", flush=True)

    print("ready", flush=True)
"""), "csp_mp.run(main, procs=1)")

# Never parks and spends most of its time in channel code; preemption off, so only the deferred
# interrupt's re-trips can reach it.
NEVER_PARKS = catching_interrupt(textwrap.dedent("""
    import csp_mp

    def main():
        ch = csp_mp.Chan(1)
        print("ready", flush=True)
        while True:
            ch.send(1)
            ch.recv()
"""), "csp_mp.run(main, procs=1)")


def test_ctrl_c_in_a_c_call_of_user_code_interrupts_it() -> None:
    t0 = time.monotonic()
    check_clean_end(*interrupt_program(SLEEPING_IN_C))
    assert time.monotonic() - t0 < 30  # not the 60 s sleep


@pytest.mark.parametrize("how", ["go", "waitgroup", "errgroup"])
def test_ctrl_c_interrupts_a_c_function_run_as_a_goroutine(how: str) -> None:
    t0 = time.monotonic()
    check_clean_end(*interrupt_program(BUILTIN_BODY, how, delay=0.3))
    assert time.monotonic() - t0 < 30  # not the 60 s sleep


def test_ctrl_c_reaches_a_goroutine_that_never_parks() -> None:
    # A Ctrl-C that happens to land in the loop's own lines ends it without any re-trip (about
    # one run in eight): three runs make a pass without the re-trips about a 1-in-500 event.
    env = dict(os.environ, CSP_MP_PREEMPT="0")
    for _ in range(3):
        check_clean_end(*interrupt_program(NEVER_PARKS, env=env))


# Never parks and spends nearly all its time inside the runtime (a stack dump formats every
# goroutine's frames): a re-trip lands in its own lines about once in thousands of tries.
RUNTIME_BOUND = catching_interrupt(textwrap.dedent("""
    import csp_mp

    def main():
        print("ready", flush=True)
        while True:
            csp_mp.runtime.stack()
"""), "csp_mp.run(main, procs=1)")


@pytest.mark.parametrize("preempt", ["0", "1"])
def test_ctrl_c_reaches_a_goroutine_that_lives_in_runtime_calls(preempt: str) -> None:
    """The deferred interrupt raises at the goroutine's next line once the runtime call returns,
    rather than waiting for a re-trip to land in user code."""
    env = dict(os.environ, CSP_MP_PREEMPT=preempt)
    check_clean_end(*interrupt_program(RUNTIME_BOUND, env=env))  # a hang fails the wait


@pytest.mark.parametrize("procs", [1, 2])
def test_ctrl_c_during_cross_p_channel_traffic(procs: int) -> None:
    check_clean_end(*interrupt_program(TRAFFIC, str(procs), delay=0.2))


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_ctrl_c_at_random_moments_always_ends_the_run_cleanly() -> None:
    rng = random.Random(7)
    for i in range(12):
        check_clean_end(*interrupt_program(TRAFFIC, str(1 + i % 2), delay=rng.uniform(0.0, 0.4)))


def test_the_handler_is_the_runtimes_only_while_it_runs() -> None:
    before = signal.getsignal(signal.SIGINT)
    assert before is signal.default_int_handler

    def main() -> object:
        return signal.getsignal(signal.SIGINT)

    assert csp_mp.run(main, procs=1) is interrupt._handler
    assert signal.getsignal(signal.SIGINT) is before


def test_a_handler_the_user_installed_is_left_alone() -> None:
    calls: list[int] = []

    def mine(signum: int, frame: object) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGINT, mine)
    try:
        def main() -> object:
            signal.raise_signal(signal.SIGINT)
            return signal.getsignal(signal.SIGINT)

        assert csp_mp.run(main, procs=1) is mine
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, old)


def test_frames_are_told_apart_as_runtime_or_user_code() -> None:
    def main() -> tuple[bool, bool]:
        ch: Chan = Chan()
        go_local(ch.recv)
        runtime.gosched()  # the receiver parks inside the runtime
        parked = [g for g in current_hub().allgs.values() if g.glet is not None
                  and g.glet.gr_frame is not None and g is not current_hub().current]
        runtime_frame = parked[0].glet.gr_frame
        ch.send(1)
        return interrupt._in_user_code(runtime_frame), interrupt._in_user_code(sys._getframe())

    assert csp_mp.run(main, procs=1) == (False, True)


def test_user_code_the_runtime_calls_back_is_runtime_code_for_ctrl_c() -> None:
    """A trace function (user code) called from inside the runtime: a Ctrl-C there would land
    in the runtime mid-update, so it is deferred like one in the runtime's own frames."""
    ns: dict = {"__name__": "csp_mp._fake_for_tests"}
    exec(compile("def f(cb):\n    return cb()\n", "<csp_mp._fake_for_tests>", "exec"), ns)
    assert interrupt._in_user_code(ns["f"](lambda: sys._getframe())) is False
    assert interrupt._in_user_code(sys._getframe()) is True


def test_the_user_frame_a_runtime_call_returns_to_is_the_trap() -> None:
    ns: dict = {"__name__": "csp_mp._fake_for_tests"}
    exec(compile("def f(cb):\n    return cb()\n", "<csp_mp._fake_for_tests>", "exec"), ns)
    here = sys._getframe()
    # interrupted in a callback the runtime made: the trap goes below the runtime frame, on us
    assert interrupt._return_point(ns["f"](lambda: sys._getframe())) is here
    # interrupted in our own code: no runtime call to return from
    assert interrupt._return_point(here) is None


def test_a_trip_landing_inside_the_handler_is_left_to_the_running_call(monkeypatch) -> None:
    """Re-trips come every 2 ms, and Python runs a handler at check points inside a handler too:
    on a cold start (deciding took longer than 2 ms) each trip nested one level deeper until
    RecursionError ended the run."""
    from types import SimpleNamespace

    hub = SimpleNamespace(stopping=False, interrupt_pending=False, interrupted=None,
                          post=lambda fn: None)
    nested = []

    def deciding_slowly(frame):
        nested.append(interrupt._handler(signal.SIGINT, frame))  # the next re-trip lands here
        return False  # the first trip landed in runtime code: defer it

    monkeypatch.setattr(proc.sigint_handler, "hub", hub)
    monkeypatch.setattr(proc.sigint_handler, "retrier", SimpleNamespace(is_alive=lambda: True))
    monkeypatch.setattr(interrupt, "_in_user_code", deciding_slowly)
    interrupt._handler(signal.SIGINT, sys._getframe())
    assert nested == [None]
    assert hub.interrupt_pending is True
