"""csp_mp.atomic: Int64 and Bool."""

from __future__ import annotations

import pytest
from helpers import run1

from csp_mp import WaitGroup, atomic, runtime
from csp_mp.atomic import Bool, Int64


def test_int64_operations() -> None:
    v = Int64()
    assert v.load() == 0
    v.store(5)
    assert v.load() == 5
    assert v.add(3) == 8
    assert v.add(-10) == -2
    assert v.swap(7) == -2
    assert v.load() == 7
    assert v.compare_and_swap(7, 9) is True
    assert v.compare_and_swap(7, 11) is False
    assert v.load() == 9
    assert Int64(-4).load() == -4


def test_int64_wraps_like_go() -> None:
    top = (1 << 63) - 1
    v = Int64(top)
    assert v.add(1) == -(1 << 63)
    assert v.add(-1) == top


@pytest.mark.parametrize("bad", [1.5, "1", None, True])
def test_int64_rejects_non_ints(bad: object) -> None:
    with pytest.raises(TypeError):
        Int64(bad)  # type: ignore[arg-type]
    v = Int64(1)
    with pytest.raises(TypeError):
        v.add(bad)  # type: ignore[arg-type]
    assert v.load() == 1


def test_bool_operations() -> None:
    b = Bool()
    assert b.load() is False
    b.store(True)
    assert b.load() is True
    assert b.swap(False) is True
    assert b.load() is False
    assert b.compare_and_swap(False, True) is True
    assert b.compare_and_swap(False, True) is False
    assert b.load() is True
    assert Bool(True).load() is True


def test_counter_under_many_goroutines() -> None:
    def main():
        n = Int64()
        wg = WaitGroup()

        def work():
            for _ in range(10):
                n.add(1)
                runtime.gosched()

        for _ in range(100):
            wg.go(work)
        wg.wait()
        return n.load()
    assert run1(main) == 1000


def test_module_exports() -> None:
    assert atomic.Int64 is Int64 and atomic.Bool is Bool
