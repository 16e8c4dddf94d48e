"""Bounded rings of framed variable-length messages in an arena block: the two kinds.

:class:`Ring` is multi-producer multi-consumer under one of the arena's ShmLocks;
:class:`SpscRing` is lock-free for exactly one producer and one consumer (P-to-P inboxes) and is
only correct where stores and loads keep program order (x86-64). :func:`make_ring` picks;
:func:`attach_ring` maps a ring any process made. ``NativeRing`` and ``NativeSpscRing`` are the
same with their operations in the compiled core (``ring_native``).

The block layout, the frames and their commit rule are in ``ring_frames``; runs of frames under
one commit in ``ring_batch``.

Invariants:
  - Ring: head and tail are read and written only under the ring's ShmLock (which protects
    exactly these two words and the frames between them). If that lock is taken over from a dead
    holder, nothing needs repair: a frame is published or freed by one commit store.
  - SpscRing: only the producer stores the tail and only the consumer stores the head.
"""

from __future__ import annotations

from typing import Any

from csp_mp._shm.arena import Arena
from csp_mp._shm.atomics import TSO
from csp_mp._shm.ring_batch import BatchRing
from csp_mp._shm.ring_frames import (
    _INLINE,
    _INLINE_HDR,
    _KIND,
    _KIND_LOCKED,
    _KIND_SPSC,
    _M24,
    _M32,
    _M40,
    _POS,
    HEADER,
    RingStats,
)
from csp_mp._shm.ring_native import NativeOps

__all__ = [
    "HEADER",
    "NativeRing",
    "NativeSpscRing",
    "Ring",
    "RingStats",
    "SpscRing",
    "attach_ring",
    "make_ring",
]


class Ring(BatchRing):
    """MPMC ring under a ShmLock: any number of producer and consumer processes."""

    _kind = _KIND_LOCKED

    def __init__(self, arena: Arena, off: int) -> None:
        super().__init__(arena, off)
        self._lock = arena.locks.lock(self._lock_index)

    def try_put(self, data: bytes | bytearray | memoryview) -> bool:
        """Append one message if it fits now; False if the ring is full (any process)."""
        data, n, oob = self._prepare(data)
        lock = self._lock
        lock.acquire()  # a takeover needs no repair: see the module invariants
        try:
            t = self._q[self._tw]  # load; under the lock
            nt = self._write(t, self._q[self._hw], data, n, oob)
            if nt >= 0:
                self._q[self._tw] = nt  # commit store; pairs with the tail load in try_get
        finally:
            lock.release()
        if nt < 0 and oob:
            self.arena.decref(oob)
        return nt >= 0

    def _put_batch(self, items: list[Any], start: int) -> int:
        first = items[start]
        if type(first) is not bytes or len(first) > self._max_inline:
            return start + 1 if self.try_put(first) else start
        blob, k = self._pack_run(items, start)  # before the lock: it is held for one copy
        lock = self._lock
        lock.acquire()
        try:
            t = self._q[self._tw]  # load; under the lock
            h = self._q[self._hw]  # load; under the lock
            nt = self._put_blob(t, h, blob, k) if k else -1
            i = start + k
            if nt < 0:
                nt, i = self._write_run(t, h, items, start)
            if i != start:
                self._q[self._tw] = nt  # commit store for the whole batch
        finally:
            lock.release()
        return i

    def try_get(self) -> bytes | None:
        """Take the oldest message, or None if the ring is empty (any process)."""
        lock = self._lock
        lock.acquire()
        try:
            h = self._q[self._hw]  # load; under the lock
            if h == self._q[self._tw]:  # load; pairs with the commit store in try_put
                return None
            out: list[Any] = []
            self._q[self._hw] = self._read(h, out)  # commit store; frees the frame
        finally:
            lock.release()
        item = out[0]
        return item if type(item) is bytes else self._fetch(item)

    @property
    def lock(self) -> Any:
        """The ShmLock guarding this ring (for callers that compose several rings under it)."""
        return self._lock

    def put_locked(self, data: bytes | bytearray | memoryview) -> bool:
        """``try_put`` for a caller already holding :attr:`lock`."""
        if type(data) is bytes:
            # Fast path, a channel's common case: a small frame that fits before the lap ends.
            # The steps of _write for an inline frame with no wrap marker.
            n = len(data)
            need = 8 + ((n + 7) & ~7)
            q = self._q
            t = q[self._tw]  # load; under the caller's lock
            tpos = t & _M40
            i = tpos & self._mask
            cap = self.capacity
            if need <= cap - i and need <= cap - ((tpos - (q[self._hw] & _M40)) & _M40) \
                    and n <= self._max_inline:
                p = self._data + i
                q[p >> 3] = _INLINE_HDR | n  # unpublished until the tail store
                self._mm[p + 8 : p + 8 + n] = data
                # commit store; pairs with the tail load of consumers
                q[self._tw] = (((t >> _POS) + 1) & _M24) << _POS | ((tpos + need) & _M40)
                return True
        data, n, oob = self._prepare(data)
        t = self._q[self._tw]  # load; under the caller's lock
        nt = self._write(t, self._q[self._hw], data, n, oob)
        if nt < 0:
            if oob:
                self.arena.decref(oob)
            return False
        self._q[self._tw] = nt  # commit store; pairs with the tail load of consumers
        return True

    def get_locked(self) -> bytes | None:
        """``try_get`` for a caller already holding :attr:`lock`."""
        q = self._q
        h = q[self._hw]  # load; under the caller's lock
        if h == q[self._tw]:  # load; pairs with the commit store of producers
            return None
        # Fast path: an inline frame (the steps of _read without its general cases).
        hpos = h & _M40
        p = self._data + (hpos & self._mask)
        hdr = q[p >> 3]  # load; ordered after the tail load that showed this frame
        if hdr >> _KIND == _INLINE:
            n = hdr & _M32
            item = self._mm[p + 8 : p + 8 + n]
            # commit store; frees the frame
            q[self._hw] = (((h >> _POS) + 1) & _M24) << _POS | ((hpos + 8 + ((n + 7) & ~7)) & _M40)
            return item
        out: list[Any] = []
        q[self._hw] = self._read(h, out)  # commit store; frees the frame
        item = out[0]
        return item if type(item) is bytes else self._fetch(item)

    def get_many(self, max_items: int) -> list[bytes]:
        """Take up to ``max_items`` of the oldest messages (any process)."""
        out: list[Any] = []
        raw = None
        lock = self._lock
        lock.acquire()
        try:
            h = self._q[self._hw]  # load; under the lock
            t = self._q[self._tw]  # load; pairs with the commit store in try_put
            if h != t:
                took = self._take(h, t, max_items)  # one copy under the lock, if no wrap
                if took is not None:
                    raw, self._q[self._hw] = took  # commit store; frees the frames taken
                else:
                    self._q[self._hw] = self._read_run(h, t, max_items, out)  # commit store
        finally:
            lock.release()
        if raw is not None:
            self._split(raw, out)
        for j, item in enumerate(out):
            if type(item) is not bytes:
                out[j] = self._fetch(item)
        return out


