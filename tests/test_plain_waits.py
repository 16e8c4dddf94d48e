"""Goroutines progress while the implicit runtime's main thread waits in plain code.

A script that calls ``go()`` and then ``time.sleep()`` (or waits on a future) never enters
csp_mp: sysmon takes the thread for the hub while it sleeps (``_hub/drive.py``), unless the
sleep is inside a ``with`` block or a ``try``/``finally`` body, where the thread may hold a lock
a goroutine needs. Where nothing can take the thread (a prompt), the other Ps run what the
script queued. Each script runs in a fresh interpreter: the implicit runtime is its own.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from time import sleep

import pytest

from csp_mp._hub import drive

GO_THEN_SLEEP = textwrap.dedent("""
    import time, csp_mp
    from csp_mp import atomic
    done = atomic.Int64(0)
    def work(i):
        done.add(1)
    for i in range(8):
        csp_mp.go(work, i)
    deadline = time.monotonic() + 20
    while done.load() < 8 and time.monotonic() < deadline:
        time.sleep(0.05)  # plain code: the goroutines run meanwhile, on every P
    print(done.load())
""")

SLEEP_UNDER_A_LOCK = textwrap.dedent("""
    import threading, time, csp_mp
    from csp_mp import atomic
    done = atomic.Int64(0)
    lock = threading.Lock()
    def work(i):
        done.add(1)
    for i in range(8):
        csp_mp.go(work, i)
    with lock:
        time.sleep(0.3)  # the thread is not taken here: a goroutine could need the lock
        under_lock = done.load()
    from time import sleep
    deadline = time.monotonic() + 20
    while done.load() < 8 and time.monotonic() < deadline:
        sleep(0.05)
    print(under_lock, done.load())
""")


def _run(script: str, procs: int) -> str:
    env = dict(os.environ, GOMAXPROCS=str(procs))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("procs", [1, 2])
def test_goroutines_run_while_the_main_thread_sleeps_in_plain_code(procs: int) -> None:
    assert _run(GO_THEN_SLEEP, procs) == "8"


def test_a_sleep_inside_a_with_block_keeps_its_thread() -> None:
    assert _run(SLEEP_UNDER_A_LOCK, 1) == "0 8"


GO_THEN_PROMPT = textwrap.dedent("""
    import sys, csp_mp
    from csp_mp import atomic
    done = atomic.Int64(0)
    def work(i):
        if done.add(1) == 8:
            print("all done", flush=True)
    for i in range(8):
        csp_mp.go(work, i)
    sys.stdin.readline()  # a wait nothing takes the thread from, as a prompt's
    print("released")
""")


def test_work_queued_from_plain_code_reaches_the_other_ps_at_once() -> None:
    """The script then blocks where P0 cannot run anything: P1 takes the goroutines."""
    env = dict(os.environ, GOMAXPROCS="2")
    p = subprocess.Popen([sys.executable, "-c", GO_THEN_PROMPT], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready, "the goroutines did not run while the script waited"
        assert p.stdout.readline() == "all done\n"
        out, err = p.communicate("\n", timeout=30)
        assert (p.returncode, out) == (0, "released\n"), err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_the_sleep_calls_drive_recognizes() -> None:
    def attr(x: float) -> None:
        time.sleep(x)

    def bare() -> None:
        sleep(0.5)

    def computed(x: float) -> None:
        time.sleep(x * 2)  # not a simple argument: left alone

    def other(obj) -> None:
        obj.sleep(1)  # an attribute of a local: not resolvable from globals

    assert set(drive._find_sleep_calls(attr.__code__).values()) == {("attr", "time")}
    assert set(drive._find_sleep_calls(bare.__code__).values()) == {("bare", "sleep")}
    assert drive._find_sleep_calls(computed.__code__) == {}
    assert drive._find_sleep_calls(other.__code__) == {}
