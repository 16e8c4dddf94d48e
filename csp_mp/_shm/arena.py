"""The arena: one anonymous shared-memory region per runtime, and a block allocator inside it.

The region is a ``memfd`` (no name in ``/dev/shm``, ever), mapped by every process of the
runtime. It is handed to a process started with the forkserver or spawn context by pickling
the :class:`Arena` as a ``Process`` argument (the fd travels with ``multiprocessing.reduction
.DupFd``), or over a ``multiprocessing`` connection. Its locks are named semaphores until
:meth:`Arena.seal` removes the names; seal once every process holds the arena
(:meth:`Arena.wait_attached` counts them).

Layout (byte offsets)::

    0      header line: magic, size, heap base, lock count, attached count, poisoned flag
    64     free-list heads, one word per size class (48 classes)
    448..  one 64-byte line per lock (owner words, see locks.py), 64-aligned
    heap   buddy blocks; each block = 64-byte header + payload (payload 64-aligned)

Block header words: tag (magic | state | class), refcount, next free, previous free, nbytes.

Invariants:
  - allocator state (free-list heads, block headers, refcounts) is written only under lock 0
    of the arena's lock set ("the arena lock"; it protects nothing else).
  - a block of class k spans 2**k bytes at heap offset r with r % 2**k == 0; its buddy is
    r ^ 2**k; the region of a free block's buddy always starts with a real block header.
  - a free block is on exactly one free list (its class); a used block on none.
  - a used block's refcount >= 1; it is freed when a decref brings it to 0.
  - a process killed while holding the arena lock leaves the allocator "poisoned": later
    alloc/free raise rather than trust half-updated free lists (the runtime ends on a lost P).
  - frees triggered by garbage collection (a leased buffer dying) are deferred to a
    process-local list and done at the next alloc or collect(), never inside a finalizer, so a
    finalizer never waits on the arena lock its own thread may hold.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
import weakref
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any

from csp_mp._shm import layout as L
from csp_mp._shm import native
from csp_mp._shm.atomics import LINE, WORD, Words, align
from csp_mp._shm.locks import (
    STATE_LOCKS_WORD,
    TAKEOVERS_WORD,
    LockSet,
    NativeLockSet,
    SemRegistry,
    ShmLock,
)
from csp_mp._shm.segment import Segments

__all__ = ["Arena", "ArenaPoisoned", "BLOCK_HEADER", "MIN_CLASS"]

# the header's words and the blocks' tags: layout.py's (the compiled core is built from it)
_MAGIC = L.ARENA_MAGIC
_BLK = L.BLOCK_MAGIC
_FREE = L.BLOCK_FREE
_USED = L.BLOCK_USED
NCLASS = L.NCLASS
MIN_CLASS = L.MIN_CLASS  # 128-byte blocks: 64 header + 64 payload
BLOCK_HEADER = L.BLOCK_HEADER

# header word indices
_W_MAGIC, _W_SIZE, _W_HEAP = L.AW_MAGIC, L.AW_SIZE, L.AW_HEAP
_W_NLOCKS, _W_ATTACHED, _W_POISON = L.AW_NLOCKS, L.AW_ATTACHED, L.AW_POISON
# takeovers from a dead holder, ever, of the locks from index _W_STATE_LOCKS up (guarding state
# such a holder may leave torn; lock.c counts too)
_W_TAKEOVERS, _W_STATE_LOCKS = TAKEOVERS_WORD, STATE_LOCKS_WORD
# what the _W_POISON word says: a holder of the allocator's lock is changing the free lists
# (stored under the lock by the sections that do, cleared before they release it), or a
# process was killed while it was. A holder killed in any other section (a refcount or a word
# added: one store each) left nothing half-changed, so taking its lock over is harmless.
_CHANGING, _POISONED = 2, 1
_HEADS = LINE // WORD  # word index of free-list head for class 0
_LOCKS_AT = align(LINE + NCLASS * WORD)


class ArenaPoisoned(RuntimeError):
    """Raised when the allocator's lock was taken over from a process killed while holding it."""


