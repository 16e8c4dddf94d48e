from __future__ import annotations

import os
import pickle
import signal
import time

import pytest

from csp_mp._shm import locks
from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.locks import SemRegistry, pid_alive

from . import _workers


def test_lock_for_stripes_keys(arena: Arena) -> None:
    ls = arena.locks
    assert ls.lock_for(3) is ls.lock_for(3 + len(ls))
    with ls.lock_for(5) as taken_over:
        assert not taken_over
        assert ls.lock_for(5).owner() == os.getpid()
    assert ls.lock_for(5).owner() == 0


def test_pid_alive_sees_zombies_as_dead(ctx) -> None:
    p = ctx.Process(target=_workers.getpid)
    p.start()
    deadline = time.monotonic() + 20
    while pid_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not pid_alive(p.pid)
    p.join(20)
    assert pid_alive(os.getpid())


@pytest.mark.parametrize("ghost", [False, True], ids=["owner-recorded", "killed-in-window"])
def test_lock_taken_over_from_killed_holder(arena: Arena, py_arena: Arena, ctx,
                                           ghost: bool) -> None:
    if ghost:  # a holder killed between its semaphore and its owner word: the Python path's lock
        arena = py_arena
    bell = Doorbell.create(arena)
    p = ctx.Process(target=_workers.hold_lock, args=(arena, 3, bell, ghost))
    p.start()
    try:
        assert bell.wait(20)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(20)
    lock = arena.locks.lock(3)
    t0 = time.monotonic()
    assert lock.acquire() is True
    waited = time.monotonic() - t0
    assert lock.owner() == os.getpid()
    lock.release()
    assert lock.acquire() is False
    lock.release()
    if ghost:
        assert waited >= locks.GHOST_AFTER


def test_lock_taken_over_from_killed_holder_forked_from_a_user_of_it(arena: Arena) -> None:
    """A holder forked from a process that already used the lock records its own pid, not its
    parent's (a lock held by a killed forked P must not look held by the living parent)."""
    lock = arena.locks.lock(4)
    with lock:  # the parent's fast path runs first, as P0's does before it forks the Ps
        pass
    bell = Doorbell.create(arena)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child is killed
        try:
            lock.acquire()
            bell.ring()
            time.sleep(60)
        finally:
            os._exit(1)
    try:
        assert bell.wait(20)
        assert lock.owner() == pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert lock.acquire() is True
    assert lock.owner() == os.getpid()
    lock.release()


def test_sealed_registry_refuses_pickling_and_new_names() -> None:
    reg = SemRegistry()
    sem = reg.semaphore(0)
    name = reg.names[0]
    assert os.path.exists(f"/dev/shm/sem.{name[1:]}")
    clone = pickle.loads(pickle.dumps(sem))
    clone.release()
    assert sem.acquire(False)
    reg.seal()
    assert not os.path.exists(f"/dev/shm/sem.{name[1:]}")
    with pytest.raises(RuntimeError, match="sealed"):
        pickle.dumps(sem)
    with pytest.raises(RuntimeError):
        reg.semaphore()
    sem.release()
    assert clone.acquire(False)
