"""The goroutine record's two classes: ``PyG`` (g.py, the specification) and the compiled core's
``NativeG`` (grecord.c) start every field alike, make batches alike (``many``), and the compiled
one behaves as slots do (an unset field raises, cycles through it are collected) and refuses
bad input with a clear error."""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys

import pytest

from csp_mp._hub import g as gmod
from csp_mp._shm import native

FIELDS = ("id", "fn", "args", "kwargs", "p", "local", *(name for name, _ in gmod.AT_START))


def _native() -> type:
    if not native.built():
        pytest.skip("the compiled core is not built")
    os.environ["CSP_MP_NATIVE"] = "1"
    try:
        return gmod.record_class()
    finally:
        del os.environ["CSP_MP_NATIVE"]


def _classes() -> list[type]:
    return [gmod.PyG, _native()] if native.built() else [gmod.PyG]


def _fields(g: object) -> dict:
    return {name: getattr(g, name) for name in FIELDS}


def body(*a: object) -> None:
    return None


def test_both_records_start_every_field_alike() -> None:
    args, kwargs = (1, "x"), {"k": 2}
    made = [_fields(cls(7, body, args, kwargs, 1, False)) for cls in _classes()]
    assert made[0] == dict(zip(FIELDS, (7, body, args, kwargs, 1, False,
                                        *(v for _, v in gmod.AT_START)), strict=True))
    assert all(m == made[0] for m in made)
    for cls in _classes():
        g = cls(3, body, (), {}, 0)  # local defaults to True
        assert g.local is True and g.state is gmod.RUNNABLE and g.case == -1
        assert g.describe() == "goroutine 3 (test_grecord.body)" and g.g is g
        assert isinstance(g, gmod.G) and not hasattr(g, "__dict__")


def test_many_numbers_registers_and_marks_each_record_alike() -> None:
    outs = []
    for cls in _classes():
        allgs: dict = {}
        ids = itertools.count(10)
        items = [(body, (i,), ("site", i)) for i in range(3)]
        gs = cls.many(ids, allgs, 1, items)
        assert [g.id for g in gs] == [10, 11, 12] and next(ids) == 13
        assert allgs == {g.id: g for g in gs}
        assert len({id(g.kwargs) for g in gs}) == 3  # a dict of its own each
        outs.append([_fields(g) for g in gs])
        assert [g.made for g in gs] == [("site", i) for i in range(3)]
        assert all(g.local is False and g.kwargs == {} for g in gs)
    assert all(o == outs[0] for o in outs)


def test_the_compiled_record_behaves_as_slots_do() -> None:
    cls = _native()
    g = cls(1, body, (), {}, 0)
    g.state = gmod.WAITING
    g.param = g  # a cycle through the record
    assert g.state == gmod.WAITING
    del g.reason
    with pytest.raises(AttributeError):
        g.reason  # noqa: B018
    with pytest.raises(AttributeError):
        g.other = 1  # type: ignore[attr-defined]
    freed: list = []

    class Marker:
        def __del__(self) -> None:
            freed.append(1)

    g.elem = Marker()
    del g
    gc.collect()
    assert freed == [1]


def test_the_compiled_record_refuses_bad_input() -> None:
    cls = _native()
    grecord = native.core().GRecord
    with pytest.raises(TypeError):
        cls(1, body)  # too few
    with pytest.raises(TypeError, match="iterator, a dict and a list"):
        cls.many([1, 2], {}, 0, [])
    with pytest.raises(TypeError, match=r"\(fn, args, made\)"):
        cls.many(iter([1]), {}, 0, [(body, ())])
    allgs: dict = {}
    with pytest.raises(RuntimeError, match="ran out"):
        cls.many(iter([1]), allgs, 0, [(body, (), None)] * 2)
    assert list(allgs) == [1]  # the first made and registered
    names = tuple(name for name, _ in gmod.AT_START)
    values = tuple(v for _, v in gmod.AT_START)
    with pytest.raises(ValueError, match="field 7 is 'status' here, state in the record"):
        grecord.start_with(("glet", "status", *names[2:]), values)
    with pytest.raises(TypeError, match="two tuples of 12"):
        grecord.start_with(names[:-1], values[:-1])
    assert cls(1, body, (), {}, 0).state is gmod.RUNNABLE  # the values in place still


def test_no_compiled_record_before_its_fields_start_values_are_given() -> None:
    if not native.built():
        pytest.skip("the compiled core is not built")
    out = subprocess.run(
        [sys.executable, "-c", "from csp_mp._shm import native\n"
         "try:\n    native.core().GRecord(1, print, (), {}, 0)\n"
         "except RuntimeError as e:\n    print(e)"],
        capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "GRecord: start_with() has not run", out.stderr
