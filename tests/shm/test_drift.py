"""Behaviours the compiled core and the Python path once did differently, now the same on both:
each test runs on both paths in one process (and the local object where there is one)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from csp_mp._atomic import Int64
from csp_mp._mp.shobj import NativeSharedInt64, SharedInt64
from csp_mp._shm import native
from csp_mp._shm.arena import Arena

PATHS = ["python", pytest.param("compiled", marks=pytest.mark.skipif(
    not native.built(), reason="the compiled core is not built"))]


@pytest.fixture(params=PATHS)
def either_arena(request: pytest.FixtureRequest) -> Iterator[Arena]:
    """An arena of each path in turn."""
    a = Arena.create(8 << 20, nlocks=16, use_native=request.param == "compiled")
    try:
        yield a
    finally:
        a.sems.seal()
        a.close()


def _shared_int64(a: Arena, v: int) -> Int64:
    off = a.alloc(24)
    a.words.store(off // 8, v & ((1 << 64) - 1))
    obj = Int64.__new__(Int64)
    lock = a.locks.lock(3)
    if a.core is not None:
        obj.__class__ = NativeSharedInt64
        obj._v = (a.core, off, lock, off)  # type: ignore[assignment]
    else:
        obj.__class__ = SharedInt64
        obj._v = (a, off // 8, lock, off)  # type: ignore[assignment]
    return obj


@pytest.fixture(params=["local", *PATHS])
def int64(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A function making an Int64 of value v: local, or shared on each path."""
    if request.param == "local":
        yield Int64
        return
    a = Arena.create(8 << 20, nlocks=16, use_native=request.param == "compiled")
    try:
        yield lambda v: _shared_int64(a, v)
    finally:
        a.sems.seal()
        a.close()


@pytest.mark.parametrize("old, new", [(1.0, 5), (5, 1.0), (True, 5), (5, False), ("5", 5),
                                      (None, 5), (5, None)])
def test_int64_cas_takes_two_ints(int64: Any, old: object, new: object) -> None:
    """Go's CompareAndSwap(old, new int64): any other argument is a TypeError, whether or not
    the value equals ``old``, and the value is left as it was."""
    for v in (5, 7):
        x = int64(v)
        with pytest.raises(TypeError):
            x.compare_and_swap(old, new)
        assert x.load() == v


def test_int64_cas_outside_int64_equals_nothing(int64: Any) -> None:
    x = int64(-1)
    assert x.compare_and_swap(1 << 64, 5) is False  # not -1 by wrapping
    assert x.compare_and_swap(-1, (1 << 63)) is True  # new wraps, as store does
    assert x.load() == -(1 << 63)
    assert x.compare_and_swap(-(1 << 63), 2) is True and x.load() == 2


def _in_thread(fn: Any) -> Any:
    """fn() run on another thread: its result, or the exception it raised."""
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # handed back to the test
            out.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join(20)
    assert not t.is_alive()
    return out[0]


def test_lock_reentry_raises_and_keeps_the_lock(either_arena: Arena) -> None:
    lock = either_arena.locks.lock(5)
    assert lock.acquire() is False
    with pytest.raises(RuntimeError, match="already held by this thread"):
        lock.acquire()
    assert lock.owner() == os.getpid()
    lock.release()
    assert lock.owner() == 0
    assert lock.acquire() is False  # free again: released once, as it was taken once
    lock.release()


def test_lock_release_by_a_non_holder_raises_and_changes_nothing(either_arena: Arena) -> None:
    lock = either_arena.locks.lock(6)
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()  # free
    assert lock.acquire() is False
    err = _in_thread(lock.release)  # held by this thread, released by another
    assert isinstance(err, RuntimeError) and "does not hold" in str(err)
    assert lock.owner() == os.getpid()
    lock.release()


def test_lock_owner_is_the_holders_pid_from_any_thread(either_arena: Arena) -> None:
    lock = either_arena.locks.lock(7)
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        lock.acquire()
        held.set()
        done.wait(20)
        lock.release()

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(20)
        assert lock.owner() == os.getpid()  # a thread's holder: its process, not its tid
    finally:
        done.set()
        t.join(20)
    assert lock.owner() == 0
