"""Functions run in child processes (importable by forkserver children).

A doorbell comes before the arena in their arguments: a child opens a semaphore by name as it
unpickles it, and the parent seals (removes every name) once ``arena.wait_attached`` counts the
child, which the arena's unpickling does.
"""

from __future__ import annotations

import os
import time
from typing import Any

from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.ring import attach_ring


def msg(producer: int, seq: int, size: int = 0) -> bytes:
    """A self-checking message: header plus a payload derived from the header."""
    head = b"%d:%d:" % (producer, seq)
    return head + bytes([(producer * 31 + seq) & 0xFF]) * size


def check(data: bytes) -> tuple[int, int]:
    p, s, body = data.split(b":", 2)
    producer, seq = int(p), int(s)
    assert body == bytes([(producer * 31 + seq) & 0xFF]) * len(body), "corrupt payload"
    return producer, seq


def producer(
    bell: Doorbell, arena: Arena, off: int, me: int, n: int, size: int, batch: int
) -> None:
    ring = attach_ring(arena, off)
    seq = 0
    while seq < n:
        items = [msg(me, s, size) for s in range(seq, min(n, seq + batch))]
        k = 0
        while k < len(items):
            got = ring.put_many(items[k:]) if batch > 1 else int(ring.try_put(items[k]))
            if got:
                k += got
                bell.ring()
            else:
                time.sleep(0)
        seq += len(items)


def consumer(bell: Doorbell, arena: Arena, off: int, nprod: int, n: int, conn: Any) -> None:
    """Receive until an empty message; send back per-producer bitmaps and an error count."""
    ring = attach_ring(arena, off)
    seen = [bytearray((n + 7) // 8) for _ in range(nprod)]
    last = [-1] * nprod
    errors = 0
    done = False
    while not done:
        got = ring.get_many(512)
        if not got:
            bell.wait(0.05)
            continue
        for data in got:
            if not data:
                if done:  # a sentinel meant for another consumer: put it back
                    while not ring.try_put(b""):
                        time.sleep(0)
                    bell.ring()
                done = True
                continue
            p, s = check(data)
            if s <= last[p]:
                errors += 1  # out of order or duplicate
            last[p] = s
            if seen[p][s >> 3] & (1 << (s & 7)):
                errors += 1
            seen[p][s >> 3] |= 1 << (s & 7)
    conn.send((errors, [bytes(b) for b in seen]))
    conn.close()


def hold_half_written(arena: Arena, off: int, bell: Doorbell, size: int) -> None:
    """Take the ring's lock, write a frame without committing it, then wait to be killed."""
    ring = attach_ring(arena, off)
    lock = ring._lock  # the locked ring's ShmLock
    lock.acquire()
    t = ring._q[ring._tw]
    ring._write(t, ring._q[ring._hw], msg(99, 0, size), len(msg(99, 0, size)), 0)
    bell.ring()
    time.sleep(60)


def hold_lock(arena: Arena, index: int, bell: Doorbell, ghost: bool) -> None:
    """Hold lock ``index`` (with or without the owner word written) until killed."""
    lock = arena.locks.lock(index)
    if ghost:
        lock._sem.acquire()
    else:
        lock.acquire()
    bell.ring()
    time.sleep(60)


def hold_allocator(arena: Arena, bell: Doorbell, changing: bool) -> None:
    """Hold the allocator's lock, in a section that changes the free lists or not, until
    killed."""
    arena._enter(changes=changing)
    bell.ring()
    time.sleep(60)


def endless_producer(bell: Doorbell, arena: Arena, off: int, me: int, size: int) -> None:
    ring = attach_ring(arena, off)
    seq = 0
    while True:
        if ring.try_put(msg(me, seq, size)):
            seq += 1
            if seq == 1:
                bell.ring()
        else:
            time.sleep(0)


def echo_arena(out: Doorbell, arena: Arena, off: int, ring_off: int) -> None:
    """Read a block the parent wrote, write its reverse into a new block, report the offset."""
    n = arena.block_size(off)
    data = arena.map[off : off + n]
    new = arena.alloc(n)
    arena.map[new : new + n] = data[::-1]
    attach_ring(arena, ring_off).try_put(b"%d" % new)
    out.ring()


def ring_back(bell: Doorbell, back: Doorbell, rounds: int) -> None:
    for _ in range(rounds):
        assert bell.wait(10)
        back.ring()


def codec_echo(arena: Arena, inbox: int, outbox: int, bell: Doorbell, back: Doorbell) -> None:
    """Decode values from one ring and re-encode them into another until an empty message."""
    from csp_mp._shm import codec

    rin, rout = attach_ring(arena, inbox), attach_ring(arena, outbox)
    while True:
        data = rin.try_get()
        if data is None:
            bell.wait(0.05)
            continue
        if not data:
            break
        value = codec.decode(data, arena)
        while not rout.try_put(codec.encode(value, arena)):
            time.sleep(0)
        del value
        back.ring()
    arena.collect()


def getpid() -> int:
    return os.getpid()


def count_under_lock(arena: Arena, index: int, word_off: int, n: int, rec_off: int,
                     bell: Doorbell) -> None:
    """Add 1 to the word at ``word_off`` ``n`` times, each under lock ``index`` of the compiled
    core; a take-over from a dead holder is counted in the word at ``rec_off``."""
    core = arena.core
    bell.ring()
    for _ in range(n):
        if core.lock(index):
            core.fetch_add(rec_off, 1)
        core.store(word_off, core.load(word_off) + 1)  # one commit store under the lock
        core.unlock(index)


def hold_native_lock(arena: Arena, index: int, bell: Doorbell) -> None:
    """Take lock ``index`` of the compiled core, say so, and hold it until killed."""
    arena.core.lock(index)
    bell.ring()
    time.sleep(60)


def chan_producer(arena: Arena, chan_off: int, me: int, n: int) -> None:
    """Send ``n`` self-checking messages through the compiled channel fast path (spinning when
    the buffer is full)."""
    core = arena.core
    for seq in range(n):
        data = msg(me, seq)
        while not core.chan_send(chan_off, data):
            core.chan_poll(chan_off, True, 0.001)
