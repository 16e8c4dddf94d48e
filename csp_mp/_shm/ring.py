"""Bounded rings of framed variable-length messages in an arena block.

:class:`Ring` is multi-producer multi-consumer under one of the arena's ShmLocks;
:class:`SpscRing` is lock-free for exactly one producer and one consumer (P-to-P inboxes) and is
only correct where stores and loads keep program order (x86-64). :func:`make_ring` picks.

Block layout (64-byte lines from the block start)::

    line 0  constants: magic, capacity, lock index, kind      (written once, before sharing)
    line 1  head word: consumers' position                    (consumer-owned line)
    line 2  tail word: producers' position                    (producer-owned line)
    line 3+ data: ``capacity`` bytes (a power of two) of frames

A head or tail word packs ``count << 40 | position``: position is a byte offset that only grows
(mod 2**40; the data index is ``position & (capacity - 1)``), count the number of frames that
passed it (mod 2**24). One store moves both, so there is never a state where they disagree.

A frame is an 8-byte header word (``kind << 32 | length``) then the payload padded to 8 bytes.
Kinds: INLINE (payload follows), OOB (payload is ``offset, length`` of an arena block holding the
message), WRAP (rest of the lap is unused; the next frame starts at data index 0).

Invariants:
  - frames between head and tail are complete: a producer writes header and payload first and
    commits them with ONE store of the tail word; a consumer copies a frame out first and frees
    it with ONE store of the head word. A process killed anywhere before its commit store leaves
    the ring exactly as it was: a half-written frame is never delivered, a half-read frame is
    delivered to the next consumer.
  - used bytes = tail position - head position <= capacity; empty iff head word == tail word.
  - a frame of at most capacity/2 bytes is inline (it always fits in an empty ring, wrap marker
    included); a larger message goes out of band in its own arena block, which the consumer frees
    after copying it out.
  - Ring: head and tail are read and written only under the ring's ShmLock (which protects
    exactly these two words and the frames between them). If that lock is taken over from a dead
    holder, nothing needs repair, by the first invariant.
  - SpscRing: only the producer stores the tail and only the consumer stores the head.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Any

from csp_mp._shm.arena import Arena
from csp_mp._shm.atomics import LINE, TSO

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

_MAGIC = 0x52_49_4E_47_00_00_00_01
HEADER = 3 * LINE
_M40 = (1 << 40) - 1
_M24 = (1 << 24) - 1
_M32 = (1 << 32) - 1
_INLINE, _OOB, _WRAP = 1, 2, 3
_KIND_LOCKED, _KIND_SPSC = 1, 2
_OOB_HDR = _OOB << 32 | 16
_HDR = struct.Struct("=Q")  # a frame header inside a blob built off the ring (never a live word)
_PADS = [b"\0" * k for k in range(8)]
_BYTES_ONLY = frozenset({bytes})
_chain = itertools.chain.from_iterable
_INLINE_HDR = _INLINE << 32  # a frame header is _INLINE_HDR | length


@dataclass(frozen=True)
class RingStats:
    capacity: int  # data bytes
    used: int  # bytes taken by frames, wrap markers included
    count: int  # frames waiting


class _RingBase:
    """Shared state and the out-of-band path; subclasses add the put/get protocol."""

    _kind = 0

    def __init__(self, arena: Arena, off: int) -> None:
        w = arena.words
        base = off // 8
        if w.load(base) != _MAGIC:  # load; the constants were stored before the ring was shared
            raise ValueError(f"no ring at arena offset {off}")
        self.arena = arena
        self.offset = off
        self.capacity = cap = w.load(base + 1)
        self._lock_index = w.load(base + 2)
        self._q = w.view  # the arena's words: q[i] loads word i, q[i] = v stores it
        self._mm = arena.map
        self._hw = base + LINE // 8
        self._tw = base + 2 * LINE // 8
        self._data = off + HEADER
        self._mask = cap - 1
        self._max_inline = cap // 2 - 8

    @classmethod
    def create(cls, arena: Arena, capacity: int, lock_key: int | None = None) -> Any:
        """A new empty ring with ``capacity`` data bytes (rounded up to a power of two >= 64)."""
        cap = max(64, 1 << (capacity - 1).bit_length())
        off = arena.alloc(HEADER + cap)
        if lock_key is None:
            lock_key = off // LINE
        nlocks = len(arena.locks)
        w = arena.words
        base = off // 8
        w.store(base + 1, cap)
        w.store(base + 2, 1 + lock_key % (nlocks - 1))  # lock 0 is the allocator's
        w.store(base + 3, cls._kind)
        w.store(base + LINE // 8, 0)
        w.store(base + 2 * LINE // 8, 0)
        w.store(base, _MAGIC)  # store last; pairs with the load in __init__
        return cls(arena, off)

    def destroy(self) -> None:
        """Free out-of-band messages still queued and the ring's block (no process may use it)."""
        while self.get_many(1 << 16):
            pass
        self.arena.decref(self.offset)

    def __len__(self) -> int:
        # loads; pair with the commit stores of tail (producers) and head (consumers)
        return ((self._q[self._tw] >> 40) - (self._q[self._hw] >> 40)) & _M24

    def stats(self) -> RingStats:
        t, h = self._q[self._tw], self._q[self._hw]  # loads; snapshot only
        return RingStats(
            self.capacity, ((t & _M40) - (h & _M40)) & _M40, ((t >> 40) - (h >> 40)) & _M24
        )

    def _oob(self, data: bytes | memoryview) -> int:
        off = self.arena.alloc(len(data))
        self._mm[off : off + len(data)] = data
        return off

    def _write(self, t: int, h: int, data: Any, n: int, oob: int) -> int:
        """Write one frame at tail word ``t`` (head word ``h``); the new tail word, or -1 if full.

        Nothing is visible to consumers until the caller stores the returned tail word.
        """
        need = 24 if oob else 8 + ((n + 7) & ~7)
        tpos = t & _M40
        i = tpos & self._mask
        rem = self.capacity - i
        skip = 0 if rem >= need else rem
        if self.capacity - ((tpos - (h & _M40)) & _M40) < need + skip:
            return -1
        q = self._q
        p = self._data + i
        if skip:
            q[p >> 3] = _WRAP << 32  # unpublished until the tail store
            p = self._data
        if oob:
            q[p >> 3] = _OOB_HDR
            q[(p >> 3) + 1] = oob
            q[(p >> 3) + 2] = n
        else:
            q[p >> 3] = _INLINE << 32 | n
            self._mm[p + 8 : p + 8 + n] = data
        return (((t >> 40) + 1) & _M24) << 40 | ((tpos + skip + need) & _M40)

    def _read(self, h: int, out: list[Any]) -> int:
        """Copy the frame at head word ``h`` (the ring is not empty) to ``out``; the new head."""
        hpos = h & _M40
        i = hpos & self._mask
        p = self._data + i
        hdr = self._q[p >> 3]  # load; ordered after the tail load that showed this frame
        if hdr >> 32 == _WRAP:
            hpos += self.capacity - i
            p = self._data
            hdr = self._q[p >> 3]
        n = hdr & _M32
        if hdr >> 32 == _OOB:
            out.append((self._q[(p >> 3) + 1], self._q[(p >> 3) + 2]))
            need = 24
        else:
            out.append(self._mm[p + 8 : p + 8 + n])
            need = 8 + ((n + 7) & ~7)
        return (((h >> 40) + 1) & _M24) << 40 | ((hpos + need) & _M40)

    def _write_run(self, t: int, h: int, items: list[Any], i: int) -> tuple[int, int]:
        """Write inline ``bytes`` items from ``items[i]`` on while they fit; (new tail word,
        index of the first item not written). Nothing is visible until the tail store."""
        cap, mask, data0 = self.capacity, self._mask, self._data
        q, mm, limit = self._q, self._mm, self._max_inline
        tpos = t & _M40
        free = cap - ((tpos - (h & _M40)) & _M40)
        k, end = 0, len(items)
        while i < end:
            data = items[i]
            if type(data) is not bytes:
                break
            n = len(data)
            if n > limit:
                break
            need = 8 + ((n + 7) & ~7)
            j = tpos & mask
            rem = cap - j
            if rem < need:
                if free < need + rem:
                    break
                q[(data0 + j) >> 3] = _WRAP << 32
                tpos += rem
                free -= rem
                j = 0
            elif free < need:
                break
            p = data0 + j
            q[p >> 3] = _INLINE << 32 | n
            mm[p + 8 : p + 8 + n] = data
            tpos += need
            free -= need
            k += 1
            i += 1
        return (((t >> 40) + k) & _M24) << 40 | (tpos & _M40), i

    def _read_run(self, h: int, t: int, max_items: int, out: list[Any]) -> int:
        """Copy up to ``max_items`` frames between head word ``h`` and tail word ``t`` to
        ``out``; the new head word."""
        cap, mask, data0 = self.capacity, self._mask, self._data
        q, mm = self._q, self._mm
        hpos, tpos = h & _M40, t & _M40
        k = 0
        while hpos != tpos and k < max_items:
            j = hpos & mask
            p = data0 + j
            hdr = q[p >> 3]  # ordered after the tail load that showed this frame
            kind = hdr >> 32
            if kind == _WRAP:
                hpos = (hpos + cap - j) & _M40
                continue
            n = hdr & _M32
            if kind == _OOB:
                out.append((q[(p >> 3) + 1], q[(p >> 3) + 2]))
                hpos = (hpos + 24) & _M40
            else:
                out.append(mm[p + 8 : p + 8 + n])
                hpos = (hpos + 8 + ((n + 7) & ~7)) & _M40
            k += 1
        return (((h >> 40) + k) & _M24) << 40 | hpos

    def _pack_run(self, items: list[Any], i: int) -> tuple[bytes, int]:
        """The frames of the inline ``bytes`` items from ``items[i]`` on, laid out as the ring
        holds them, built before taking any lock: (blob, how many items it holds). At most a
        quarter of the ring, so that it usually fits before the lap ends."""
        limit, budget = self._max_inline, self.capacity >> 2
        hdr, pads = _HDR.pack, _PADS
        run = items[i:] if i else items
        lens = list(map(len, run)) if _BYTES_ONLY >= set(map(type, run)) else None
        if lens and max(lens) <= limit and sum(lens) + 16 * len(lens) <= budget:
            # the common batch: every item inline, all of them within the budget; built by
            # C-level maps (header, data, zero padding to 8 bytes per frame)
            hdrs = map(hdr, map(_INLINE_HDR.__or__, lens))
            tails = map(pads.__getitem__, map((7).__and__, map(int.__neg__, lens)))
            return b"".join(_chain(zip(hdrs, run, tails, strict=True))), len(lens)
        parts: list[bytes] = []
        size = k = 0
        for data in run:
            if type(data) is not bytes:
                break
            n = len(data)
            need = 8 + ((n + 7) & ~7)
            if n > limit or size + need > budget:
                break
            parts += (hdr(_INLINE_HDR | n), data, pads[-n & 7])
            size += need
            k += 1
        return b"".join(parts), k

    def _put_blob(self, t: int, h: int, blob: bytes, k: int) -> int:
        """Copy ``k`` packed frames in at tail word ``t`` (head word ``h``) if they fit before
        the lap ends; the new tail word, or -1 (the caller writes them one by one)."""
        size = len(blob)
        tpos = t & _M40
        j = tpos & self._mask
        if size > self.capacity - j or size > self.capacity - ((tpos - (h & _M40)) & _M40):
            return -1
        p = self._data + j
        self._mm[p : p + size] = blob  # unpublished until the caller's tail store
        return (((t >> 40) + k) & _M24) << 40 | ((tpos + size) & _M40)

    def _take(self, h: int, t: int, max_items: int) -> tuple[bytes, int] | None:
        """The first ``max_items`` frames between head word ``h`` and tail word ``t`` with one
        copy, and the head word after them; None when they wrap around the lap end (the caller
        reads them one by one). Only headers are read to find the end of a partial take."""
        hpos = h & _M40
        j = hpos & self._mask
        k = ((t >> 40) - (h >> 40)) & _M24
        if k <= max_items:
            size = ((t & _M40) - hpos) & _M40
            if j + size > self.capacity:
                return None
            nh = t
        else:
            q, p, size, k = self._q, self._data + j, 0, max_items
            room = self.capacity - j
            for _ in range(k):
                if size >= room:  # the next frame starts the next lap
                    return None
                hdr = q[(p + size) >> 3]  # load; ordered after the tail load that showed it
                kind = hdr >> 32
                if kind == _WRAP:
                    return None
                size += 24 if kind == _OOB else 8 + (((hdr & _M32) + 7) & ~7)
            nh = (((h >> 40) + k) & _M24) << 40 | ((hpos + size) & _M40)
        p = self._data + j
        return self._mm[p : p + size], nh

    def _split(self, raw: bytes, out: list[Any]) -> None:
        """Append the messages of the frames in ``raw`` (a copy taken by ``_take``)."""
        words = memoryview(raw).cast("Q")
        o, end = 0, len(raw)
        while o < end:
            hdr = words[o >> 3]
            n = hdr & _M32
            if hdr >> 32 == _OOB:
                out.append((words[(o >> 3) + 1], words[(o >> 3) + 2]))
                o += 24
            else:
                out.append(raw[o + 8 : o + 8 + n])
                o += 8 + ((n + 7) & ~7)
        words.release()

    def _fetch(self, item: Any) -> bytes:
        """Copy an out-of-band message out of its block and free the block."""
        off, n = item
        data = self._mm[off : off + n]
        self.arena.decref(off)
        return data

    def _prepare(self, data: Any) -> tuple[Any, int, int]:
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        n = len(data)
        if n > self._max_inline:
            return data, n, self._oob(data)
        return data, n, 0

    def put_many(self, items: list[Any]) -> int:
        """Put items in order until one does not fit; how many were put."""
        done = 0
        total = len(items)
        while done < total:
            got = self._put_batch(items, done)
            if got == done:
                break
            done = got
        return done

    # subclasses
    def _put_batch(self, items: list[Any], start: int) -> int:
        raise NotImplementedError

    def get_many(self, max_items: int) -> list[bytes]:
        raise NotImplementedError


