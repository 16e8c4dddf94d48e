"""The compiled core as a good citizen of the interpreter: the collector sees its objects, its
waits end on a signal, and a region released under a sleeping call is let go safely.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from csp_mp._shm import native
from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNS = """
import gc
import csp_mp

def main():
    ch = csp_mp.Chan(4)

    def far():
        for i in range(10):
            ch.send(i)

    csp_mp.go(far)  # a goroutine that may run on P1: the channel is shared, with hand-offs
    return sum(ch.recv() for _ in range(10))

for _ in range(100):
    assert csp_mp.run(main, procs=2) == 45
gc.collect()
kinds = {"Broker", "Hub", "Ctx"}
alive = [type(o).__name__ for o in gc.get_objects()
         if type(o).__name__ in kinds and type(o).__module__.startswith("csp_mp.")]
print(csp_mp.runtime.native() if hasattr(csp_mp.runtime, "native") else None, len(alive),
      sorted(set(alive)))
"""


@pytest.mark.parametrize("path", ["1", "0"], ids=["compiled", "python"])
def test_a_hundred_runs_leave_no_runtime_alive(path: str) -> None:
    """Each run(procs=2) of P0 is collected once it returns: no Broker, Hub or Ctx is kept
    (the compiled core's objects take part in the cyclic GC)."""
    if path == "1" and not native.built():
        pytest.skip("the compiled core is not built")
    env = dict(os.environ, PYTHONPATH=ROOT, CSP_MP_NATIVE=path)
    out = subprocess.run([sys.executable, "-c", RUNS], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    _native, alive, kinds = out.stdout.split(maxsplit=2)
    assert (alive, kinds.strip()) == ("0", "[]")


needs_core = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")


@pytest.fixture
def carena() -> Iterator[Arena]:
    a = Arena.create(1 << 20, nlocks=8, use_native=True)
    try:
        yield a
    finally:
        a.sems.seal()
        a.close()


def _holder(lock: object, held: threading.Event, done: threading.Event) -> None:
    """Take `lock` in this thread and keep it until `done` (a holder that does not let go)."""
    lock.acquire()  # type: ignore[attr-defined]
    held.set()
    done.wait(30)
    try:
        lock.release()  # type: ignore[attr-defined]
    except ValueError:
        pass  # its region was released meanwhile


@needs_core
def test_a_wait_for_a_held_lock_lets_a_signal_handler_raise(carena: Arena) -> None:
    """Ctrl-C ends a wait behind a holder that never lets go: the lock sleeps in timed
    slices and runs signal handlers between them."""
    lock = native.core().Lock(carena.core, 3)
    held, done = threading.Event(), threading.Event()
    t = threading.Thread(target=_holder, args=(lock, held, done))
    t.start()

    def boom(signum: int, frame: object) -> None:
        raise KeyError("from the handler")

    old = signal.signal(signal.SIGALRM, boom)
    try:
        assert held.wait(10)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.monotonic()
        with pytest.raises(KeyError, match="from the handler"):
            lock.acquire()
        assert time.monotonic() - start < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        done.set()
        t.join(10)
    assert lock.acquire() is False  # the holder let go: free again
    lock.release()


def _wait_in_thread(call: object) -> tuple[threading.Thread, list[BaseException | object]]:
    out: list[BaseException | object] = []

    def run() -> None:
        try:
            out.append(call())  # type: ignore[operator]
        except BaseException as exc:  # the outcome under test
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


@needs_core
def test_releasing_a_region_under_a_sleeping_wait_ends_the_wait(carena: Arena) -> None:
    """A release() while other threads sleep on the region (a doorbell wait, a lock wait)
    closes it at once: each sleeper wakes with ValueError instead of touching memory that was
    let go, and the buffer goes when the last of them returns."""
    from csp_mp._shm.arena import _LOCKS_AT

    core = native.core()
    region = carena.core
    bell = core.Bell(region, Doorbell.create(carena).offset)
    lock = core.Lock(region, 4)
    held, done = threading.Event(), threading.Event()
    holder = threading.Thread(target=_holder, args=(lock, held, done))
    holder.start()
    assert held.wait(10)
    t1, out1 = _wait_in_thread(lambda: bell.wait(30))
    t2, out2 = _wait_in_thread(lock.acquire)

    def asleep() -> bool:
        """The bell's sleepers word is set and the mutex's FUTEX_WAITERS bit is."""
        return bool(region.load(bell.offset) >> 32 and
                    region.load(_LOCKS_AT + 4 * 64) & 0x8000_0000)

    deadline = time.monotonic() + 10
    while not asleep() and time.monotonic() < deadline:
        time.sleep(0.001)  # poll the words both sleepers announce themselves in, bounded
    assert asleep()
    region.release()
    t1.join(10)
    t2.join(10)
    done.set()
    holder.join(10)
    assert not t1.is_alive() and not t2.is_alive()
    assert [type(o) for o in out1 + out2] == [ValueError, ValueError], out1 + out2
    assert "closed" in str(out1[0]) and "closed" in str(out2[0])
    with pytest.raises(ValueError, match="closed"):
        bell.ring()


HELD_AT_UNMAP = """
from csp_mp._shm import layout as L
from csp_mp._shm.arena import Arena
from csp_mp._shm.native import core

a = Arena.create(1 << 20, nlocks=8, use_native=True)
b = Arena.create(1 << 20, nlocks=8, use_native=True)  # mapped elsewhere, while a is
first_state = a.core.load(L.AW_STATE_LOCKS * L.WORD)
lock = core().Lock(a.core, 7)
assert lock.acquire() is False
del lock  # nothing can give the mutex back through it now
a.close()  # unmapped: the mutex, still held, was linked into this thread's robust list
for _ in range(100):  # each robust lock links itself in behind the list's head
    other = core().Lock(b.core, 7)
    assert other.acquire() is False
    other.release()
print("ok", int(7 >= first_state))
"""


def test_a_mutex_held_when_its_arena_goes_is_given_back_first() -> None:
    """A thread whose held robust mutex is unmapped keeps a dangling link in its robust list,
    and its next robust lock writes through it: the region gives this thread's mutexes back
    (counting a state lock as taken over) before it lets its buffer go."""
    if not native.built():
        pytest.skip("the compiled core is not built")
    env = dict(os.environ, PYTHONPATH=ROOT, CSP_MP_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", HELD_AT_UNMAP], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.split()[0] == "ok"
