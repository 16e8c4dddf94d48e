"""The compiled core on its own: words, robust locks, doorbells, rings, channel fast paths.

Every test here runs real processes on a real arena. The rest of the suite runs on the compiled
core too (unless ``CSP_MP_NATIVE=0``), and on the Python path in CI's second run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from csp_mp._shm import native
from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.ring import NativeRing, Ring, attach_ring

from . import _workers

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

CHAN_MAGIC = 0xC4A7_0000_0000_0001


@pytest.fixture
def carena() -> Iterator[Arena]:
    """An arena on the compiled core, whatever CSP_MP_NATIVE says."""
    a = Arena.create(16 << 20, nlocks=8, use_native=True)
    try:
        yield a
    finally:
        a.sems.seal()
        a.close()


def _word(a: Arena) -> int:
    off = a.alloc(8)
    a.core.store(off, 0)
    return off


def _chan_block(a: Arena, cap: int, lock: int = 3) -> int:
    """A shared channel block laid out as csp_mp/_chan/shared.py lays it (no waiters)."""
    off = a.alloc(128)
    key = lock - 1  # Ring.create maps key k to lock 1 + k % (nlocks - 1)
    words = [0, cap, 0, 0, Ring.create(a, 4096, key).offset, Ring.create(a, 1024, key).offset,
             Ring.create(a, 1024, key).offset, lock, 0, 0]
    for i, v in enumerate(words[1:], 1):
        a.core.store(off + 8 * i, v)
    a.core.store(off, CHAN_MAGIC)
    return off


def test_words(carena: Arena) -> None:
    c, off = carena.core, _word(carena)
    c.store(off, 5)
    assert c.load(off) == 5
    assert c.cas(off, 5, 7) is True and c.cas(off, 5, 9) is False and c.load(off) == 7
    assert c.fetch_add(off, 3) == 7 and c.load(off) == 10
    assert carena.words.load(off // 8) == 10  # the same word the Python path reads


def test_signed_words_wrap_as_int64(carena: Arena) -> None:
    c, off = carena.core, _word(carena)
    c.istore(off, 2**63 - 1)
    assert c.iadd(off, 1) == -(2**63)
    assert c.iswap(off, -5) == -(2**63)
    assert c.icas(off, -5, 3) is True and c.icas(off, -5, 4) is False and c.iload(off) == 3


@pytest.mark.parametrize("call", [
    lambda c, n: c.load(-8), lambda c, n: c.load(n), lambda c, n: c.load(12),
    lambda c, n: c.store(n - 4, 1), lambda c, n: c.fetch_add(1 << 40, 1),
    lambda c, n: c.lock(8), lambda c, n: c.unlock(-1),
    lambda c, n: c.ring_try_put(4096, b"x"), lambda c, n: c.ring_try_get(n - 64),
    lambda c, n: c.chan_send(4096, b"x"), lambda c, n: c.chan_recv(n + 64),
    lambda c, n: c.bell_ring(n),
], ids=["negative", "end", "misaligned", "straddles-end", "far", "lock-index", "unlock-index",
        "not-a-ring", "ring-at-end", "not-a-channel", "chan-past-end", "bell-past-end"])
def test_bad_offsets_raise(carena: Arena, call) -> None:
    with pytest.raises(ValueError):
        call(carena.core, carena.size)


def test_closed_region_raises_instead_of_touching_memory() -> None:
    a = Arena.create(1 << 20, nlocks=2, use_native=True)
    core = a.core
    a.sems.seal()
    a.close()
    with pytest.raises(ValueError, match="closed"):
        core.load(0)
    with pytest.raises(ValueError, match="closed"):
        core.lock(0)


def test_lock_misuse_raises(carena: Arena) -> None:
    lock = carena.locks.lock(2)
    assert lock.acquire() is False
    with pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
    assert lock.owner() == os.getpid()  # the main thread's id is the pid
    lock.release()
    assert lock.owner() == 0
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_rings_interoperate_with_the_python_path(carena: Arena) -> None:
    """Frames written by either implementation are read by the other, out-of-band ones too."""
    off = Ring.create(carena, 1024).offset
    py, c = Ring(carena, off), NativeRing(carena, off)
    assert type(attach_ring(carena, off)) is NativeRing
    big = b"B" * 2000  # more than half the ring: out of band
    assert py.try_put(b"one") and c.try_put(b"two") and c.try_put(big) and py.try_put(big)
    assert c.put_many([b"3", b"4", bytearray(b"5")]) == 3
    assert len(c) == len(py) == 7
    assert [c.try_get(), py.try_get(), py.try_get(), c.try_get()] == [b"one", b"two", big, big]
    assert py.get_many(10) == [b"3", b"4", b"5"]
    assert c.try_get() is None and c.get_many(5) == []


def test_ring_move_keeps_every_frame_in_order(carena: Arena) -> None:
    """A full queue moved to a bigger one (a shared channel's buffer growing): inline and
    out-of-band frames, across the source's wrap point, arrive in order and the source is left
    empty; a destination too small takes what fits and leaves the rest in the source."""
    src = NativeRing.create(carena, 512, 2)
    for _ in range(9):  # move the head past the start: the frames below wrap around
        assert src.try_put(b"w" * 40) and src.try_get() == b"w" * 40
    big = b"B" * 400  # more than half the ring: out of band
    items = [b"%02d" % i + b"x" * (i * 7 % 30) for i in range(8)]
    items.insert(3, big)
    for item in items:
        assert src.try_put(item)
    dst = NativeRing.create(carena, 1024, 2)
    assert dst.try_put(b"first")
    with src.lock:
        assert carena.core.ring_move_locked(src.offset, dst.offset) == len(items)
    assert len(src) == 0 and src.try_get() is None
    assert dst.get_many(20) == [b"first", *items]
    small = NativeRing.create(carena, 64, 2)  # two frames of 8 + 24 bytes
    for item in (b"a" * 20, b"b" * 20, b"c" * 20):
        assert src.try_put(item)
    with src.lock:
        assert carena.core.ring_move_locked(src.offset, small.offset) == 2
    assert small.get_many(5) == [b"a" * 20, b"b" * 20] and src.get_many(5) == [b"c" * 20]


def test_ring_fills_and_wraps(carena: Arena) -> None:
    r = NativeRing.create(carena, 256)
    sent = got = 0
    for _ in range(50):  # many laps, with a wrap marker now and then
        while r.try_put(b"%05d" % sent + b"x" * (sent % 23)):
            sent += 1
        for item in r.get_many(7):
            assert item == b"%05d" % got + b"x" * (got % 23)
            got += 1
    assert got > 200


def test_lock_recovered_from_holder_killed_while_others_wait(carena: Arena, ctx) -> None:
    """kill -9 of a holder while three processes queue on the lock: one of them takes it over,
    all finish, and no increment made under the lock is lost."""
    bell = Doorbell.create(carena)
    word, rec = _word(carena), _word(carena)
    holder = ctx.Process(target=_workers.hold_native_lock, args=(carena, 4, bell))
    holder.start()
    workers = []
    try:
        assert bell.wait(20)
        workers = [ctx.Process(target=_workers.count_under_lock,
                               args=(carena, 4, word, 2000, rec, bell)) for _ in range(3)]
        for w in workers:
            w.start()
        for _ in workers:
            assert bell.wait(20)  # each is running (and soon blocked on the held lock)
        assert carena.core.load(word) == 0
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(20)
        for w in workers:
            w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert carena.core.load(word) == 3 * 2000
    assert carena.core.load(rec) == 1


def test_doorbell_wait_lets_a_signal_handler_raise(carena: Arena) -> None:
    bell = Doorbell.create(carena)

    def boom(signum: int, frame: object) -> None:
        raise KeyError("from the handler")

    old = signal.signal(signal.SIGALRM, boom)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyError, match="from the handler"):
            bell.wait(10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    bell.ring()
    assert bell.pending == 1 and bell.wait(0) and bell.pending == 0


def test_doorbell_saturates_instead_of_overflowing(carena: Arena) -> None:
    bell = Doorbell.create(carena)
    carena.core.store(bell._bell.offset, 0x7FFF_FFFF)  # count at its maximum, no sleeper
    bell.ring()
    assert bell.pending == 0x7FFF_FFFF
    assert bell.drain() == 0x7FFF_FFFF and bell.pending == 0


def test_chan_fast_paths(carena: Arena) -> None:
    c = carena.core
    off = _chan_block(carena, cap=3)
    assert [c.chan_send(off, b"%d" % i) for i in range(4)] == [True, True, True, False]
    assert c.load(off + 3 * 8) == 3  # count
    assert c.chan_poll(off, False, 0.0) is True and c.chan_poll(off, True, 0.001) is False
    assert [c.chan_recv(off) for _ in range(4)] == [b"0", b"1", b"2", None]
    c.store(off + 8 * 8, 1)  # a receiver queued: a send must take the slow path (hand-off)
    assert c.chan_send(off, b"x") is False
    c.store(off + 8 * 8, 0)
    assert c.chan_send(off, b"y") is True
    c.store(off + 9 * 8, 1)  # a sender queued: a receive must take the slow path
    assert c.chan_recv(off) is None
    c.store(off + 9 * 8, 0)
    c.store(off + 2 * 8, 1)  # closed: sends take the slow path (which raises)
    assert c.chan_send(off, b"z") is False
    assert c.chan_recv(off) == b"y"
    assert c.load(off + 3 * 8) == 0


def test_chan_fast_paths_across_processes(carena: Arena, ctx) -> None:
    """Four producer processes through one channel block: every message once, each producer's
    in order."""
    off = _chan_block(carena, cap=64)
    n = 3000
    procs = [ctx.Process(target=_workers.chan_producer, args=(carena, off, me, n))
             for me in range(4)]
    for p in procs:
        p.start()
    c = carena.core
    last = [-1] * 4
    got = 0
    deadline = time.monotonic() + 60
    try:
        while got < 4 * n:
            assert time.monotonic() < deadline
            data = c.chan_recv(off)
            if data is None:
                c.chan_poll(off, False, 0.001)
                continue
            me, seq = _workers.check(data)
            assert seq == last[me] + 1
            last[me] = seq
            got += 1
    finally:
        for p in procs:
            p.join(20)
    assert last == [n - 1] * 4 and c.chan_recv(off) is None
