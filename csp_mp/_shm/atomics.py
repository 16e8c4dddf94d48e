"""Word access to shared memory: the one module that loads and stores shared 64-bit words.

Invariants:
  - A shared word is 8 bytes, 8-aligned, native byte order, and never straddles a 64-byte line
    (alignment to 8 guarantees this).
  - Loads and stores go through ``memoryview.cast('Q')`` item access: one 8-byte ``mov`` each,
    never torn, never a transient zero. ``struct.pack_into`` zero-fills its target before
    writing, so readers in other processes see a 0 that was never stored: it is never used for a
    word another process reads.
  - On x86-64 (TSO) two stores from one process become visible in program order, and so do two
    loads; a store followed by a load of another word may be reordered. Code that needs
    store->load order (Dekker, "publish then check a sleeping flag") takes a lock or posts a
    semaphore instead; both are full barriers.
  - On other architectures plain stores give no order at all: lock-free protocols built on these
    words are only used when ``TSO`` is true.

Every call site says what its access pairs with ("store, pairs with the load in try_get").

Rejected: the PyPI ``atomics`` package (4-8 us per op), ctypes to libatomic (220-320 ns per op);
a compiled accelerator could replace :class:`Words` without touching any caller.
"""

from __future__ import annotations

import platform

__all__ = ["LINE", "TSO", "WORD", "Words", "align"]

WORD = 8
LINE = 64

#: True where stores are seen in program order by other cores (x86-64).
TSO: bool = platform.machine().lower() in ("x86_64", "amd64")


def align(n: int, to: int = LINE) -> int:
    """Round ``n`` up to a multiple of ``to`` (a power of two)."""
    return (n + to - 1) & ~(to - 1)


class Words:
    """64-bit words over a byte buffer: word ``i`` covers bytes ``[8*i, 8*i + 8)``.

    ``load(i)`` and ``store(i, v)`` are bound C methods. Hot paths subscript :attr:`view`
    instead: ``view[i]`` is the same single 8-byte load and ``view[i] = v`` the same store,
    compiled to one subscript bytecode (about 30-50 ns, where calling the bound method-wrapper
    costs 110-150 ns on the 2-vCPU VM).
    """

    __slots__ = ("load", "store", "view")

    def __init__(self, buf: memoryview) -> None:
        if len(buf) % WORD:
            raise ValueError("buffer length must be a multiple of 8")
        q = buf.cast("B").cast("Q")
        #: the words as a memoryview of unsigned 64-bit items (see the class docstring).
        self.view = q
        #: load(i) -> int: a single 8-byte load of word i.
        self.load = q.__getitem__
        #: store(i, v): a single 8-byte store of word i (0 <= v < 2**64).
        self.store = q.__setitem__

    def __len__(self) -> int:
        return len(self.view)

    def release(self) -> None:
        """Drop the view so the underlying mapping can be closed."""
        self.load = self.store = None  # type: ignore[assignment]
        self.view.release()
