"""A counting semaphore that parks goroutines (Go's runtime ``sema``).

Every sync primitive is built on this and on atomics, so making these two shared makes the whole
``sync`` package work across Ps.

Invariants:
- ``count > 0`` implies ``waiters`` is empty: a release with a waiter hands the unit to it.
- With a ``limit``, ``count <= limit``; a release past it raises and changes nothing.
"""

from __future__ import annotations

from collections import deque

from .._hub import current_hub
from .._hub import waits as W
from .._proc import proc


class Sema:
    """Counting semaphore: ``acquire`` parks until a unit is available."""

    __slots__ = ("count", "limit", "waiters", "__weakref__")

    def __init__(self, count: int = 0, limit: int = 0) -> None:
        self.count = count
        self.limit = limit
        self.waiters: deque = deque()

    def try_acquire(self) -> bool:
        """Take a unit if one is free."""
        if self.count > 0:
            self.count -= 1
            return True
        return False

    def acquire(self, reason: str = W.SEMACQUIRE) -> None:
        """Take a unit, parking the goroutine until one is released."""
        if self.count > 0:
            self.count -= 1
            return
        hub = current_hub()
        g = hub.current
        self.waiters.append(g)
        try:
            hub.park(reason)
        except BaseException:
            try:
                self.waiters.remove(g)
            except ValueError:
                pass
            raise

    def release(self, n: int = 1, overflow: str = "") -> None:
        """Give back ``n`` units, handing them to waiters first."""
        if self.limit and not self.waiters and self.count + n > self.limit:
            raise RuntimeError(overflow or "semaphore released too many times")
        hub = None
        while n > 0 and self.waiters:
            if hub is None:
                hub = current_hub()
            hub.ready(self.waiters.popleft(), None)
            n -= 1
        self.count += n

    def __reduce__(self):
        promote = proc.promote_sema  # set while a multi-P runtime runs (_mp/promote.py)
        if promote is None:
            raise TypeError(
                "csp_mp sync objects can only be pickled inside a multi-process runtime")
        return promote(self)
