"""Runs of frames in a ring, committed with one store of the tail or head word.

A batch of small messages (a P's inbox flushed, a run queue stolen) costs one lock round and one
commit store instead of one per message: the frames are packed into one blob before the lock is
taken (``_pack_run``) and copied in with one slice store when they fit before the lap ends
(``_put_blob``), else written one by one (``_write_run``); a consumer copies every frame it takes
out with one slice load (``_take``) and splits them after releasing the lock (``_split``), or
reads them one by one across the lap end (``_read_run``).

Invariants (those of ``ring_frames``, for runs):
  - nothing of a run is visible until the caller's one commit store of the tail word, and the
    frames of a run taken are freed by one store of the head word: a process killed before it
    leaves the ring as it was.
  - a run holds inline ``bytes`` items only; the first item of any other kind ends it.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

from csp_mp._shm.ring_frames import (
    _INLINE_HDR,
    _KIND,
    _M24,
    _M32,
    _M40,
    _OOB,
    _OOB_FRAME,
    _POS,
    _WRAP,
    _WRAP_HDR,
    RingBase,
)

_HDR = struct.Struct("=Q")  # a frame header inside a blob built off the ring (never a live word)
_PADS = [b"\0" * k for k in range(8)]
_BYTES_ONLY = frozenset({bytes})
_chain = itertools.chain.from_iterable


class BatchRing(RingBase):
    """A ring that also writes and reads runs of frames (``Ring``'s and ``SpscRing``'s base)."""

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
                q[(data0 + j) >> 3] = _WRAP_HDR
                tpos += rem
                free -= rem
                j = 0
            elif free < need:
                break
            p = data0 + j
            q[p >> 3] = _INLINE_HDR | n
            mm[p + 8 : p + 8 + n] = data
            tpos += need
            free -= need
            k += 1
            i += 1
        return (((t >> _POS) + k) & _M24) << _POS | (tpos & _M40), i

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
            kind = hdr >> _KIND
            if kind == _WRAP:
                hpos = (hpos + cap - j) & _M40
                continue
            n = hdr & _M32
            if kind == _OOB:
                out.append((q[(p >> 3) + 1], q[(p >> 3) + 2]))
                hpos = (hpos + _OOB_FRAME) & _M40
            else:
                out.append(mm[p + 8 : p + 8 + n])
                hpos = (hpos + 8 + ((n + 7) & ~7)) & _M40
            k += 1
        return (((h >> _POS) + k) & _M24) << _POS | hpos

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
        return (((t >> _POS) + k) & _M24) << _POS | ((tpos + size) & _M40)

    def _take(self, h: int, t: int, max_items: int) -> tuple[bytes, int] | None:
        """The first ``max_items`` frames between head word ``h`` and tail word ``t`` with one
        copy, and the head word after them; None when they wrap around the lap end (the caller
        reads them one by one). Only headers are read to find the end of a partial take."""
        hpos = h & _M40
        j = hpos & self._mask
        k = ((t >> _POS) - (h >> _POS)) & _M24
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
                kind = hdr >> _KIND
                if kind == _WRAP:
                    return None
                size += _OOB_FRAME if kind == _OOB else 8 + (((hdr & _M32) + 7) & ~7)
            nh = (((h >> _POS) + k) & _M24) << _POS | ((hpos + size) & _M40)
        p = self._data + j
        return self._mm[p : p + size], nh

    def _split(self, raw: bytes, out: list[Any]) -> None:
        """Append the messages of the frames in ``raw`` (a copy taken by ``_take``)."""
        words = memoryview(raw).cast("Q")
        o, end = 0, len(raw)
        while o < end:
            hdr = words[o >> 3]
            n = hdr & _M32
            if hdr >> _KIND == _OOB:
                out.append((words[(o >> 3) + 1], words[(o >> 3) + 2]))
                o += _OOB_FRAME
            else:
                out.append(raw[o + 8 : o + 8 + n])
                o += 8 + ((n + 7) & ~7)
        words.release()

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

    # subclasses: one run put under one commit store, from items[start]; the index after it
    def _put_batch(self, items: list[Any], start: int) -> int:
        raise NotImplementedError
