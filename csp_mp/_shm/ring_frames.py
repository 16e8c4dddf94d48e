"""The frames of a ring in an arena block: its layout, one frame written and read.

This is the ring protocol that :mod:`ring_batch <csp_mp._shm.ring_batch>` extends to runs of
frames and :mod:`ring <csp_mp._shm.ring>` puts under a lock (``Ring``) or uses lock-free
(``SpscRing``); the compiled core follows the same (``ring_native``).

Block layout (64-byte lines from the block start)::

    line 0  constants: magic, capacity, lock index, kind      (written once, before sharing)
    line 1  head word: consumers' position                    (consumer-owned line)
    line 2  tail word: producers' position                    (producer-owned line)
    line 3+ data: ``capacity`` bytes (a power of two) of frames

A head or tail word packs ``count << POS_BITS | position`` (layout.py's ``POS_BITS``, 40):
position is a byte offset that only grows (mod 2**40; the data index is
``position & (capacity - 1)``), count the number of frames that passed it (mod 2**24). One store
moves both, so there is never a state where they disagree.

A frame is an 8-byte header word (``kind << KIND_SHIFT | length``) then the payload padded to
8 bytes.
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from csp_mp._shm import layout as L
from csp_mp._shm.arena import Arena
from csp_mp._shm.atomics import LINE

# the block's words, kinds and masks: layout.py's (ring.c is built from it)
_MAGIC = L.RING_MAGIC
HEADER = L.RING_HEADER
_M40, _M24, _M32 = L.M40, L.M24, L.M32
_POS = L.POS_BITS  # a head or tail word is count << _POS | position
_OOB_FRAME = L.OOB_FRAME  # bytes of an out-of-band frame
_INLINE, _OOB, _WRAP = L.F_INLINE, L.F_OOB, L.F_WRAP
_KIND_LOCKED, _KIND_SPSC = L.RING_LOCKED, L.RING_SPSC
_KIND = L.KIND_SHIFT  # a frame header is kind << _KIND | length
_OOB_HDR = _OOB << _KIND | (_OOB_FRAME - L.FRAME_HEADER)
_INLINE_HDR = _INLINE << _KIND  # a frame header is _INLINE_HDR | length
_WRAP_HDR = _WRAP << _KIND


@dataclass(frozen=True)
class RingStats:
    capacity: int  # data bytes
    used: int  # bytes taken by frames, wrap markers included
    count: int  # frames waiting


class RingBase:
    """A ring's words and one frame written or read; subclasses add batching and the commit
    protocol (under a lock, or lock-free)."""

    _kind = 0

    def __init__(self, arena: Arena, off: int) -> None:
        w = arena.words
        base = off // 8
        # load; the constants were stored before the ring was shared
        if w.load(base + L.RW_MAGIC) != _MAGIC:
            raise ValueError(f"no ring at arena offset {off}")
        self.arena = arena
        self.offset = off
        self.capacity = cap = w.load(base + L.RW_CAP)
        self._lock_index = w.load(base + L.RW_LOCK)
        self._q = w.view  # the arena's words: q[i] loads word i, q[i] = v stores it
        self._mm = arena.map
        self._hw = base + L.RING_HEAD_LINE * LINE // 8
        self._tw = base + L.RING_TAIL_LINE * LINE // 8
        self._data = off + HEADER
        self._mask = cap - 1
        self._max_inline = cap // L.INLINE_SHARE - L.FRAME_HEADER

    @classmethod
    def create(cls, arena: Arena, capacity: int, lock_key: int | None = None) -> Any:
        """A new empty ring with ``capacity`` data bytes (rounded up to a power of two, at least
        ``RING_MIN_CAP``)."""
        cap = max(L.RING_MIN_CAP, 1 << (capacity - 1).bit_length())
        off = arena.alloc(HEADER + cap)
        if lock_key is None:
            lock_key = off // LINE
        nlocks = len(arena.locks)
        w = arena.words
        base = off // 8
        w.store(base + L.RW_CAP, cap)
        w.store(base + L.RW_LOCK, 1 + lock_key % (nlocks - 1))  # lock 0 is the allocator's
        w.store(base + L.RW_KIND, cls._kind)
        w.store(base + L.RING_HEAD_LINE * LINE // 8, 0)
        w.store(base + L.RING_TAIL_LINE * LINE // 8, 0)
        w.store(base + L.RW_MAGIC, _MAGIC)  # store last; pairs with the load in __init__
        return cls(arena, off)

    def destroy(self) -> None:
        """Free out-of-band messages still queued and the ring's block (no process may use it)."""
        while self.get_many(1 << 16):
            pass
        self.arena.decref(self.offset)

    def __len__(self) -> int:
        # loads; pair with the commit stores of tail (producers) and head (consumers)
        return ((self._q[self._tw] >> _POS) - (self._q[self._hw] >> _POS)) & _M24

    def stats(self) -> RingStats:
        t, h = self._q[self._tw], self._q[self._hw]  # loads; snapshot only
        return RingStats(
            self.capacity, ((t & _M40) - (h & _M40)) & _M40, ((t >> _POS) - (h >> _POS)) & _M24
        )

    def _oob(self, data: bytes | memoryview) -> int:
        off = self.arena.alloc(len(data))
        self._mm[off : off + len(data)] = data
        return off

    def _write(self, t: int, h: int, data: Any, n: int, oob: int) -> int:
        """Write one frame at tail word ``t`` (head word ``h``); the new tail word, or -1 if full.

        Nothing is visible to consumers until the caller stores the returned tail word.
        """
        need = _OOB_FRAME if oob else 8 + ((n + 7) & ~7)
        tpos = t & _M40
        i = tpos & self._mask
        rem = self.capacity - i
        skip = 0 if rem >= need else rem
        if self.capacity - ((tpos - (h & _M40)) & _M40) < need + skip:
            return -1
        q = self._q
        p = self._data + i
        if skip:
            q[p >> 3] = _WRAP_HDR  # unpublished until the tail store
            p = self._data
        if oob:
            q[p >> 3] = _OOB_HDR
            q[(p >> 3) + 1] = oob
            q[(p >> 3) + 2] = n
        else:
            q[p >> 3] = _INLINE_HDR | n
            self._mm[p + 8 : p + 8 + n] = data
        return (((t >> _POS) + 1) & _M24) << _POS | ((tpos + skip + need) & _M40)

    def _read(self, h: int, out: list[Any]) -> int:
        """Copy the frame at head word ``h`` (the ring is not empty) to ``out``; the new head."""
        hpos = h & _M40
        i = hpos & self._mask
        p = self._data + i
        hdr = self._q[p >> 3]  # load; ordered after the tail load that showed this frame
        if hdr >> _KIND == _WRAP:
            hpos += self.capacity - i
            p = self._data
            hdr = self._q[p >> 3]
        n = hdr & _M32
        if hdr >> _KIND == _OOB:
            out.append((self._q[(p >> 3) + 1], self._q[(p >> 3) + 2]))
            need = _OOB_FRAME
        else:
            out.append(self._mm[p + 8 : p + 8 + n])
            need = 8 + ((n + 7) & ~7)
        return (((h >> _POS) + 1) & _M24) << _POS | ((hpos + need) & _M40)

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

    # subclasses
    def get_many(self, max_items: int) -> list[bytes]:
        raise NotImplementedError
