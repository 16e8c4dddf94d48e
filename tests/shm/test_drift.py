"""Behaviours the compiled core and the Python path once did differently, now the same on both:
each test runs on both paths in one process (and the local object where there is one)."""

from __future__ import annotations

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