class Ring(_RingBase):
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
                q[p >> 3] = _INLINE << 32 | n  # unpublished until the tail store
                self._mm[p + 8 : p + 8 + n] = data
                # commit store; pairs with the tail load of consumers
                q[self._tw] = (((t >> 40) + 1) & _M24) << 40 | ((tpos + need) & _M40)
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
        if hdr >> 32 == _INLINE:
            n = hdr & _M32
            item = self._mm[p + 8 : p + 8 + n]
            # commit store; frees the frame
            q[self._hw] = (((h >> 40) + 1) & _M24) << 40 | ((hpos + 8 + ((n + 7) & ~7)) & _M40)
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


class SpscRing(_RingBase):
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


class _NativeOps:
    """The put/get protocol in one call of the compiled core (arenas with ``arena.core``).

    The same frames and commit stores as the Python methods above, which stay the
    specification; out-of-band messages (more than half the ring) take the Python path, since
    they need the arena's allocator.
    """

    offset: int
    arena: Arena

    def __init__(self, arena: Arena, off: int) -> None:
        super().__init__(arena, off)  # type: ignore[call-arg]
        c = arena.core
        self._c_put, self._c_put_locked = c.ring_try_put, c.ring_put_locked
        self._c_get, self._c_get_locked = c.ring_try_get, c.ring_get_locked
        self._c_put_many, self._c_get_many, self._c_len = (
            c.ring_put_many, c.ring_get_many, c.ring_len)

    def __len__(self) -> int:
        return self._c_len(self.offset)

    def try_put(self, data: bytes | bytearray | memoryview) -> bool:
        """Append one message if it fits now; False if the ring is full."""
        r = self._c_put(self.offset, data)
        if r >= 0:
            return r == 1
        return super().try_put(data)  # type: ignore[misc]

    def put_locked(self, data: bytes | bytearray | memoryview) -> bool:
        """``try_put`` for a caller already holding the ring's lock."""
        r = self._c_put_locked(self.offset, data)
        if r >= 0:
            return r == 1
        return super().put_locked(data)  # type: ignore[misc]

    def try_get(self) -> bytes | None:
        """Take the oldest message, or None if the ring is empty."""
        item = self._c_get(self.offset)
        if item is None or type(item) is bytes:
            return item
        return self._fetch(item)  # type: ignore[attr-defined]

    def get_locked(self) -> bytes | None:
        """``try_get`` for a caller already holding the ring's lock."""
        item = self._c_get_locked(self.offset)
        if item is None or type(item) is bytes:
            return item
        return self._fetch(item)  # type: ignore[attr-defined]

    def put_many(self, items: list[Any]) -> int:
        """Put items in order until one does not fit; how many were put."""
        i, end, off = 0, len(items), self.offset
        if type(items) is not list:
            items = list(items)
        while i < end:
            j = self._c_put_many(off, items, i)
            if j == i:  # an out-of-band item, or a full ring
                if type(items[i]) is bytes and len(items[i]) <= self._max_inline:  # type: ignore[attr-defined]
                    break
                if not self.try_put(items[i]):
                    break
                j = i + 1
            i = j
        return i

    def get_many(self, max_items: int) -> list[bytes]:
        """Take up to ``max_items`` of the oldest messages."""
        out = self._c_get_many(self.offset, max_items)
        for j, item in enumerate(out):
            if type(item) is not bytes:
                out[j] = self._fetch(item)  # type: ignore[attr-defined]
        return out


class NativeRing(_NativeOps, Ring):
    """:class:`Ring` with its operations in the compiled core."""


class NativeSpscRing(_NativeOps, SpscRing):
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
