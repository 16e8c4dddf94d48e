"""The block of a channel shared by every P: its words, its waiter records, its spares.

Block words (``_W_*``): magic, cap, closed, count, buffer ring, recvq ring, sendq ring, lock
index, records in recvq, records in sendq, references (handles and in-flight names: the protocol
that frees a channel no one can reach is in ``_mp/promote.py``; ``SharedChan.add_refs`` is its one
access), id, grown (1 once a ring grew: the block cannot be a new channel's).
The buffer ring holds encoded values; recvq and sendq hold waiter records
``(p, gid, slot, gen, case, data)`` (Go's sudogs): ``slot``/``gen`` name the select token of a
waiting select (slot -1: a plain send or receive), ``data`` a waiting sender's encoded value. A
record is six little-endian 64-bit words (p, gid, slot, gen, case, 1 if it has data) followed by
the data: the compiled core reads them in place (``chan.c``).

What uses these words under the channel's lock is ``shared.py``; this module lays a block out
(``new_block``, ``reopen_block``, ``retire_block``), packs records and drops dead ones, grows a
full ring, and keeps destroyed blocks for the next channels (``SparePool``). Imports: ``_shm``
only.

Invariants:
- A block is published by its magic word, stored last: a block whose magic is not ``_MAGIC``
  holds no channel (never made, or destroyed), and a stale name of it is refused.
- ``_W_ID`` changes each time the allocator hands a block out and is kept while it is a spare:
  a P's state object for an offset serves again exactly while the id is the same.
- A block in the ``SparePool`` is empty (no value, no record), its rings have the sizes a new
  channel's would have (``_W_GROWN`` is 0), and its magic is 0 until ``reopen_block``.
- A pool take or give commits with its one store of the stack's size, under the pool's lock (a
  leaf), so a P killed holding it changed nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .._shm import Arena, Ring, discard
from .._shm import layout as L

# the block's words (layout.py, which chan.c, handles.c and task.c are built from)
_MAGIC = L.CHAN_MAGIC
_W_MAGIC, _W_CAP, _W_CLOSED, _W_COUNT = L.W_MAGIC, L.W_CAP, L.W_CLOSED, L.W_COUNT
_W_BUF, _W_RECVQ, _W_SENDQ, _W_LOCK = L.W_BUF, L.W_RECVQ, L.W_SENDQ, L.W_LOCK
_W_NRECV, _W_NSEND = L.W_NRECV, L.W_NSEND  # records in recvq / sendq, dead ones included
_W_REFS = L.W_REFS  # handles in processes + references in flight
_W_ID = L.W_ID  # new each time the allocator hands the block out; kept while it is a spare
_W_GROWN = L.W_GROWN  # 1 once one of its rings grew (under the lock)
_NWORD = {_W_SENDQ: _W_NSEND, _W_RECVQ: _W_NRECV}  # queue word -> its record count word
_BLOCK = L.CHAN_BLOCK
_RECVQ_BYTES = 1024  # with the ring header, a 2 KiB block: ~25 parked receivers before it grows
_SENDQ_BYTES = 2048  # a 4 KiB block; its records carry the parked senders' values
_SPARE_CLASSES = 8  # spare pools, one a buffer ring size: CHAN_BUF_MIN << k (_buf_bytes)
_SPARE_SLOTS = 16  # destroyed channel blocks (rings included) kept a size, for any P
_OWN_SPARES = 16  # ... and kept a size by the P that destroyed them, before the pool


def _buf_bytes(cap: int) -> int:
    """The data bytes of a new channel's buffer ring (Ring.create's power of two; handles.c's
    buf_bytes, from the same layout.py numbers)."""
    n = max(L.CHAN_BUF_MIN, min(cap, L.CHAN_BUF_CAP_MAX) * L.CHAN_BUF_PER_SLOT)
    return 1 << (n - 1).bit_length()

# by capacity (CHAN_BUF_CAP_MAX and above: the last)
_BUF_BYTES = tuple(_buf_bytes(cap) for cap in range(L.CHAN_BUF_CAP_MAX + 1))

_REC = struct.Struct(L.REC_FORMAT)  # a waiter record's header (chan.c's wrec)
_pack_rec = _REC.pack
_unpack_rec = _REC.unpack_from


def _rec(rec: tuple) -> bytes:
    """A waiter record ``(p, gid, slot, gen, case, data)`` as stored in a wait queue."""
    data = rec[5]
    if data is None:
        return _pack_rec(rec[0], rec[1], rec[2], rec[3], rec[4], 0)
    return _pack_rec(rec[0], rec[1], rec[2], rec[3], rec[4], 1) + data


def _unrec(raw: bytes) -> tuple:
    """The record ``(p, gid, slot, gen, case, data)`` stored as ``raw``."""
    p, gid, slot, gen, case, has = _unpack_rec(raw)
    return p, gid, slot, gen, case, (raw[L.REC_BYTES:] if has else None)


def reopen_block(arena: Arena, off: int, cap: int, live_word: int) -> None:
    """Make the ended channel block at ``off`` an open, empty channel of capacity ``cap`` with
    one reference, its creator's handle (the compiled core's ``chan_reopen``), and count it
    among this P's live channels (word ``live_word``; owner P only)."""
    q = arena.words.view
    q[live_word] = (q[live_word] + 1) & 0xFFFF_FFFF_FFFF_FFFF
    if arena.core is not None:
        arena.core.chan_reopen(off, cap)
        return
    w = off // 8
    q[w + _W_CAP] = cap
    q[w + _W_CLOSED] = 0
    q[w + _W_REFS] = 1  # count and records are 0: the channel ended empty
    q[w + _W_MAGIC] = _MAGIC  # stored last; pairs with SharedChan.__init__'s load


