from __future__ import annotations

import array
import gc
import math
import threading
import time
from dataclasses import dataclass
from enum import IntEnum

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csp_mp._shm import codec
from csp_mp._shm.arena import Arena
from csp_mp._shm.codec import OOB_MIN, TypedCodec, decode, discard, encode
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.ring import Ring

from . import _workers


class Color(IntEnum):
    RED = 1


@dataclass
class Point:
    x: int
    y: int


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (set, frozenset)):
        return a == b
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, memoryview):
        return a.format == b.format and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


VALUES = [
    0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**40,
    0.0, -0.0, 1.5, math.inf, math.nan,
    "", "hé", "\ud800", b"", b"\x00\xff", bytearray(b"ab"), True, False, None,
    [], {}, [1, "a", [2.0, None]], {"a": [1, {"b": b"x"}]},
    (), (1,), (1, "x", [2]), ((1, 2), 3), [(1, 2)], {"k": (1,)}, {1: "int key"},
    {1, 2}, frozenset({3}), Color.RED, [Color.RED], Point(1, 2), complex(1, 2),
    memoryview(b"abc"), memoryview(array.array("i", [1, -2, 3])),
    np.arange(12, dtype=np.int32).reshape(3, 4), np.zeros(0), np.float64(2.5),
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:40] for v in VALUES])
def test_round_trip_exact_types(value: object, arena: Arena) -> None:
    for a in (None, arena):
        assert _same(decode(encode(value, a), a), value)


def test_msgpack_used_for_plain_data_only() -> None:
    for v in (1, "s", [1, {"a": None}], {"x": [1.5]}):
        assert encode(v) == msgspec.msgpack.encode(v)
    assert encode((1, 2))[:2] == b"\xc1\x01"
    for v in (Color.RED, [Color.RED], {1: 2}, 2**64, [(1,)], {"a": {1}}):
        assert encode(v)[:2] == b"\x80\x05"


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=4), kids, max_size=4)
    | st.tuples(kids, kids),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(plain)
def test_round_trip_generated(value: object) -> None:
    assert _same(decode(encode(value)), value)


@pytest.mark.parametrize(
    "value",
    [b"x" * OOB_MIN, bytearray(b"y" * (OOB_MIN + 1)), memoryview(b"z" * OOB_MIN),
     np.arange(OOB_MIN, dtype=np.float64), {"a": np.ones((300, 300)), "b": [np.arange(9)]},
     memoryview(np.arange(OOB_MIN, dtype=np.int16).reshape(2, -1))],
    ids=["bytes", "bytearray", "memoryview", "ndarray", "nested", "memoryview-2d"],
)
def test_large_buffers_out_of_band(value: object, arena: Arena) -> None:
    start = arena.free_bytes()
    data = encode(value, arena)
    assert len(data) < 4096 and data[:2] == b"\xc1\x02"
    assert arena.free_bytes() < start
    got = decode(data, arena)
    assert _same(got, value)
    if isinstance(got, np.ndarray):
        got[0] = 42  # the receiver's own, writable copy
        assert value[0] != 42
    del got
    gc.collect()
    arena.collect()
    assert arena.free_bytes() == start


def test_discard_frees_undelivered(arena: Arena) -> None:
    start = arena.free_bytes()
    data = encode([np.ones(OOB_MIN), np.ones(OOB_MIN)], arena)
    discard(data, arena)
    discard(encode(1, arena), arena)
    assert arena.free_bytes() == start


def test_oob_needs_arena_to_decode(arena: Arena) -> None:
    data = encode(b"x" * OOB_MIN, arena)
    with pytest.raises(ValueError):
        decode(data)
    discard(data, arena)


def test_unserializable_raises_type_error_naming_type(arena: Arena) -> None:
    start = arena.free_bytes()
    for bad, name in [(threading.Lock(), "lock"), ([np.ones(OOB_MIN), threading.Lock()], "list"),
                      ((x for x in ()), "generator")]:
        with pytest.raises(TypeError, match=name):
            encode(bad, arena)
    assert arena.free_bytes() == start


def test_callables_fall_back_to_cloudpickle() -> None:
    k = 3
    assert decode(encode(lambda x: x + k))(1) == 4


def test_typed_codec_validates_strictly() -> None:
    c = TypedCodec(int)
    assert c.decode(c.encode(5)) == 5
    for bad in ("5", 5.0, True, None):
        with pytest.raises(TypeError, match="channel of int"):
            c.encode(bad)
    t = TypedCodec(tuple[int, str])
    assert t.decode(t.encode((1, "a"))) == (1, "a")
    with pytest.raises(TypeError):
        t.validate((1, 2))
    lst = TypedCodec(list[float])
    assert lst.decode(lst.encode([1.0, 2])) == [1.0, 2.0]
    with pytest.raises(TypeError):
        lst.validate(["x"])
    pt = TypedCodec(Point)
    assert pt.decode(pt.encode(Point(1, 2))) == Point(1, 2)
    with pytest.raises(TypeError):
        pt.validate({"x": 1})


def test_typed_codec_for_foreign_class(arena: Arena) -> None:
    c = TypedCodec(np.ndarray, arena)
    a = np.arange(OOB_MIN)
    assert np.array_equal(c.decode(c.encode(a)), a)
    with pytest.raises(TypeError, match="ndarray"):
        c.encode([1, 2])
    b = TypedCodec(bytes, arena)
    assert b.decode(b.encode(b"q" * OOB_MIN)) == b"q" * OOB_MIN
    gc.collect()
    arena.collect()


def test_values_through_a_child_process(arena: Arena, ctx) -> None:
    """Values cross two processes both ways, large buffers included, blocks all freed."""
    bell, back = Doorbell.create(arena), Doorbell.create(arena)  # a native bell keeps its block
    start = arena.free_bytes()
    inbox, outbox = Ring.create(arena, 1 << 14), Ring.create(arena, 1 << 14)
    p = ctx.Process(target=_workers.codec_echo, args=(arena, inbox.offset, outbox.offset, bell,
                                                      back))
    p.start()
    try:
        values = [1, (1, "x"), {"a": [1.5]}, Point(3, 4), b"b" * (OOB_MIN * 3),
                  np.arange(OOB_MIN * 2, dtype=np.uint8), {"arr": np.ones((512, 512))}]
        for v in values:
            assert inbox.try_put(encode(v, arena))
            bell.ring()
            deadline = time.monotonic() + 20
            while (data := outbox.try_get()) is None:
                assert time.monotonic() < deadline
                back.wait(0.05)
            got = decode(data, arena)
            assert _same(got, v)
            del got
        assert inbox.try_put(b"")
        bell.ring()
        p.join(20)
        assert p.exitcode == 0
    finally:
        if p.is_alive():
            p.kill()
            p.join()
    gc.collect()
    arena.collect()
    inbox.destroy()
    outbox.destroy()
    assert arena.free_bytes() == start


def test_decode_dispatch_is_unambiguous() -> None:
    assert decode(encode({})) == {} and decode(b"\x80") == {}
    with pytest.raises(ValueError):
        decode(b"\xc1\x09")
    assert codec._EXT == 0xC1
