"""Rings against a model: single process, every interleaving hypothesis can find."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from csp_mp._shm.arena import Arena
from csp_mp._shm.ring import HEADER, Ring, SpscRing, attach_ring, make_ring

CAP = 256  # small, so wrap-around, full and out-of-band cases come up quickly


def _model_fits(model: deque[bytes], used: int, n: int, tail_index: int) -> tuple[bool, int]:
    """Would an ``n``-byte message fit, and how many bytes would it take."""
    need = 24 if n > CAP // 2 - 8 else 8 + ((n + 7) & ~7)
    rem = CAP - tail_index
    skip = 0 if rem >= need else rem
    return CAP - used >= need + skip, need + skip


class RingModel(RuleBasedStateMachine):
    cls: type = Ring

    def __init__(self) -> None:
        super().__init__()
        self.arena = Arena.create(1 << 20, nlocks=4)
        self.free0 = self.arena.free_bytes()
        self.ring = self.cls.create(self.arena, CAP)
        self.model: deque[tuple[bytes, int]] = deque()  # (message, bytes it takes)
        self.used = 0
        self.tail = 0  # data index of the next frame
        self.counter = 0

    def _message(self, n: int) -> bytes:
        self.counter += 1
        return (b"%d|" % self.counter + b"x" * n)[: max(n, 1)] if n else b""

    @rule(n=st.integers(0, 3 * CAP))
    def put(self, n: int) -> None:
        data = self._message(n)
        fits, size = _model_fits(deque(m for m, _ in self.model), self.used, len(data), self.tail)
        assert self.ring.try_put(data) is fits
        if fits:
            self.model.append((data, size))
            self.used += size
            self.tail = (self.tail + size) % CAP

    @rule(sizes=st.lists(st.integers(0, CAP // 2), max_size=8))
    def put_many(self, sizes: list[int]) -> None:
        items = [self._message(n) for n in sizes]
        expect = 0
        for data in items:
            fits, size = _model_fits(deque(), self.used, len(data), self.tail)
            if not fits:
                break
            self.model.append((data, size))
            self.used += size
            self.tail = (self.tail + size) % CAP
            expect += 1
        assert self.ring.put_many(items) == expect

    @rule()
    def get(self) -> None:
        got = self.ring.try_get()
        if not self.model:
            assert got is None
            return
        data, size = self.model.popleft()
        assert got == data
        self.used -= size

    @rule(k=st.integers(1, 10))
    def get_many(self, k: int) -> None:
        got = self.ring.get_many(k)
        want = [self.model.popleft() for _ in range(min(k, len(self.model)))]
        assert got == [d for d, _ in want]
        self.used -= sum(s for _, s in want)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def reattach(self) -> None:
        self.ring = attach_ring(self.arena, self.ring.offset)
        assert isinstance(self.ring, self.cls)  # the native subclass on a native arena

    @invariant()
    def counts_match(self) -> None:
        assert len(self.ring) == len(self.model)
        stats = self.ring.stats()
        assert stats.count == len(self.model) and stats.capacity == CAP
        assert stats.used == self.used

    def teardown(self) -> None:
        self.ring.destroy()
        assert self.arena.free_bytes() == self.free0  # out-of-band blocks all freed
        self.arena.sems.seal()
        self.arena.close()


class SpscRingModel(RingModel):
    cls = SpscRing


RING_SETTINGS = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestRing = RingModel.TestCase
TestRing.settings = RING_SETTINGS
TestSpscRing = SpscRingModel.TestCase
TestSpscRing.settings = RING_SETTINGS


def test_capacity_rounds_to_power_of_two(arena: Arena) -> None:
    r = Ring.create(arena, 1000)
    assert r.capacity == 1024
    assert arena.block_size(r.offset) == HEADER + 1024
    r.destroy()


def test_make_ring_picks_by_architecture(arena: Arena, monkeypatch: pytest.MonkeyPatch) -> None:
    from csp_mp._shm import ring as ring_mod

    monkeypatch.setattr(ring_mod, "TSO", False)
    r = make_ring(arena, 256, spsc=True)
    assert isinstance(r, Ring) and not isinstance(r, SpscRing)
    r.destroy()
    monkeypatch.setattr(ring_mod, "TSO", True)
    r = make_ring(arena, 256, spsc=True)
    assert isinstance(r, SpscRing)
    r.destroy()


def test_accepts_any_buffer(arena: Arena) -> None:
    import array

    r = Ring.create(arena, 4096)
    assert r.try_put(bytearray(b"abc"))
    assert r.try_put(memoryview(array.array("i", [1, 2])))
    assert r.put_many([b"x", bytearray(b"y"), b"z" * 3000]) == 3
    assert r.get_many(10) == [b"abc", array.array("i", [1, 2]).tobytes(), b"x", b"y", b"z" * 3000]
    r.destroy()


@pytest.mark.parametrize("cls", [Ring, SpscRing])
def test_partial_take_across_a_lap_that_ended_exactly(arena: Arena, cls: type) -> None:
    """A frame that ends exactly at the lap end leaves no wrap marker: the next one starts at
    data index 0, and a batch take that reaches it must not read past the ring's data."""
    ring = cls.create(arena, 256)
    msgs = [b"m%02d" % i + b"." * 21 for i in range(12)]  # 24 bytes: 32-byte frames
    assert ring.put_many(msgs[:8]) == 8  # exactly one lap
    assert ring.get_many(4) == msgs[:4]
    assert ring.put_many(msgs[8:12]) == 4  # from data index 0, no wrap marker before them
    assert ring.get_many(6) == msgs[4:10]  # takes across the lap end
    assert ring.get_many(10) == msgs[10:12]
    assert len(ring) == 0
    ring.destroy()
