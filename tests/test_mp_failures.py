"""Failure across Ps: panics, lost Ps, a killed tree, Ctrl-C, deadlock, goroutines that cannot
travel, MigrationWarning, and whole programs (no ``__main__`` guard) on two Ps.

Every test also passes the autouse check: no child process and no ``/dev/shm`` entry of ours left.
Programs run in a child interpreter watch their own process tree explicitly.
"""

from __future__ import annotations

import faulthandler
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable

import mp_helpers as H
import pytest
from proc_helpers import TRAFFIC_DEFS, check_clean_end, gone, shm_of, sigint_when_ready
from proc_helpers import tree as proc_tree

import csp_mp
from csp_mp import (
    Chan,
    DeadlockError,
    MigrationWarning,
    Panic,
    ProcessLost,
    RemoteError,
    after,
    go,
    go_local,
    runtime,
    select,
)

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(params=["", "forkserver"], ids=["fork", "forkserver"])
def start(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How Ps start: forked from P0 when that is safe ('') or from the fork server; set for
    runs in this process and passed to child programs."""
    monkeypatch.delenv("CSP_MP_START", raising=False)
    if request.param:
        monkeypatch.setenv("CSP_MP_START", request.param)
    return request.param


def _env(start: str) -> dict[str, str]:
    """The environment of a child program whose Ps start by ``start`` ('' = P0 decides)."""
    env = dict(os.environ)
    env.pop("CSP_MP_START", None)
    if start:
        env["CSP_MP_START"] = start
    return env


# ---------------------------------------------------------------- panics


def test_panic_on_another_p_chains_the_original_exception(start: str) -> None:
    def main():
        H.go_on(1, H.raise_value_error, "bad value on P1")
        Chan().recv()

    with pytest.raises(Panic) as info:
        csp_mp.run(main, procs=2)
    err = info.value
    assert type(err.__cause__) is ValueError
    assert str(err.__cause__) == "bad value on P1"
    assert "bad value on P1" in str(err)
    assert "raise_value_error" in err.traceback_text  # the remote traceback


def test_unpicklable_exception_arrives_as_a_stand_in() -> None:
    def main():
        H.go_on(1, H.raise_unpicklable, "cannot travel")
        Chan().recv()

    with pytest.raises(Panic) as info:
        csp_mp.run(main, procs=2)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteError)
    assert cause.type_name == "Unpicklable"
    assert cause.message == "cannot travel"
    assert "raise_unpicklable" in cause.traceback_text


# ---------------------------------------------------------------- a P killed


def _park_here(ch: Chan, n: int, out: Chan) -> None:
    for _ in range(n):
        go_local(H.block_forever, ch)
    out.send(os.getpid())


def test_killed_p_raises_process_lost_naming_it_and_its_goroutines(start: str) -> None:
    killed_at: list[float] = []

    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(1, _park_here, ch, 3, out)
        pid = out.recv()
        H.wait_reason("chan receive", 3)  # P1 parked them (and published what it runs)
        H.wait_until(lambda: runtime.num_goroutine() == 4, "P1's goroutines counted")
        killed_at.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)
        i, _ = select(ch.recv, after(2.0).recv)  # SPEC: reported within a second
        return f"P1 killed, run() not interrupted (select case {i})"

    with pytest.raises(ProcessLost) as info:
        csp_mp.run(main, procs=2)
    latency = time.monotonic() - killed_at[0]
    err = info.value
    assert err.p == 1 and "P1" in str(err)
    assert sum("block_forever" in g for g in err.goroutines) == 3, err.goroutines
    assert "block_forever" in str(err)
    print(f"ProcessLost after {latency * 1000:.0f} ms")


def _stream(ch: Chan, out: Chan) -> None:
    out.send(os.getpid())
    i = 0
    while True:
        ch.send(i)
        i += 1


def _segfault(ch: Chan, n: int, out: Chan) -> None:
    _park_here(ch, n, out)
    out.send(None)
    # the crash is the test's intent: no fault dump from this P among the suite's output
    faulthandler.disable()
    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.parametrize("cap", [0, 16])
def test_p_killed_mid_traffic_does_not_hang_its_partner(cap: int) -> None:
    def main():
        ch, out = Chan(cap), Chan(1)
        H.go_on(1, _stream, ch, out)
        pid = out.recv()
        for i in range(200):  # values are flowing from P1
            assert ch.recv() == i
        os.kill(pid, signal.SIGKILL)
        deadline = after(2.0)
        while True:
            i, _ = select(ch.recv, deadline.recv)
            if i == 1:
                return "P1 killed, run() not interrupted"

    with pytest.raises(ProcessLost) as info:
        csp_mp.run(main, procs=2)
    assert info.value.p == 1


def test_p_that_crashes_raises_process_lost() -> None:
    def main():
        ch, out = Chan(), Chan(2)
        H.go_on(1, _segfault, ch, 2, out)
        out.recv()
        out.recv()
        select(ch.recv, after(2.0).recv)
        return "P1 crashed, run() not interrupted"

    with pytest.raises(ProcessLost) as info:
        csp_mp.run(main, procs=2)
    assert info.value.p == 1 and "P1" in str(info.value)


# ---------------------------------------------------------------- deadlock across Ps


def test_deadlock_across_ps_dumps_both() -> None:
    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(1, _park_here, ch, 1, out)
        out.recv()
        Chan().recv()

    with pytest.raises(DeadlockError) as info:
        csp_mp.run(main, procs=2)
    stack = info.value.stack
    heads = [line for line in stack.splitlines() if line.startswith("goroutine ")]
    assert any(" on P0:" in h and "[chan receive]" in h and h.endswith(": main")
               for h in heads), stack
    assert any(" on P1:" in h and "[chan receive]" in h and "block_forever" in h
               for h in heads), stack
    assert str(info.value).startswith("all goroutines are asleep - deadlock!")


def test_deadlock_with_goroutines_blocked_in_four_ps() -> None:
    def main():
        ch, out = Chan(), Chan(4)
        for p in range(4):
            H.go_on(p, _park_here, ch, 1, out)
        for _ in range(4):
            out.recv()
        H.wait_reason("chan receive", 4)
        ch.recv()

    with pytest.raises(DeadlockError) as info:
        csp_mp.run(main, procs=4)
    stack = info.value.stack
    for p in range(4):
        assert f" on P{p}:" in stack, stack


# ---------------------------------------------------------------- goroutines that cannot travel


def test_unpicklable_callable_is_type_error_at_go() -> None:
    lock = threading.Lock()

    def holds_a_lock() -> None:
        with lock:
            pass

    def main():
        try:
            go(holds_a_lock)
        except TypeError as exc:
            msg = str(exc)
        else:
            msg = None
        out = Chan(1)
        go(H.report_p, out)  # the runtime is still fine
        out.recv()
        return msg, runtime.num_goroutine()

    msg, n = csp_mp.run(main, procs=2)
    assert msg is not None and "holds_a_lock" in msg
    assert n == 1  # the rejected goroutine left no trace


def test_unpicklable_argument_is_type_error_at_go_naming_it() -> None:
    def main():
        try:
            go(H.noop, 1, threading.Lock())
        except TypeError as exc:
            return str(exc)
        return None

    msg = csp_mp.run(main, procs=2)
    assert msg is not None and "lock" in msg and "noop" in msg


def test_go_local_needs_no_pickling() -> None:
    lock = threading.Lock()

    def main():
        out = Chan(1)
        go_local(lambda: out.send(lock.locked()))
        return out.recv()

    assert csp_mp.run(main, procs=2) is False


# ---------------------------------------------------------------- MigrationWarning


def test_closure_over_a_list_warns_once_when_it_migrates(start: str) -> None:
    seen: list[int] = []

    def main():
        out = Chan(16)

        def appender() -> None:
            seen.append(runtime.current_p())  # a copy of ``seen`` once migrated
            out.send(runtime.current_p())

        deadline = time.monotonic() + H.DEADLINE
        migrated = 0
        while not migrated:
            assert time.monotonic() < deadline, "no appender migrated"
            for _ in range(16):
                go(appender)
            migrated = sum(out.recv() != 0 for _ in range(16))
        H.wait_until(lambda: any(issubclass(w.category, MigrationWarning) for w in caught),
                     "the MigrationWarning reached P0")
        return migrated

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        migrated = csp_mp.run(main, procs=2)
    mig = [w for w in caught if issubclass(w.category, MigrationWarning)]
    assert migrated >= 1
    assert len(mig) == 1, [str(w.message) for w in mig]
    text = str(mig[0].message)
    assert "appender" in text and "seen" in text and "go_local" in text
    assert issubclass(MigrationWarning, RuntimeWarning)
    assert all(p == 0 for p in seen)  # writes made on P1 never came back


def test_explicit_arguments_and_runtime_objects_do_not_warn() -> None:
    def main():
        out = Chan(32)
        for _ in range(32):
            go(H.send_all, out, [runtime.current_p()])  # a list argument: copied, no warning
        return [out.recv() for _ in range(32)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        csp_mp.run(main, procs=2)
    assert not [w for w in caught if issubclass(w.category, MigrationWarning)]


# ---------------------------------------------------------------- whole programs in a child


ON_P1 = textwrap.dedent("""
    import os, time
    import csp_mp
    from csp_mp import Chan, go, runtime

    def probe(out):
        out.send((runtime.current_p(), os.getpid()))

    def pid_of_p1():
        # spawn until a goroutine is stolen by P1; its pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = Chan(8)
            for _ in range(8):
                go(probe, out)
            for p, pid in [out.recv() for _ in range(8)]:
                if p == 1:
                    return pid
        raise AssertionError("nothing ran on P1")
""")


def _spawn(prog: str, start: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(start))


def test_sigint_in_p0_raises_keyboard_interrupt_and_leaves_no_orphan(start: str) -> None:
    prog = ON_P1 + textwrap.dedent("""
        def busy():
            while True:
                runtime.gosched()

        def main():
            print("ready", pid_of_p1(), flush=True)
            go(busy)
            csp_mp.sleep(60)

        try:
            csp_mp.run(main, procs=2)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
    """)
    p = _spawn(prog, start)
    extra, out, err, tree = sigint_when_ready(p, timeout=30)
    assert int(extra[0]) in tree  # P1 is one of P0's children, so it must be gone too
    check_clean_end(out, err, p.returncode, tree)


SLEEPING_TREE = ON_P1 + textwrap.dedent("""
    def main():
        print("ready", pid_of_p1(), flush=True)
        csp_mp.sleep(60)

    csp_mp.run(main, procs=2)
""")


def _kill_tree_and_check(start: str, victims: Callable[[subprocess.Popen, list[int]], list[int]]
                         ) -> None:
    """Run a program parked on P0 and P1, SIGKILL ``victims(p, tree)``, then check that every
    process of the tree is gone and nothing of it is left in /dev/shm."""
    p = _spawn(SLEEPING_TREE, start)
    try:
        line = p.stdout.readline().split()
        assert line[:1] == ["ready"], p.stderr.read()
        tree = proc_tree(p.pid)
        assert int(line[1]) in tree and len(tree) >= 2  # P0 and P1 (and the fork server)
        for pid in victims(p, tree):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert gone(tree) == []
    assert shm_of(tree) == []


def test_kill_9_of_the_whole_tree_leaves_nothing_in_dev_shm(start: str) -> None:
    _kill_tree_and_check(start, lambda p, tree: tree)


def test_killed_p0_takes_its_workers_with_it(start: str) -> None:
    _kill_tree_and_check(start, lambda p, tree: [p.pid])  # P0 alone


NO_GUARD = textwrap.dedent("""
    import csp_mp
    from csp_mp import Chan, go, runtime
    print("top level", flush=True)

    class Box:
        def __init__(self, v):
            self.v = v
        def __eq__(self, other):
            return type(other).__name__ == "Box" and other.v == self.v

    def square(box, out):
        out.send((Box(box.v * box.v), runtime.current_p()))

    def main():
        total, ps = 0, set()
        while 1 not in ps:  # until one of the __main__ functions ran on P1
            out = Chan(16)
            for n in range(16):
                go(square, Box(n), out)
            got = [out.recv() for _ in range(16)]
            assert all(type(b) is Box for b, _ in got)
            total = sum(b.v for b, _ in got)
            ps |= {p for _, p in got}
        return total

    print(csp_mp.run(main, procs=2))
""")


@pytest.mark.parametrize("how", ["-c", "stdin", "script"])
def test_program_without_main_guard_on_two_ps(how: str, start: str, tmp_path) -> None:
    if how == "-c":
        args: list[str] = ["-c", NO_GUARD]
        stdin = None
    elif how == "stdin":
        args, stdin = ["-"], NO_GUARD
    else:
        script = tmp_path / "prog.py"
        script.write_text(NO_GUARD)
        args, stdin = [str(script)], None
    done = subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=_env(start))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["top level", str(sum(n * n for n in range(16)))]
    assert done.stdout.count("top level") == 1  # P1 never re-ran the program


KILLED_MID_TRAFFIC = ON_P1 + "from csp_mp import go_local\n" + TRAFFIC_DEFS + textwrap.dedent("""
    def main():
        a, b = Chan(), Chan(4)
        start_traffic(a, b, 8)
        def drain():
            while True:
                b.recv()
        go_local(drain)
        print("ready", pid_of_p1(), flush=True)
        csp_mp.sleep(60)

    try:
        csp_mp.run(main, procs=2)
    except csp_mp.ProcessLost as e:
        print("ProcessLost", e.p, flush=True)
""")


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_p_killed_at_random_moments_of_channel_traffic_is_reported(start: str) -> None:
    """SIGKILL P1 while both Ps hammer shared channels (locks held at any moment): ProcessLost
    every time, and nothing of the tree is left."""
    rng = random.Random(11)
    for _ in range(6):
        p = _spawn(KILLED_MID_TRAFFIC, start)
        try:
            line = p.stdout.readline().split()
            assert line[:1] == ["ready"], p.stderr.read()
            tree = proc_tree(p.pid)
            time.sleep(rng.uniform(0.0, 0.3))  # lets the traffic run a random while
            os.kill(int(line[1]), signal.SIGKILL)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert out.split() == ["ProcessLost", "1"], err
        assert gone(tree) == []
        assert shm_of(tree) == []


KILLED_THEN_ALL_STUCK = ON_P1 + textwrap.dedent("""
    import signal
    from csp_mp._mp import procs

    _wait = procs.mp_wait
    def slow_wait(fds, timeout):  # the watcher notices a death late: P0's checkdead goes first
        time.sleep(0.3)
        return _wait(fds, timeout)
    procs.mp_wait = slow_wait

    def main():
        pid = pid_of_p1()
        gate = Chan()
        def block_on_p1(ready):
            ready.send(runtime.current_p())
            gate.recv()
        while True:  # a goroutine blocked for good on P1
            ready = Chan(1)
            go(block_on_p1, ready)
            if ready.recv() == 1:
                break
        os.kill(pid, signal.SIGKILL)
        gate.recv()  # every goroutine left is blocked: a deadlock, were P1 alive

    try:
        csp_mp.run(main, procs=2)
    except csp_mp.ProcessLost as e:
        print("ProcessLost", e.p, flush=True)
    except csp_mp.DeadlockError:
        print("DeadlockError", flush=True)
""")


@pytest.mark.timeout(200)
def test_a_p_killed_while_every_goroutine_is_blocked_is_lost_not_a_deadlock(start: str) -> None:
    """The P that died looked stuck: P0 must report it lost, also when its deadlock check runs
    before the watcher thread has seen the death (slowed down here to make that certain)."""
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", KILLED_THEN_ALL_STUCK], capture_output=True,
                             text=True, timeout=60, env=_env(start))
        assert out.stdout.split() == ["ProcessLost", "1"], out.stderr[-2000:]


ARENA_FILLER = textwrap.dedent("""
    import csp_mp

    def reply(ch):
        ch.send(1)

    def fill():
        kept = []
        while True:  # a new reply channel per task, each one shared and kept: none is freed
            ch = csp_mp.Chan(1)
            csp_mp.go(reply, ch)
            ch.recv()
            kept.append(ch)

    try:
        csp_mp.run(fill, procs=2)
    except csp_mp.Panic as exc:
        print("panic", type(exc.__cause__).__name__, flush=True)
        print(exc, flush=True)

    def small():
        ch = csp_mp.Chan(1)
        csp_mp.go(reply, ch)
        return ch.recv()

    print("again", csp_mp.run(small, procs=2), flush=True)  # a new run has a new arena
""")


def test_a_full_arena_says_what_to_do_and_the_next_run_works() -> None:
    env = dict(os.environ, CSP_MP_ARENA_MB="96")
    p = subprocess.Popen([sys.executable, "-c", ARENA_FILLER], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "panic MemoryError", out + err
    assert "arena (96 MiB) is full" in out and "CSP_MP_ARENA_MB" in out
    assert "freed once no goroutine can reach it" in out
    assert lines[-1] == "again 1"
    assert shm_of([p.pid]) == []


def test_an_arena_too_small_to_start_says_so() -> None:
    env = dict(os.environ, CSP_MP_ARENA_MB="16")
    done = subprocess.run([sys.executable, "-c", "import csp_mp; csp_mp.run(print, procs=2)"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "MemoryError: CSP_MP_ARENA_MB=16 is too small for a runtime of up to" in done.stderr



def _wait_forever(ch: Chan) -> None:
    ch.recv()


def _park_two_kinds(ch: Chan, n: int, out: Chan) -> None:
    for _ in range(2):
        go_local(_wait_forever, ch)
    _park_here(ch, n, out)


def test_process_lost_counts_lost_goroutines_by_function() -> None:
    n = 41  # more than the P describes one by one

    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(1, _park_two_kinds, ch, n, out)
        pid = out.recv()
        H.wait_reason("chan receive", n + 2)  # P1 parked them (and published what it runs)
        H.wait_until(lambda: runtime.num_goroutine() == n + 3, "P1's goroutines counted")
        os.kill(pid, signal.SIGKILL)
        select(ch.recv, after(2.0).recv)
        return "P1 killed, run() not interrupted"

    with pytest.raises(ProcessLost) as info:
        csp_mp.run(main, procs=2)
    err = info.value
    text = str(err)
    assert f"{n} goroutines (mp_helpers.block_forever)" in text, text
    assert "2 goroutines (test_mp_failures._wait_forever)" in text, text
    assert text.count("goroutine") == 3, text  # a summary, not one entry per goroutine
    assert len(err.goroutines) > 2  # the per-goroutine descriptions stay available


DIE_HOLDING_THE_ALLOCATOR = textwrap.dedent("""
    import os, pickle, signal
    import csp_mp
    from csp_mp import Chan, go, runtime
    from csp_mp._hub import current_hub

    def die_holding_the_allocator(ready):
        if runtime.current_p() != 1:
            ready.send(False)
            return
        ready.send(True)
        current_hub().broker.arena._enter(changes=True)  # amid a change, never released
        os.kill(os.getpid(), signal.SIGKILL)
""")


KILLED_INSIDE_THE_ALLOCATOR = ON_P1 + DIE_HOLDING_THE_ALLOCATOR + textwrap.dedent("""
    def main():
        while True:
            ready = Chan(1)
            go(die_holding_the_allocator, ready)
            if ready.recv():
                break
        while True:  # allocating without a pause: the poisoned arena is met before any poll
            pickle.dumps(Chan(1))

    try:
        csp_mp.run(main, procs=2)
    except csp_mp.ProcessLost as e:
        print("ProcessLost", e.p, type(e.__cause__).__name__, flush=True)
    except csp_mp.Panic as e:
        print("Panic", e, flush=True)
""")


KILLED_INSIDE_THE_ALLOCATOR_IMPLICIT = DIE_HOLDING_THE_ALLOCATOR + textwrap.dedent("""
    try:  # plain code of the implicit runtime: no run() to convert what it meets
        while True:
            ready = Chan(1)
            go(die_holding_the_allocator, ready)
            if ready.recv():
                break
        while True:
            pickle.dumps(Chan(1))
    except csp_mp.ProcessLost as e:
        print("ProcessLost", e.p, type(e.__cause__).__name__, flush=True)
    csp_mp.shutdown()
    out = Chan(1)
    go(out.send, 42)  # the next runtime
    print(out.recv(), flush=True)
""")


@pytest.mark.timeout(60)
def test_the_implicit_runtime_reports_a_p_killed_inside_the_allocator_as_lost(
        start: str) -> None:
    """Plain code that meets the poisoned arena gets the lost P (``ProcessLost``, the
    allocator's error as its cause, when the compiled core saw the poison first); after
    ``shutdown()`` the next ``go()`` starts a runtime that works."""
    out = subprocess.run([sys.executable, "-c", KILLED_INSIDE_THE_ALLOCATOR_IMPLICIT],
                         capture_output=True, text=True, timeout=50,
                         env=dict(_env(start), GOMAXPROCS="2"))
    lines = out.stdout.split("\n")
    words = lines[0].split()
    assert words[:2] == ["ProcessLost", "1"], out.stdout + out.stderr[-2000:]
    assert words[2:] in (["ArenaPoisoned"], ["NoneType"]), out.stdout
    assert lines[1] == "42", out.stdout + out.stderr[-2000:]


@pytest.mark.timeout(60)
def test_a_p_killed_inside_the_allocator_is_reported_lost(start: str) -> None:
    """The arena is poisoned and P0's next allocation fails: the run still reports the lost P
    (with that failure as its cause), not the allocator's error. (On the Python path the
    allocation waits on the dead holder's lock, and the loss is usually reported first.) The
    cause: the allocator's error where the failing allocation found the P named already, the
    main goroutine's panic where the run named it after, none where the watcher was first."""
    out = subprocess.run([sys.executable, "-c", KILLED_INSIDE_THE_ALLOCATOR],
                         capture_output=True, text=True, timeout=50, env=_env(start))
    words = out.stdout.split()
    assert words[:2] == ["ProcessLost", "1"], out.stdout + out.stderr[-2000:]
    assert words[2:] in (["ArenaPoisoned"], ["Panic"], ["NoneType"]), out.stdout