class SpscRing(BatchRing):
    """Lock-free ring for one producer process and one consumer process (x86-64 only)."""

    _kind = _KIND_SPSC

    def try_put(self, data: bytes | bytearray | memoryview) -> bool:
        """Append one message if it fits now; False if full (the producer only)."""
        data, n, oob = self._prepare(data)
        # load of the tail: our own word; load of the head pairs with the consumer's commit store
        nt = self._write(self._q[self._tw], self._q[self._hw], data, n, oob)
        if nt < 0:
            if oob:
                self.arena.decref(oob)
            return False
        self._q[self._tw] = nt  # commit store (TSO: after the frame); pairs with try_get's load
        return True

    def _put_batch(self, items: list[Any], start: int) -> int:
        first = items[start]
        if type(first) is not bytes or len(first) > self._max_inline:
            return start + 1 if self.try_put(first) else start
        blob, k = self._pack_run(items, start)
        # load of the head pairs with the consumer's commit store
        t, h = self._q[self._tw], self._q[self._hw]
        nt = self._put_blob(t, h, blob, k) if k else -1
        i = start + k
        if nt < 0:
            nt, i = self._write_run(t, h, items, start)
        if i != start:
            self._q[self._tw] = nt  # commit store for the batch; pairs with try_get's load
        return i

    def try_get(self) -> bytes | None:
        """Take the oldest message, or None if empty (the consumer only)."""
        h = self._q[self._hw]
        if h == self._q[self._tw]:  # load; pairs with the producer's commit store
            return None
        out: list[Any] = []
        # store after the frame's loads (TSO keeps load->store order); pairs with the
        # producer's head load in try_put
        self._q[self._hw] = self._read(h, out)
        item = out[0]
        return item if type(item) is bytes else self._fetch(item)

    def get_many(self, max_items: int) -> list[bytes]:
        """Take up to ``max_items`` of the oldest messages (the consumer only)."""
        out: list[Any] = []
        h = self._q[self._hw]
        t = self._q[self._tw]  # load; pairs with the producer's commit store
        if h != t:
            took = self._take(h, t, max_items)
            # store after the frames' loads (TSO keeps load->store order); pairs with the
            # producer's head load
            if took is not None:
                raw, self._q[self._hw] = took
                self._split(raw, out)
            else:
                self._q[self._hw] = self._read_run(h, t, max_items, out)
        for j, item in enumerate(out):
            if type(item) is not bytes:
                out[j] = self._fetch(item)
        return out

class NativeRing(NativeOps, Ring):
    """:class:`Ring` with its operations in the compiled core."""


class NativeSpscRing(NativeOps, SpscRing):
    """:class:`SpscRing` with its operations in the compiled core."""


def make_ring(arena: Arena, capacity: int, spsc: bool = False, lock_key: int | None = None):
    """A new ring: lock-free SPSC if asked for and the CPU keeps store order, else locked."""
    native = arena.core is not None
    if spsc and TSO:
        return (NativeSpscRing if native else SpscRing).create(arena, capacity)
    return (NativeRing if native else Ring).create(arena, capacity, lock_key)


def attach_ring(arena: Arena, off: int) -> Ring | SpscRing:
    """The ring at arena offset ``off`` (created by any process)."""
    kind = arena.words.load(off // 8 + 3)  # load; written before the ring was shared
    if arena.core is not None:
        return NativeSpscRing(arena, off) if kind == _KIND_SPSC else NativeRing(arena, off)
    return SpscRing(arena, off) if kind == _KIND_SPSC else Ring(arena, off)
