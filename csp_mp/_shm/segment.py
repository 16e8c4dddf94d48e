"""Values too large for the arena: each travels in a shared-memory segment of its own.

The arena's size bounds the runtime's bookkeeping, not the user's data. A buffer whose arena
block would take more than an eighth of the heap (a block is a power of two: a 100 MiB array
holds 128 MiB), or that the arena has no room for, is copied into a ``memfd`` sized to it (a
page multiple: nothing named, nothing in ``/dev/shm``). The message names a *ticket*, a small
arena block holding the sender's pid, its fd of the segment, the length and a taken word; the
receiver opens the segment through ``/proc/<pid>/fd/<fd>``, maps it and sets the taken word.
The sender closes its fd once it sees the word set (at its next ``put``, at a ``take`` of its
own, or when the runtime ends), so the segment's memory is freed when the receiver's last view
of it is dropped.

Invariants:
- A ticket is allocated by the sender with one reference, which only the sender drops, after
  it read the taken word set (or at the arena's close, when the whole arena goes).
- The taken word is set once, by the one process that decodes (or discards) the message;
  it is read by the sender only. A plain 8-byte store and load: the only order needed is that
  the receiver opened the fd before the sender may close it, and the receiver opens it before
  it stores the word.
- ``pending`` (ticket -> fd) belongs to one process (``pid``); a forked child starts empty.
- A receiver that dies before taking leaves the segment to its sender until the runtime ends;
  a sender that dies takes its fds with it (a receiver then cannot open the segment: ``take``
  raises ``ProcessLookupError``-derived ``OSError``).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

__all__ = ["Segments", "too_large_for_arena"]

_W_PID, _W_FD, _W_LEN, _W_TAKEN = range(4)
TICKET_BYTES = 32
_CHUNK = 1 << 30  # bytes per pwrite (Linux writes at most 2 GiB - 4 KiB at once)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def too_large_for_arena(nbytes: int, heap_bytes: int) -> bool:
    """Whether a buffer of ``nbytes`` travels in a segment rather than in an arena block: its
    block (a power of two, header included) would exceed an eighth of the heap."""
    return (nbytes + 64) > heap_bytes >> 3


class Segments:
    """This process's segments in flight for one arena (see the module doc)."""

    def __init__(self, arena: Any) -> None:
        self.arena = arena
        self.pid = os.getpid()
        self.pending: dict[int, int] = {}  # ticket offset -> our fd of its segment

    def _mine(self) -> dict[int, int]:
        if self.pid != os.getpid():  # a forked child: those fds are its parent's business
            self.pid = os.getpid()
            self.pending = {}
        return self.pending

    def put(self, view: memoryview) -> int:
        """Copy ``view`` (bytes, C-contiguous) into a new segment; the ticket's offset.

        MemoryError naming the size and the knobs when no segment can be made."""
        pending = self._mine()
        if pending:
            self.reap()
        n = view.nbytes
        size = max(mmap.PAGESIZE, -(-n // mmap.PAGESIZE) * mmap.PAGESIZE)
        try:
            fd = os.memfd_create("csp_mp-value", os.MFD_CLOEXEC)
        except OSError as exc:
            raise _no_room(n, self.arena, exc) from exc
        try:
            os.ftruncate(fd, size)
            done = 0
            while done < n:  # write(): twice as fast here as faulting in a fresh mapping
                done += os.pwrite(fd, view[done : done + _CHUNK], done)
            ticket = self.arena.alloc(TICKET_BYTES)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise _no_room(n, self.arena, exc) from exc
            raise
        q = self.arena.words.view
        i = ticket // 8
        q[i + _W_PID] = self.pid
        q[i + _W_FD] = fd
        q[i + _W_LEN] = n
        q[i + _W_TAKEN] = 0
        pending[ticket] = fd
        return ticket

    def take(self, ticket: int) -> memoryview:
        """Map the segment of ``ticket`` (any process, once): a writable view that frees it
        with its last reference."""
        q = self.arena.words.view
        i = ticket // 8
        pid, fd, n = q[i + _W_PID], q[i + _W_FD], q[i + _W_LEN]
        try:
            local = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        finally:
            q[i + _W_TAKEN] = 1  # after the open: the sender may close its fd now
        try:
            size = max(mmap.PAGESIZE, -(-n // mmap.PAGESIZE) * mmap.PAGESIZE)
            # populated at once: one call instead of a fault per page read
            m = mmap.mmap(local, size, flags=mmap.MAP_SHARED | _POPULATE)
        finally:
            os.close(local)  # the mapping keeps the segment alive
        if self.pending:
            self.reap()
        return memoryview(m)[:n]

    def drop(self, ticket: int) -> None:
        """A message naming ``ticket`` will never be decoded: its sender may free the segment."""
        self.arena.words.view[ticket // 8 + _W_TAKEN] = 1
        if self.pending:
            self.reap()

    def reap(self) -> int:
        """Close the fds of this process's segments their receivers took; how many."""
        pending = self._mine()
        q = self.arena.words.view
        done = [t for t in pending if q[t // 8 + _W_TAKEN]]
        for t in done:
            os.close(pending.pop(t))
            self.arena.decref(t)
        return len(done)

    def close(self) -> None:
        """The runtime ends: close every fd still held (the arena and its tickets go too)."""
        pending = self._mine()
        for fd in pending.values():
            try:
                os.close(fd)
            except OSError:
                pass
        pending.clear()


def _no_room(nbytes: int, arena: Any, exc: BaseException) -> MemoryError:
    mib = arena.size >> 20
    return MemoryError(
        f"cannot send a value of {_human(nbytes)}: it does not fit the runtime's arena "
        f"(CSP_MP_ARENA_MB={mib}) and a shared-memory segment of its own could not be made "
        f"({exc}); free memory, or send it in parts")


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit} ({n} bytes)"
    return f"{n} bytes"