class Arena:
    """A shared-memory region with a lock-guarded buddy allocator in it (any process)."""

    def __init__(
        self,
        fd: int,
        size: int,
        locks: LockSet | NativeLockSet,
        sems: SemRegistry | None,
    ) -> None:
        self.fd = fd
        self.size = size
        self._mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        #: The whole region as bytes.
        self.buf = memoryview(self._mm)
        #: The mapping itself: ``map[a:b]`` is a bytes copy, ``map[a:b] = data`` one memcpy.
        self.map = self._mm
        #: The whole region as 64-bit words (word i at byte 8*i).
        self.words = Words(self.buf)
        self.sems = sems
        self.locks = locks
        #: The compiled core's view of the region (``None`` on the Python path).
        self.core: Any = None
        if locks.native:
            self.core = native.core().Region(self._mm, _LOCKS_AT, len(locks))
        locks.bind(self.words, self.core)
        self._lock: ShmLock = locks.lock(0)
        #: What to raise instead of an ``ArenaPoisoned`` (given it), set by the layer that knows
        #: which process died: its loss, say. ``None`` raises the ``ArenaPoisoned``.
        self.poisoned_error: Callable[[ArenaPoisoned], BaseException] | None = None
        self._pending: list[int] = []  # deferred decrefs (process-local)
        self._closed = False
        self._heap = self.words.load(_W_HEAP)  # written once by the creator before any sharing
        self._len = (size - self._heap) & ~((1 << MIN_CLASS) - 1)
        #: values too large for the heap's blocks, each in a segment of its own (segment.py)
        self.segments = Segments(self)

    # ---- creation, hand-over, sealing -------------------------------------------------

    @classmethod
    def create(cls, size: int, nlocks: int = 64, use_native: bool | None = None) -> Arena:
        """A new arena of ``size`` bytes (sparse: pages cost memory once touched) and
        ``nlocks`` shared locks (lock 0 is the allocator's). Creator process only.

        ``use_native``: the compiled core's locks and operations (default: ``native.enabled()``).
        """
        if use_native is None:
            use_native = native.enabled()
        if nlocks < 2:
            raise ValueError("an arena needs at least 2 locks")
        heap = align(_LOCKS_AT + LockSet.region_bytes(nlocks), LINE)
        if size < heap + (1 << MIN_CLASS):
            raise ValueError(f"arena size must be at least {heap + (1 << MIN_CLASS)} bytes")
        size = align(size, 4096)
        fd = os.memfd_create("csp_mp-arena", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            sems = SemRegistry()
            tmp = mmap.mmap(fd, LINE)
            w = Words(memoryview(tmp))
            w.store(_W_SIZE, size)
            w.store(_W_HEAP, heap)
            w.store(_W_NLOCKS, nlocks)
            w.release()
            tmp.close()
            if use_native:
                nlocks_set: LockSet | NativeLockSet = NativeLockSet.create(nlocks)
                self = cls(fd, size, nlocks_set, sems)
                nlocks_set.init(self.core)
            else:
                self = cls(fd, size, LockSet.create(sems, nlocks, _LOCKS_AT // WORD), sems)
        except BaseException:
            os.close(fd)
            raise
        self._carve()
        self.words.store(_W_MAGIC, _MAGIC)  # store; readers check it after mapping
        return self

    @property
    def native(self) -> bool:
        """True if this arena runs on the compiled core."""
        return self.core is not None

    @classmethod
    def from_fd(cls, fd: int, locks: LockSet | NativeLockSet) -> Arena:
        """Map an arena from a received fd (takes ownership of ``fd``) and its lock set."""
        size = os.fstat(fd).st_size
        self = cls(fd, size, locks, None)
        if self.words.load(_W_MAGIC) != _MAGIC:  # load; pairs with the store in create
            self.close()
            raise ValueError("fd is not a csp_mp arena")
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        if self.sems is not None and self.sems.sealed:
            raise RuntimeError("arena is sealed: hand it to processes before seal()")
        return (_rebuild_arena, (reduction.DupFd(self.fd), self.locks))

    def seal(self) -> None:
        """Remove the names of the arena's locks (creator, once every process holds them)."""
        if self.sems is None:
            raise RuntimeError("only the creating process can seal the arena")
        self.sems.seal()

    @property
    def attached(self) -> int:
        """How many processes other than the creator have mapped the arena."""
        return self.words.load(_W_ATTACHED)  # load; pairs with the store in _mark_attached

    def wait_attached(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` other processes have mapped the arena; False on timeout."""
        deadline = time.monotonic() + timeout
        delay = 1e-4
        while self.attached < n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            # at most 1 ms late: a runtime's start waits here, and a forked P attaches within
            # milliseconds (a cap of 10 ms made the wait up to twice as long as the attach)
            delay = min(delay * 2, 0.001)
        return True

    def _mark_attached(self) -> None:
        with self._lock:
            self.words.store(_W_ATTACHED, self.words.load(_W_ATTACHED) + 1)  # under arena lock

    def close(self) -> None:
        """Unmap (once no leased buffer is alive) and close the fd. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.poisoned_error = None  # the runtime it named is gone (an array may outlive it)
        self.segments.close()
        if self.core is not None:
            self.core.release()
        self.words.release()
        self.buf.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # leased buffers alive: the mapping goes with the last of them
        os.close(self.fd)

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- allocator ----------------------------------------------------------------------

    def _carve(self) -> None:
        length = self._len
        r = 0
        while length - r >= 1 << MIN_CLASS:
            k = min((r & -r).bit_length() - 1 if r else NCLASS - 1, NCLASS - 1)
            while r + (1 << k) > length:
                k -= 1
            self._push(r, k)
            r += 1 << k

    def _hw(self, r: int) -> int:
        return (self._heap + r) // WORD

    def _push(self, r: int, k: int) -> None:
        w, b = self.words, self._hw(r)
        head = w.load(_HEADS + k)
        w.store(b, _BLK | _FREE | k)
        w.store(b + 2, head)
        w.store(b + 3, 0)
        if head:
            w.store(self._hw(head - 1) + 3, r + 1)
        w.store(_HEADS + k, r + 1)

    def _unlink(self, r: int, k: int) -> None:
        w, b = self.words, self._hw(r)
        nxt, prv = w.load(b + 2), w.load(b + 3)
        if prv:
            w.store(self._hw(prv - 1) + 2, nxt)
        else:
            w.store(_HEADS + k, nxt)
        if nxt:
            w.store(self._hw(nxt - 1) + 3, prv)

    def _enter(self, changes: bool = False) -> None:
        """Take the allocator's lock; ``changes``: this section changes the free lists (a
        process killed inside it leaves them torn, and poisons the arena)."""
        w = self.words
        taken_over = self._lock.acquire()
        state = w.load(_W_POISON)
        if taken_over and state == _CHANGING:
            state = _POISONED
            w.store(_W_POISON, state)  # under arena lock
        if state == _POISONED:
            self._lock.release()
            err = ArenaPoisoned("a process was killed inside the arena allocator")
            hook = self.poisoned_error
            raise err if hook is None else hook(err)
        if changes:
            w.store(_W_POISON, _CHANGING)  # under arena lock

    def _leave(self, changes: bool = False) -> None:
        if changes:
            self.words.store(_W_POISON, 0)  # under arena lock
        self._lock.release()

    def guard_state_from(self, first: int) -> None:
        """Locks from index ``first`` up guard state a holder killed inside may leave torn
        (``takeovers``, ``locks_orphaned``); those below (queues built to survive it) do not.
        Creator process, before others attach."""
        self.words.store(_W_STATE_LOCKS, first)

    def takeovers(self) -> int:
        """How many times a state lock of this arena was taken over from a dead holder (any
        process; a snapshot): what it guarded may have been left half-changed."""
        return self.words.load(_W_TAKEOVERS)

    def locks_orphaned(self, pid: int) -> bool:
        """Whether the allocator's lock or a state lock of this arena is held by a dead holder,
        process ``pid`` on the Python path (a snapshot; the compiled core's robust mutexes say
        so themselves)."""
        if self.core is not None:
            return bool(self.core.locks_orphaned())
        first = max(1, self.words.load(_W_STATE_LOCKS))
        return any(self.locks.lock(i).owner() == pid for i in (0, *range(first, len(self.locks))))

    def poisoned(self) -> bool:
        """Whether a process was killed inside the allocator while it changed the free lists
        (a snapshot: see ``allocator_sound`` for a holder just killed)."""
        return self.words.load(_W_POISON) == _POISONED

    def allocator_sound(self) -> bool:
        """Whether the allocator is usable: takes its lock once, over from a dead holder if
        need be (which poisons the arena when that holder was changing the free lists). It
        waits while a live process holds the lock. Any process."""
        w = self.words
        taken_over = self._lock.acquire()
        try:
            if taken_over and w.load(_W_POISON) == _CHANGING:
                w.store(_W_POISON, _POISONED)  # under arena lock
            return w.load(_W_POISON) != _POISONED
        finally:
            self._lock.release()

    def alloc(self, nbytes: int) -> int:
        """Offset of a new block of at least ``nbytes`` (64-aligned, refcount 1). Any process."""
        if self._pending:
            self.collect()
        k = max(MIN_CLASS, (nbytes + BLOCK_HEADER - 1).bit_length())
        if k >= NCLASS:
            raise MemoryError(f"arena block of {nbytes} bytes is too large")
        w = self.words
        self._enter(changes=True)
        try:
            j = k
            while j < NCLASS and not w.load(_HEADS + j):
                j += 1
            if j == NCLASS:
                raise MemoryError(f"arena exhausted: no free block for {nbytes} bytes")
            r = w.load(_HEADS + j) - 1
            self._unlink(r, j)
            while j > k:
                j -= 1
                self._push(r + (1 << j), j)
            b = self._hw(r)
            w.store(b, _BLK | _USED | k)
            w.store(b + 1, 1)
            w.store(b + 4, nbytes)
        finally:
            self._leave(changes=True)
        return self._heap + r + BLOCK_HEADER

    def _block(self, off: int) -> tuple[int, int, int]:
        r = off - BLOCK_HEADER - self._heap
        b = self._hw(r)
        tag = self.words.load(b) if 0 <= r < self._len and not r % LINE else 0
        if tag & ~0xFFFF != _BLK or tag & 0xFF00 != _USED:
            raise ValueError(f"offset {off} is not an allocated arena block")
        return r, b, tag & 0xFF

    def add_word(self, byte_off: int, d: int) -> int:
        """Add ``d`` to the word at ``byte_off`` atomically and return its new value (any
        process): the compiled core's fetch_add (seq_cst), else under the allocator lock."""
        core = self.core
        if core is not None:
            return (core.fetch_add(byte_off, d) + d) & 0xFFFF_FFFF_FFFF_FFFF
        return (self.fetch_add(byte_off, d) + d) & 0xFFFF_FFFF_FFFF_FFFF

    def fetch_add(self, byte_off: int, d: int) -> int:
        """Add ``d`` to the word at ``byte_off`` (mod 2**64) under the allocator lock and return
        the value it had: the Python path of the compiled core's ``fetch_add`` (any process)."""
        self._enter()
        q = self.words.view
        i = byte_off // 8
        old = q[i]
        q[i] = (old + d) & 0xFFFF_FFFF_FFFF_FFFF
        self._lock.release()
        return old

    def incref(self, off: int) -> None:
        """Add a reference to block ``off`` (any process)."""
        self._enter()
        try:
            _, b, _ = self._block(off)
            self.words.store(b + 1, self.words.load(b + 1) + 1)
        finally:
            self._lock.release()

    def decref(self, off: int) -> bool:
        """Drop a reference to block ``off``; free it at zero. True if freed. Any process."""
        self._enter(changes=True)
        try:
            return self._decref_locked(off)
        finally:
            self._leave(changes=True)

    free = decref

    def _decref_locked(self, off: int) -> bool:
        w = self.words
        r, b, k = self._block(off)
        rc = w.load(b + 1) - 1
        w.store(b + 1, rc)
        if rc:
            return False
        while k + 1 < NCLASS:
            buddy = r ^ (1 << k)
            if buddy + (1 << k) > self._len or w.load(self._hw(buddy)) != _BLK | _FREE | k:
                break
            self._unlink(buddy, k)
            w.store(self._hw(max(r, buddy)), 0)
            r = min(r, buddy)
            k += 1
        self._push(r, k)
        return True

    def refcount(self, off: int) -> int:
        """The block's reference count (a snapshot)."""
        _, b, _ = self._block(off)
        return self.words.load(b + 1)

    def block_size(self, off: int) -> int:
        """The ``nbytes`` the block was allocated with."""
        _, b, _ = self._block(off)
        return self.words.load(b + 4)

    @property
    def heap_bytes(self) -> int:
        """The size of the heap the blocks are carved from."""
        return self._len

    def free_bytes(self) -> int:
        """Total bytes on the free lists (walks them under the arena lock)."""
        total = 0
        self._enter()
        try:
            for k in range(NCLASS):
                r1 = self.words.load(_HEADS + k)
                while r1:
                    total += 1 << k
                    r1 = self.words.load(self._hw(r1 - 1) + 2)
        finally:
            self._lock.release()
        return total

    # ---- leases: buffers whose death frees their block --------------------------------

    def lease(self, off: int, nbytes: int) -> memoryview:
        """A writable view of ``nbytes`` at ``off`` that owns one reference to the block:
        when the view and everything made from it are gone, the reference is dropped (at
        this process's next alloc or collect)."""
        holder = (ctypes.c_ubyte * nbytes).from_buffer(self._mm, off)
        weakref.finalize(holder, self._pending.append, off)
        return memoryview(holder).cast("B")

    def collect(self) -> int:
        """Do the deferred decrefs now. Returns how many blocks were freed."""
        freed = 0
        pending = self._pending
        if not pending:
            return 0
        self._enter(changes=True)
        try:
            while pending:
                freed += self._decref_locked(pending.pop())
        finally:
            self._leave(changes=True)
        return freed


def _rebuild_arena(dupfd: Any, locks: LockSet) -> Arena:
    arena = Arena.from_fd(dupfd.detach(), locks)
    arena._mark_attached()
    return arena
