"""Objects of an implicit runtime that has stopped, used in the next one (SPEC, "Failure, as the
user sees it"): they keep the state P0 last saw, waiters of stopped goroutines are dropped, and
nothing of the stopped runtime affects the next one.

Each case is a whole program on 2 Ps (``GOMAXPROCS=2``), so that the objects really crossed
processes before the runtime ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import proc_helpers as PH
import pytest

from csp_mp import Chan
from csp_mp._mp.demote import StoppedState

PROG = PH.GO_ON_DEFS + textwrap.dedent("""
    import os, signal, sys
    import csp_mp
    from csp_mp import Chan, WaitGroup, atomic, go, go_local, runtime

    def old_work(ch, n, block, wg):
        ch.send("a")
        ch.send("b")
        n.add(5)
        wg.done()
        block.recv()  # parked when the runtime ends

    def boom():
        raise ValueError("boom")

    def interrupt():
        os.kill(os.getpid(), signal.SIGINT)

    def echo(ch, out):
        out.send(("echo", ch.recv(), runtime.current_p()))

    ch, n, block, wg = Chan(4), atomic.Int64(0), Chan(), WaitGroup()
    wg.add(1)
    go_on(1, old_work, ch, n, block, wg)
    wg.wait()
    while block.stats().receivers_waiting != 1:
        runtime.gosched()
    how = sys.argv[1]
    try:
        if how == "panic":
            go(boom)
            Chan().recv()
        elif how == "deadlock":
            Chan().recv()
        elif how == "interrupt":
            go_local(interrupt)
            Chan().recv()
        else:
            csp_mp.shutdown()
    except BaseException as e:
        print("ended", type(e).__name__)
    # the next runtime
    print("buffered", len(ch), ch.recv(), ch.recv(), "n", n.load())
    print("waiting", block.stats().receivers_waiting)
    out = Chan()
    go_on(1, echo, ch, out)
    ch.send("c")
    print(*out.recv())
    fresh = Chan()
    go_on(1, echo, fresh, out)
    fresh.send("d")
    print(*out.recv())
    print("shared again", ch._st.shared)
""")


@pytest.mark.parametrize("how", ["panic", "deadlock", "interrupt", "shutdown"])
def test_objects_of_a_stopped_runtime_work_in_the_next(how: str) -> None:
    env = dict(os.environ, GOMAXPROCS="2")
    done = subprocess.run([sys.executable, "-c", PROG, how], capture_output=True, text=True,
                          timeout=40, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ended = {"panic": ["ended Panic"], "deadlock": ["ended DeadlockError"],
             "interrupt": ["ended KeyboardInterrupt"], "shutdown": []}[how]
    assert lines == ended + ["buffered 2 a b n 5", "waiting 0", "echo c 1", "echo d 1",
                             "shared again True"], done.stderr


def test_an_object_whose_state_was_lost_says_so() -> None:
    ch = Chan(1)
    ch._st = StoppedState()  # what demotion leaves when the arena could not be read
    with pytest.raises(RuntimeError, match="belonged to a csp_mp runtime that has stopped"):
        ch.send(1)
    with pytest.raises(RuntimeError, match="has stopped"):
        ch.stats()


FIRST_SWITCH_ENDS_THE_RUN = textwrap.dedent("""
    import sys
    import csp_mp
    from csp_mp import Chan, go_local

    def boom():
        raise {exc}("boom")

    go_local(boom)  # the main goroutine's first park runs it: the hub loop has never run
    try:
        Chan().recv()
    except BaseException as e:
        print("ended", type(e).__name__)
    ch = Chan(1)
    ch.send("next")
    print(ch.recv())
""")


@pytest.mark.parametrize("exc", ["ValueError", "KeyboardInterrupt"])
def test_a_run_ended_before_the_hub_loop_ever_ran(exc: str) -> None:
    """A goroutine that ends the implicit runtime (a panic, Ctrl-C) while the hub's loop has
    not started yet: the run ends with its own error and the next runtime works."""
    env = dict(os.environ, GOMAXPROCS="1")
    done = subprocess.run([sys.executable, "-c", FIRST_SWITCH_ENDS_THE_RUN.format(exc=exc)],
                          capture_output=True, text=True, timeout=40, env=env)
    assert done.returncode == 0, done.stderr
    ended = "Panic" if exc == "ValueError" else exc
    assert done.stdout.split() == ["ended", ended, "next"], done.stderr
