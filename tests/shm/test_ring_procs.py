"""Rings between real processes: conservation, order, and producers killed mid-write."""

from __future__ import annotations

import os
import signal
import time

import pytest

from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.ring import Ring, SpscRing, attach_ring

from . import _workers

#: Multiplies the message counts of the stress tests (CSP_MP_STRESS_SCALE=10 for 10**7).
SCALE = float(os.environ.get("CSP_MP_STRESS_SCALE", "1"))


def _run_hammer(arena: Arena, ctx, ring, nprod: int, ncons: int, total: int, batch: int) -> None:
    per = total // nprod
    bell = Doorbell.create(arena)
    pipes = [ctx.Pipe(duplex=False) for _ in range(ncons)]
    cons = [
        ctx.Process(target=_workers.consumer, args=(bell, arena, ring.offset, nprod, per, w))
        for _, w in pipes
    ]
    prods = [
        ctx.Process(target=_workers.producer, args=(bell, arena, ring.offset, i, per, 8, batch))
        for i in range(nprod)
    ]
    for p in cons + prods:
        p.start()
    for _, w in pipes:
        w.close()  # a consumer that dies then makes recv() raise EOFError instead of hanging
    try:
        assert arena.wait_attached(nprod + ncons, 30)
        arena.seal()
        for p in prods:
            p.join(120)
            assert p.exitcode == 0
        for _ in cons:
            while not ring.try_put(b""):
                time.sleep(0.001)
            bell.ring()
        results = [r.recv() for r, _ in pipes]
        for p in cons:
            p.join(30)
            assert p.exitcode == 0
    finally:
        for p in cons + prods:
            if p.exitcode is None:
                p.kill()
                p.join()
    assert all(errors == 0 for errors, _ in results), "duplicate or out-of-order message"
    full = bytes([0xFF]) * (per // 8) + (bytes([(1 << (per % 8)) - 1]) if per % 8 else b"")
    for producer in range(nprod):
        maps = [seen[producer] for _, seen in results]
        union = bytes(len(full))
        for m in maps:
            assert int.from_bytes(m, "little") & int.from_bytes(union, "little") == 0, "twice"
            union = (int.from_bytes(m, "little") | int.from_bytes(union, "little")).to_bytes(
                len(full), "little"
            )
        assert union == full, f"messages of producer {producer} lost"
    assert len(ring) == 0


@pytest.mark.stress
def test_hammer_4_producers_2_consumers(arena: Arena, ctx) -> None:
    """Every one of 10**6 messages arrives exactly once, each producer's in order."""
    ring = Ring.create(arena, 1 << 16)
    _run_hammer(arena, ctx, ring, 4, 2, int(1_000_000 * SCALE), batch=64)
    ring.destroy()


@pytest.mark.stress
def test_hammer_unbatched(arena: Arena, ctx) -> None:
    ring = Ring.create(arena, 1 << 12)
    _run_hammer(arena, ctx, ring, 4, 2, int(40_000 * SCALE), batch=1)
    ring.destroy()


@pytest.mark.stress
def test_hammer_spsc(arena: Arena, ctx) -> None:
    ring = SpscRing.create(arena, 1 << 12)
    _run_hammer(arena, ctx, ring, 1, 1, int(200_000 * SCALE), batch=32)
    ring.destroy()


def test_half_written_frame_never_delivered(arena: Arena, ctx) -> None:
    """A producer SIGKILLed between writing a frame and committing it, holding the lock."""
    ring = Ring.create(arena, 4096)
    assert ring.try_put(b"before")
    bell = Doorbell.create(arena)
    p = ctx.Process(target=_workers.hold_half_written, args=(arena, ring.offset, bell, 500))
    p.start()
    try:
        assert bell.wait(20)
        assert ring._lock.owner() == p.pid
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(20)
    assert ring.try_get() == b"before"  # takes the dead producer's lock over
    assert ring.try_get() is None
    assert ring.try_put(b"after")
    assert ring.get_many(10) == [b"after"]
    assert len(ring) == 0
    ring.destroy()


def test_producer_killed_at_random_leaves_ring_usable(arena: Arena, ctx) -> None:
    """Kill one of two producers while both hammer the ring with large frames; the other's
    messages all arrive, the victim's arrive as an intact in-order prefix."""
    ring = Ring.create(arena, 1 << 14)
    bell = Doorbell.create(arena)
    victim = ctx.Process(target=_workers.endless_producer, args=(bell, arena, ring.offset, 0, 3000))
    survivor = ctx.Process(
        target=_workers.producer, args=(bell, arena, ring.offset, 1, 3000, 200, 1)
    )
    victim.start()
    try:
        assert bell.wait(20)
        survivor.start()
        seqs: dict[int, list[int]] = {0: [], 1: []}
        deadline = time.monotonic() + 60
        killed = False
        # until the survivor is done AND the victim was killed mid-stream: on a loaded machine
        # the survivor can finish before the victim has sent its first 200
        while len(seqs[1]) < 3000 or not killed:
            assert time.monotonic() < deadline, "survivor's messages did not all arrive"
            got = ring.get_many(64)
            for data in got:
                p, s = _workers.check(data)
                seqs[p].append(s)
            if not killed and len(seqs[0]) > 200 and len(seqs[1]) > 100:
                os.kill(victim.pid, signal.SIGKILL)
                killed = True
            if not got:
                bell.wait(0.01)
        survivor.join(20)
        assert survivor.exitcode == 0
        victim.join(20)
        seqs[0] += [_workers.check(d)[1] for d in ring.get_many(1 << 16)]
    finally:
        for p in (victim, survivor):
            if p.is_alive():
                p.kill()
            if p.pid is not None:
                p.join()
    assert seqs[1] == list(range(3000))
    assert seqs[0] == list(range(len(seqs[0])))
    assert ring.try_put(b"x") and ring.try_get() == b"x"
    ring.destroy()


def test_rings_found_by_offset_in_child(arena: Arena, ctx) -> None:
    ring = SpscRing.create(arena, 1024)
    bell = Doorbell.create(arena)
    p = ctx.Process(target=_workers.producer, args=(bell, arena, ring.offset, 0, 50, 10, 1))
    p.start()
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < 50 and time.monotonic() < deadline:
        got += ring.get_many(50) or ([] if bell.wait(0.05) else [])
    p.join(20)
    assert [_workers.check(d) for d in got] == [(0, s) for s in range(50)]
    assert isinstance(attach_ring(arena, ring.offset), SpscRing)
    ring.destroy()
