from __future__ import annotations

import gc
import os
import pickle
import random
import signal

import pytest

from csp_mp._shm.arena import Arena, ArenaPoisoned
from csp_mp._shm.atomics import Words
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.ring import Ring

from . import _workers


def test_words_are_aligned_64_bit(arena: Arena) -> None:
    w = Words(arena.buf[4096:4160])
    w.store(3, 2**64 - 1)
    assert w.load(3) == 2**64 - 1
    assert arena.buf[4096 + 24 : 4096 + 32] == b"\xff" * 8
    with pytest.raises(ValueError):
        Words(arena.buf[0:12])
    with pytest.raises((ValueError, OverflowError)):
        w.store(0, 2**64)


def test_alloc_free_random_conserves_space(arena: Arena) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    start = arena.free_bytes()
    live: dict[int, bytes] = {}
    for _ in range(3000):
        if live and rng.random() < 0.45:
            off = rng.choice(list(live))
            assert arena.map[off : off + len(live[off])] == live[off]
            assert arena.decref(off)
            del live[off]
        else:
            n = rng.choice([0, 1, 63, 64, 65, 1000, 5000, 70000, 300000])
            try:
                off = arena.alloc(n)
            except MemoryError:
                continue
            assert off % 64 == 0 and arena.block_size(off) == n
            assert all(not (o <= off < o + max(len(d), 1)) for o, d in live.items())
            data = bytes([rng.randrange(256)]) * n
            arena.map[off : off + n] = data
            live[off] = data
    for off in live:
        arena.decref(off)
    assert arena.free_bytes() == start


def test_refcount_frees_at_zero(arena: Arena) -> None:
    start = arena.free_bytes()
    off = arena.alloc(100)
    arena.incref(off)
    assert arena.refcount(off) == 2
    assert not arena.decref(off)
    assert arena.decref(off)
    assert arena.free_bytes() == start
    with pytest.raises(ValueError):
        arena.decref(off)
    with pytest.raises(ValueError):
        arena.decref(12345)


def test_exhaustion_raises_memory_error() -> None:
    with Arena.create(1 << 20, nlocks=2) as a:
        with pytest.raises(MemoryError):
            a.alloc(2 << 20)
        offs = []
        with pytest.raises(MemoryError):
            while True:
                offs.append(a.alloc(10000))
        for off in offs:
            a.decref(off)
        a.sems.seal()


def test_lease_frees_block_when_last_view_dies(arena: Arena) -> None:
    start = arena.free_bytes()
    off = arena.alloc(1000)
    view = arena.lease(off, 1000)
    part = view[10:20]
    del view
    gc.collect()
    arena.collect()
    assert arena.refcount(off) == 1
    part[0] = 7
    del part
    gc.collect()
    assert arena.collect() == 1
    assert arena.free_bytes() == start


def test_arena_passed_to_forkserver_child_then_sealed(arena: Arena, ctx) -> None:
    out = Doorbell.create(arena)
    ring = Ring.create(arena, 4096)
    off = arena.alloc(5000)
    arena.map[off : off + 5000] = bytes(range(250)) * 20
    names = arena.sems.names
    if arena.native:  # futex words and robust mutexes in the arena: nothing is named
        assert not names
    else:
        assert names and all(os.path.exists(f"/dev/shm/sem.{n[1:]}") for n in names)
    p = ctx.Process(target=_workers.echo_arena, args=(out, arena, off, ring.offset))
    p.start()
    assert arena.wait_attached(1, 20)
    arena.seal()
    assert not any(os.path.exists(f"/dev/shm/sem.{n[1:]}") for n in names)
    assert out.wait(20)
    p.join(20)
    assert p.exitcode == 0
    new = int(ring.try_get())
    assert arena.map[new : new + 5000] == (bytes(range(250)) * 20)[::-1]
    arena.decref(new)
    arena.decref(off)
    ring.destroy()
    with pytest.raises(RuntimeError, match="sealed"):
        pickle.dumps(arena)


def test_from_fd_rejects_other_memory(arena: Arena) -> None:
    fd = os.memfd_create("x")
    os.ftruncate(fd, 1 << 16)
    with pytest.raises(ValueError):
        Arena.from_fd(fd, arena.locks)


@pytest.mark.parametrize("changing", [True, False])
def test_allocator_poisoned_only_by_a_holder_killed_changing_its_lists(
        arena: Arena, ctx, changing: bool) -> None:
    """A process killed while it changed the free lists poisons the arena: every allocation
    after raises. One killed holding the lock for a one-store section (a word added, a
    refcount) left nothing torn: the lock is taken over and the allocator goes on."""
    bell = Doorbell.create(arena)
    p = ctx.Process(target=_workers.hold_allocator, args=(arena, bell, changing))
    p.start()
    try:
        assert bell.wait(20)
        assert arena._lock.owner() == p.pid
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(20)
    assert arena.allocator_sound() is not changing
    assert arena.poisoned() is changing
    if changing:
        with pytest.raises(ArenaPoisoned):
            arena.alloc(10)
        with pytest.raises(ArenaPoisoned):
            arena.fetch_add(4096, 1)
        return
    off = arena.alloc(10)
    assert arena.refcount(off) == 1
    assert arena.fetch_add(4096, 5) + 5 == arena.fetch_add(4096, 0)
    arena.decref(off)
    assert arena.allocator_sound()