class SparePool:
    """Destroyed channel blocks, rings included, kept for the next channels of every P.

    Arena words: word 0 hands out block ids (``new_id``), word 1 is the pool's lock; then for
    each buffer ring size ``256 << k`` a stack: its size, then ``_SPARE_SLOTS`` offsets of blocks
    whose three rings have the sizes a new channel's would have, emptied. A take or a give
    commits with its one store of the size, under the pool's lock (a leaf), so a P killed
    holding it changed nothing. The compiled core does each in one call (``stack_pop``,
    ``stack_push``).
    """

    __slots__ = ("arena", "off", "_q", "_w", "_lock", "_lock_index", "_pop", "_push", "_ats")
    WORDS = 2 + _SPARE_CLASSES * (1 + _SPARE_SLOTS)

    def __init__(self, arena: Arena, off: int) -> None:
        self.arena = arena
        self.off = off
        self._q = arena.words.view
        self._w = off // 8
        self._lock_index = self._q[self._w + 1]
        self._lock = arena.locks.lock(self._lock_index)
        core = arena.core
        self._pop = core.stack_pop if core is not None else self._pop_py
        self._push = core.stack_push if core is not None else self._push_py
        self._ats = {L.CHAN_BUF_MIN << k: off + 8 * (2 + k * (1 + _SPARE_SLOTS))
                     for k in range(_SPARE_CLASSES)}  # each size's stack

    @classmethod
    def create(cls, arena: Arena, lock_index: int) -> SparePool:
        """An empty pool guarded by arena lock ``lock_index`` (before any channel is shared)."""
        off = arena.alloc(cls.WORDS * 8)
        arena.map[off : off + cls.WORDS * 8] = bytes(cls.WORDS * 8)
        arena.words.store(off // 8 + 1, lock_index)
        return cls(arena, off)

    def new_id(self) -> int:
        """An id no channel block of this arena had."""
        return self.arena.add_word(self.off, 1)

    def take(self, buf_bytes: int) -> int | None:
        """A spare block whose buffer ring has ``buf_bytes``, or None."""
        at = self._ats.get(buf_bytes)
        return None if at is None else self._pop(at, self._lock_index)

    def give(self, buf_bytes: int, off: int) -> bool:
        """Keep block ``off`` (buffer ring of ``buf_bytes``); False when that size's pool is
        full."""
        at = self._ats.get(buf_bytes)
        return at is not None and self._push(at, self._lock_index, off, _SPARE_SLOTS)

    def _pop_py(self, at: int, lock_index: int) -> int | None:
        q, b = self._q, at // 8
        if not q[b]:  # a snapshot: empty now, the allocator serves
            return None
        lock = self._lock
        lock.acquire()
        n = q[b]
        off = None
        if n:
            off = q[b + n]
            q[b] = n - 1
        lock.release()
        return off

    def _push_py(self, at: int, lock_index: int, off: int, most: int) -> bool:
        q, b = self._q, at // 8
        lock = self._lock
        lock.acquire()
        n = q[b]
        done = n < most
        if done:
            q[b + 1 + n] = off
            q[b] = n + 1
        lock.release()
        return done

    @property
    def lock_index(self) -> int:
        """The arena lock guarding the pool."""
        return self._lock_index

    def stacks(self) -> dict[int, int]:
        """The byte offset of each buffer ring size's stack (the compiled core pops and pushes
        them itself: ``Handles``)."""
        return dict(self._ats)

    def blocks(self) -> list[int]:
        """The offsets of the spare blocks (a snapshot)."""
        q = self._q
        out: list[int] = []
        for k in range(_SPARE_CLASSES):
            b = self._w + 2 + k * (1 + _SPARE_SLOTS)
            out.extend(q[b + 1 + i] for i in range(q[b]))
        return out


def retire_block(arena: Arena, off: int) -> bool:
    """Mark the ended channel block at ``off`` destroyed (magic 0, so a stale name of it is
    refused) when it holds no value and no record and none of its rings grew: True then, and
    the block with its rings can serve a new channel as it is (the compiled core's
    ``chan_retire``). No lock: no process can reach a channel whose count is 0."""
    if arena.core is not None:
        return arena.core.chan_retire(off)
    q, w = arena.words.view, off // 8
    if q[w + _W_COUNT] or q[w + _W_NSEND] or q[w + _W_NRECV] or q[w + _W_GROWN]:
        return False
    q[w + _W_MAGIC] = 0
    return True


def compact(arena: Arena, q: Ring, live: Callable[[int, int, int, int], bool]) -> None:
    """Drop the dead records of wait queue ``q``, freeing their values' blocks: a record
    ``(p, gid, slot, gen, ...)`` is dead when ``live(p, gid, slot, gen)`` is False (the caller
    holds the channel's lock)."""
    keep = []
    while (raw := q.get_locked()) is not None:
        rec = _unrec(raw)
        if live(rec[0], rec[1], rec[2], rec[3]):
            keep.append(raw)
        elif rec[5] is not None:
            discard(rec[5], arena)  # a select loser's value: nobody will take it
    for raw in keep:
        q.put_locked(raw)


def new_block(arena: Arena, cap: int, buf_bytes: int, lock_index: int, uid: int,
              live_word: int) -> int:
    """A new channel block of capacity ``cap`` (buffer ring of ``buf_bytes``) guarded by arena
    lock ``lock_index``, with id ``uid`` and one reference, its creator's handle; counted among
    this P's live channels (word ``live_word``; owner P only). Returns its offset."""
    words = arena.words
    off = arena.alloc(_BLOCK)
    w = off // 8
    key = lock_index - 1  # Ring.create maps key k to lock 1 + k % (nlocks - 1)
    words.store(w + _W_CAP, cap)
    words.store(w + _W_CLOSED, 0)
    words.store(w + _W_COUNT, 0)
    words.store(w + _W_BUF, Ring.create(arena, buf_bytes, key).offset)
    # Wait queues start small and double when full (grow): a channel's block and rings are
    # held until no goroutine can reach it, so their size sets how many a run can share.
    words.store(w + _W_RECVQ, Ring.create(arena, _RECVQ_BYTES, key).offset)
    words.store(w + _W_SENDQ, Ring.create(arena, _SENDQ_BYTES, key).offset)
    words.store(w + _W_LOCK, lock_index)
    words.store(w + _W_NRECV, 0)
    words.store(w + _W_NSEND, 0)
    words.store(w + _W_REFS, 1)  # the creating process's handle
    words.store(w + _W_ID, uid)
    words.store(w + _W_GROWN, 0)
    words.store(w + _W_MAGIC, _MAGIC)  # store last; pairs with SharedChan.__init__'s load
    q = words.view
    q[live_word] = (q[live_word] + 1) & 0xFFFF_FFFF_FFFF_FFFF  # this P's live channels
    return off


def grow(arena: Arena, q: Ring, word: int, raw: bytes) -> Ring:
    """Move a full wait queue into one twice its size, append ``raw``, publish it in ``word``.

    The caller holds the queue's lock; every user re-reads ``word`` under that lock. The
    compiled core moves the frames in one call (a buffer of 100 k values grows ~8 times).
    """
    bigger = type(q).create(arena, q.capacity * 2, q._lock_index - 1)
    if arena.core is not None:
        arena.core.ring_move_locked(q.offset, bigger.offset)
    else:
        while (x := q.get_locked()) is not None:
            bigger.put_locked(x)
    if len(q) or not bigger.put_locked(raw):
        raise MemoryError("a shared wait queue cannot grow")
    arena.words.store(word, bigger.offset)  # store; read under the same lock by every user
    arena.decref(q.offset)
    return bigger

