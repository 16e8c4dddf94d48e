"""The ring operations in one call of the compiled core: the mixin of ``NativeRing`` and
``NativeSpscRing`` (``ring.py``), for arenas whose ``core`` is set.

Invariants:
  - the frames and commit stores are those of the Python methods (``ring_frames``,
    ``ring_batch``, ``ring``), which stay the specification: a ring made on one path is read on
    the other.
  - out-of-band messages (more than half the ring) take the Python path, since they need the
    arena's allocator.
"""

from __future__ import annotations

from typing import Any

from csp_mp._shm.arena import Arena


class NativeOps:
    """The put/get protocol in one call of the compiled core (arenas with ``arena.core``).

    The same frames and commit stores as the Python methods, which stay the
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
