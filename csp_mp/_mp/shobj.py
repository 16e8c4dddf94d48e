"""Shared atomics and semaphores: the two primitives every sync object is built on.

A promoted ``Int64`` keeps its class's API; its slot then holds ``(word, lock)``: the arena word
with its value (two's complement) and the lock stripe that serializes read-modify-writes.
A promoted ``Sema`` keeps a count word and a ring of waiter records ``(p, gid)`` under one lock.
Both blocks end with a reference word, counted as a shared channel's is (``_mp/promote.py``).

Invariants:
- An atomic's word is stored only under its lock; plain loads read a whole 8-byte word, so a
  ``load()`` outside the lock sees some value that was stored.
- Sema: ``count > 0`` implies no waiter record; a release hands units to waiters first.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._atomic import _MAX, _MIN, Int64, _check_int, _wrap
from .._chan.block import grow
from .._chan.proclayer import K_GRANT
from .._hub import current_hub
from .._hub import waits as W
from .._shm import Ring, attach_ring
from .._sync.sema import Sema

_M64 = (1 << 64) - 1
_rec = msgspec.msgpack.Encoder().encode
_unrec = msgspec.msgpack.Decoder(tuple).decode


def _to_word(v: int) -> int:
    return v & _M64


def _from_word(u: int) -> int:
    return u - (1 << 64) if u > _MAX else u


class SharedInt64(Int64):
    """An ``Int64`` living in the arena (``_v`` is ``(arena, word index, lock, offset)``)."""

    __slots__ = ()

    def load(self) -> int:
        a, w, _lock, _off = self._v
        return _from_word(a.words.view[w])  # load; pairs with the stores under the lock

    def store(self, v: int) -> None:
        a, w, lock, _off = self._v
        v = _wrap(_check_int(v))
        with lock:
            a.words.view[w] = _to_word(v)

    def add(self, delta: int) -> int:
        a, w, lock, _off = self._v
        _check_int(delta)
        q = a.words.view
        with lock:
            v = _from_word(q[w]) + delta
            if not _MIN <= v <= _MAX:
                v = _wrap(v)
            q[w] = _to_word(v)
        return v

    def swap(self, v: int) -> int:
        a, w, lock, _off = self._v
        v = _wrap(_check_int(v))
        q = a.words.view
        with lock:
            old = _from_word(q[w])
            q[w] = _to_word(v)
        return old

    def compare_and_swap(self, old: int, new: int) -> bool:
        a, w, lock, _off = self._v
        _check_int(old)  # the same checks as Int64's, in the same order
        new = _wrap(_check_int(new))
        q = a.words.view
        with lock:
            if _from_word(q[w]) != old:
                return False
            q[w] = _to_word(new)
            return True


class NativeSharedInt64(Int64):
    """An ``Int64`` in the arena whose every operation is one atomic instruction of the compiled
    core, no lock (``_v`` is ``(core, byte offset, lock, offset)``; the lock is unused)."""

    __slots__ = ()

    def load(self) -> int:
        c, o = self._v[0], self._v[1]
        return c.iload(o)

    def store(self, v: int) -> None:
        c, o = self._v[0], self._v[1]
        c.istore(o, _wrap(_check_int(v)))

    def add(self, delta: int) -> int:
        c, o = self._v[0], self._v[1]
        return c.iadd(o, _wrap(_check_int(delta)))  # wrapping add mod 2**64: Go's int64

    def swap(self, v: int) -> int:
        c, o = self._v[0], self._v[1]
        return c.iswap(o, _wrap(_check_int(v)))

    def compare_and_swap(self, old: int, new: int) -> bool:
        c, o = self._v[0], self._v[1]
        if not _MIN <= _check_int(old) <= _MAX:  # the same checks as Int64's, in the same order
            _check_int(new)
            return False
        new = _wrap(_check_int(new))
        return c.icas(o, old, new)


INT64_REFS = 2  # the reference word of an Int64 block (promote.py's protocol)
SEMA_REFS = 3  # the reference word of a semaphore block


def new_int64_block(broker: Any, value: int) -> int:
    """Allocate the arena block of a shared Int64: ``[value, lock index, references]``, with
    the reference of the creating process's handle."""
    a = broker.ctx.arena
    off = a.alloc(24)
    a.words.store(off // 8 + 1, broker.obj_lock_index())
    a.words.store(off // 8 + INT64_REFS, 1)
    a.words.store(off // 8, _to_word(value))
    return off


def free_int64_block(arena: Any, off: int) -> None:
    """Give back the block of a shared Int64 no process can reach any more."""
    arena.decref(off)


def attach_int64(obj: Int64, broker: Any, off: int) -> None:
    """Turn ``obj`` into a handle on the shared Int64 at ``off``."""
    a = broker.ctx.arena
    lock = a.locks.lock(a.words.load(off // 8 + 1))
    if a.core is not None:
        obj.__class__ = NativeSharedInt64
        obj._v = (a.core, off, lock, off)
    else:
        obj.__class__ = SharedInt64
        obj._v = (a, off // 8, lock, off)


class SharedSema(Sema):
    """A ``Sema`` living in the arena (``count`` holds ``(broker, offset, word, lock, ring)``)."""

    __slots__ = ()

    def _queue(self) -> Ring:
        """The waiter ring (it moves when it grows; under the lock)."""
        b, off, w, lock, q = self.count
        cur = b.ctx.arena.words.load(w + 2)
        if q.offset != cur:
            q = attach_ring(b.ctx.arena, cur)
            self.count = (b, off, w, lock, q)
        return q

    def try_acquire(self) -> bool:
        _b, _off, w, lock, _q = self.count
        q = _b.ctx.arena.words.view
        with lock:
            n = q[w]
            if n > 0:
                q[w] = n - 1
                return True
        return False

    def acquire(self, reason: str = W.SEMACQUIRE) -> None:
        b, _off, w, lock, q = self.count
        words = b.ctx.arena.words.view
        hub = current_hub()
        lock.acquire()
        try:
            n = words[w]
            if n > 0:
                words[w] = n - 1
                return
            q = self._queue()
            raw = _rec((b.ctx.p, hub.current.id))
            if not q.put_locked(raw):
                self.count = self.count[:4] + (grow(b.ctx.arena, q, w + 2, raw),)
        finally:
            lock.release()
        hub.park(reason)

    def release(self, n: int = 1, overflow: str = "") -> None:
        b, _off, w, lock, q = self.count
        words = b.ctx.arena.words.view
        woken = []
        owed = b.owe()  # P_OWES before any claim, as a channel's hand-off (replace.py)
        try:
            lock.acquire()
            try:
                q = self._queue()
                if self.limit and not len(q) and words[w] + n > self.limit:
                    raise RuntimeError(overflow or "semaphore released too many times")
                while n > 0:
                    raw = q.get_locked()
                    if raw is None:
                        break
                    rec = _unrec(raw)
                    if not b.plain_live(rec[0], rec[1]):
                        continue  # a waiter that died with its P: the unit goes to the next one
                    woken.append(rec)
                    n -= 1
                if n:
                    words[w] += n
            finally:
                lock.release()
            for p, gid in woken:
                b.deliver(p, gid, -1, 0, 0, K_GRANT, None, None)
        finally:
            if owed:
                b.owe_cancel()  # nothing owed unless a grant for another P is queued (kept)


def new_sema_block(broker: Any, count: int) -> int:
    """Allocate a shared semaphore: ``[count, lock index, waiter ring offset, references]``,
    with the reference of the creating process's handle."""
    a = broker.ctx.arena
    lock_index = broker.obj_lock_index()
    off = a.alloc(32)
    ring = Ring.create(a, SEMA_RING_BYTES, lock_index - 1)
    a.words.store(off // 8 + 1, lock_index)
    a.words.store(off // 8 + 2, ring.offset)
    a.words.store(off // 8 + SEMA_REFS, 1)
    a.words.store(off // 8, count)
    return off


SEMA_RING_BYTES = 1024  # ~60 waiter records (p, gid) before the ring grows (it doubles)


def free_sema_block(arena: Any, off: int) -> None:
    """Give back the block of a shared semaphore no process can reach any more, its waiter
    ring included (nobody waits: a waiter holds a handle)."""
    attach_ring(arena, arena.words.load(off // 8 + 2)).destroy()
    arena.decref(off)


def attach_sema(obj: Sema, broker: Any, off: int, limit: int) -> None:
    """Turn ``obj`` into a handle on the shared semaphore at ``off``."""
    a = broker.ctx.arena
    lock = a.locks.lock(a.words.load(off // 8 + 1))
    ring = attach_ring(a, a.words.load(off // 8 + 2))
    obj.__class__ = SharedSema
    obj.count = (broker, off, off // 8, lock, ring)
    obj.limit = limit
    obj.waiters = None
