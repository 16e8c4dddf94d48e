"""``atomic.Int64`` three ways: local, shared on the Python path, shared on the compiled core.

The shared ones are promoted into a ``Fold`` each (``folded.py``: the real arena and lock
stripes, no process). The same calls go to all three and every result, or the exception raised
(type and message), must be the same, as must the word each shared one leaves in its arena.
"""

from __future__ import annotations

import pytest
from folded import Fold
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csp_mp._mp.shobj import attach_int64, new_int64_block
from csp_mp._shm import native
from csp_mp.atomic import Int64

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

I64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
WIDE = st.integers(min_value=-(1 << 70), max_value=1 << 70)
ARG = st.one_of(I64, WIDE, st.sampled_from([0, 1, -1, (1 << 63) - 1, -(1 << 63)]))

ops = st.one_of(
    st.tuples(st.just("load")),
    st.tuples(st.just("store"), ARG),
    st.tuples(st.just("add"), ARG),
    st.tuples(st.just("swap"), ARG),
    st.tuples(st.just("compare_and_swap"), ARG, ARG),
    st.tuples(st.just("compare_and_swap_current"), ARG),  # old = the current value
)


def _three(folds: tuple[Fold, Fold], value: int) -> list[tuple[str, Int64]]:
    out: list[tuple[str, Int64]] = [("local", Int64(value))]
    for fold in folds:
        obj = Int64(value)
        p0 = fold.ps[0]
        attach_int64(obj, p0, new_int64_block(p0, value))
        out.append((fold.kind, obj))
    assert type(out[2][1]).__name__ == "NativeSharedInt64"
    assert type(out[1][1]).__name__ == "SharedInt64"
    return out


def _call(obj: Int64, op: tuple) -> tuple:
    name, *args = op
    try:
        if name == "compare_and_swap_current":
            return ("ok", obj.compare_and_swap(obj.load(), *args))
        return ("ok", getattr(obj, name)(*args))
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def _agree(impls: list[tuple[str, Int64]], op: tuple) -> None:
    got = {name: _call(obj, op) for name, obj in impls}
    assert len(set(got.values())) == 1, f"{op!r}: {got}"
    loads = {name: obj.load() for name, obj in impls}
    assert len(set(loads.values())) == 1, f"after {op!r}: {loads}"


@settings(max_examples=150, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=I64, seq=st.lists(ops, max_size=20))
def test_int64_agrees(folds: tuple[Fold, Fold], start: int, seq: list[tuple]) -> None:
    impls = _three(folds, start)
    for op in seq:
        _agree(impls, op)
    # the word in the arena: two's complement
    for fold, (_, obj) in zip(folds, impls[1:], strict=True):
        assert fold.arena.words.view[obj._v[3] // 8] == impls[0][1].load() & ((1 << 64) - 1)


@pytest.mark.stress
@settings(max_examples=3000, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=I64, seq=st.lists(ops, max_size=60))
def test_int64_agrees_long(folds: tuple[Fold, Fold], start: int, seq: list[tuple]) -> None:
    impls = _three(folds, start)
    for op in seq:
        _agree(impls, op)


ODD = [
    ("compare_and_swap", 1.0, 5),
    ("compare_and_swap", 2.0, 5),
    ("compare_and_swap", True, 5),
    ("compare_and_swap", None, 5),
    ("compare_and_swap", "1", 5),
    ("compare_and_swap", 1, 5.0),
    ("compare_and_swap", 1, True),
    ("compare_and_swap", 1 << 64, 5),
    ("compare_and_swap", 1, 1 << 64),
    ("add", 1.0),
    ("add", True),
    ("add", None),
    ("add", 1 << 64),
    ("store", 1.5),
    ("store", False),
    ("store", "3"),
    ("store", -(1 << 64) - 1),
    ("swap", 2.0),
    ("swap", 1 << 63),
]


@pytest.mark.parametrize("op", ODD, ids=repr)
def test_int64_odd_arguments(folds: tuple[Fold, Fold], op: tuple) -> None:
    """Arguments of other types and out of range: the same result or the same exception on
    every implementation, and the same value afterwards."""
    _agree(_three(folds, 1), op)
