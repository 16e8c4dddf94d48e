"""Ctrl-C while the runtime runs: KeyboardInterrupt from run(), never a hang.

The programs run in child processes and get a real SIGINT. A Ctrl-C that lands inside the
runtime's own code (a shared channel's lock held, say) is deferred to the hub, which ends the run;
one that lands in user code raises there, as Python does.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import csp_mp
from csp_mp import Chan, go_local, runtime
from csp_mp._hub import current_hub, interrupt

SHM = "/dev/shm"

# Cross-P channel traffic in every P; main alternates buffered receives with short sleeps, so a
# Ctrl-C lands in channel code (locks held) as often as anywhere.
TRAFFIC = textwrap.dedent("""
    import sys
    import csp_mp
    from csp_mp import Chan, go, go_local

    def echo(inp, out):
        for v in inp:
            out.send(v)

    def main():
        a, b = Chan(), Chan(4)
        for _ in range(4):
            go(echo, a, b)
        def feed():
            i = 0
            while True:
                a.send(i)
                i += 1
        go_local(feed)
        print("ready", flush=True)
        n = 0
        while True:
            b.recv()
            n += 1
            if n % 1000 == 0:
                csp_mp.sleep(0.0001)

    try:
        csp_mp.run(main, procs=int(sys.argv[1]))
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")

# A goroutine blocked in a C call of user code: Ctrl-C must interrupt the call itself.
SLEEPING_IN_C = textwrap.dedent("""
    import time
    import csp_mp

    def main():
        print("ready", flush=True)
        time.sleep(60)

    try:
        csp_mp.run(main, procs=1)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")

# The goroutine body is a C function, called by the runtime's own wrappers: no user frame at all.
BUILTIN_BODY = textwrap.dedent("""
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
    try:
        csp_mp.run(main, procs=1)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")

# Never parks and spends most of its time in channel code; preemption off, so only the deferred
# interrupt's re-trips can reach it.
NEVER_PARKS = textwrap.dedent("""
    import csp_mp

    def main():
        ch = csp_mp.Chan(1)
        print("ready", flush=True)
        while True:
            ch.send(1)
            ch.recv()

    try:
        csp_mp.run(main, procs=1)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")


def _tree(pid: int) -> list[int]:
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _alive(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)  # polling other processes' exit, bounded by the deadline


def _interrupt(prog: str, *args: str, delay: float = 0.0, env: dict | None = None) -> tuple:
    """Start ``prog``, wait for its "ready", SIGINT it after ``delay``; (stdout, rc, tree)."""
    p = subprocess.Popen([sys.executable, "-c", prog, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        tree = _tree(p.pid)
        if delay:
            time.sleep(delay)  # lets the program run a random while before the Ctrl-C lands
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out, err, p.returncode, tree


def _check_clean_end(out: str, err: str, rc: int, tree: list[int]) -> None:
    assert out.strip() == "KeyboardInterrupt", err
    assert rc == 0, err
    assert _alive(tree) == []
    if os.path.isdir(SHM):
        assert [e for e in os.listdir(SHM) if any(f"-{pid}-" in e for pid in tree)] == []


def test_ctrl_c_in_a_c_call_of_user_code_interrupts_it() -> None:
    t0 = time.monotonic()
    _check_clean_end(*_interrupt(SLEEPING_IN_C))
    assert time.monotonic() - t0 < 30  # not the 60 s sleep


@pytest.mark.parametrize("how", ["go", "waitgroup", "errgroup"])
def test_ctrl_c_interrupts_a_c_function_run_as_a_goroutine(how: str) -> None:
    t0 = time.monotonic()
    _check_clean_end(*_interrupt(BUILTIN_BODY, how, delay=0.3))
    assert time.monotonic() - t0 < 30  # not the 60 s sleep


def test_ctrl_c_reaches_a_goroutine_that_never_parks() -> None:
    env = dict(os.environ, CSP_MP_PREEMPT="0")
    _check_clean_end(*_interrupt(NEVER_PARKS, env=env))


@pytest.mark.parametrize("procs", [1, 2])
def test_ctrl_c_during_cross_p_channel_traffic(procs: int) -> None:
    _check_clean_end(*_interrupt(TRAFFIC, str(procs), delay=0.2))


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_ctrl_c_at_random_moments_always_ends_the_run_cleanly() -> None:
    rng = random.Random(7)
    for i in range(12):
        _check_clean_end(*_interrupt(TRAFFIC, str(1 + i % 2), delay=rng.uniform(0.0, 0.4)))


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
