"""Timers of one P: a heap of deadlines on a swappable clock.

Invariants:
- ``active`` equals the number of entries in the heap whose ``cancelled`` is False.
- A callback runs in the hub greenlet and must never park.
- Entries are removed lazily: a cancelled entry stays in the heap until it reaches the top.
- ``virtual`` is True exactly when ``clock`` is a ``VirtualClock`` (fake time): it then moves
  only through ``advance()`` or ``VirtualClock.advance``.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any


class TimerEntry:
    """One pending callback; ``cancel()`` it to drop it."""

    __slots__ = ("when", "seq", "fn", "args", "cancelled", "heap")

    def __init__(self, when: float, seq: int, fn: Callable[..., Any], args: tuple, heap: TimerHeap):
        self.when = when
        self.seq = seq
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.heap = heap

    def __lt__(self, other: TimerEntry) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> bool:
        """Drop the entry; True if it had not fired or been cancelled yet."""
        if self.cancelled:
            return False
        self.cancelled = True
        self.heap.active -= 1
        return True


class VirtualClock:
    """A clock that stands still until advanced (fake time); reads as ``time.monotonic()``."""

    __slots__ = ("t",)

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, d: float) -> None:
        """Move the clock ``d >= 0`` seconds forward."""
        if d < 0:
            raise ValueError("a clock cannot go back")
        self.t += d


class TimerHeap:
    """Pending timers ordered by deadline. Owner P only, unless a method says otherwise."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.virtual = False
        self._heap: list[TimerEntry] = []
        self._seq = itertools.count()
        self.active = 0

    def swap_clock(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` from now on; pending timers keep their remaining delay."""
        shift = clock() - self.clock()
        for entry in self._heap:  # a uniform shift keeps the heap ordered
            entry.when += shift
        self.clock = clock
        self.virtual = isinstance(clock, VirtualClock)

    def advance(self) -> bool:
        """Fake time: jump the clock to the earliest live deadline; False when none pends."""
        clock = self.clock
        if not isinstance(clock, VirtualClock) or self.next_delay() is None:
            return False
        clock.t = max(clock.t, self._heap[0].when)
        return True

    def add(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerEntry:
        """Schedule ``fn(*args)`` in ``delay`` seconds."""
        entry = TimerEntry(self.clock() + max(0.0, delay), next(self._seq), fn, args, self)
        heapq.heappush(self._heap, entry)
        self.active += 1
        return entry

    def next_delay(self) -> float | None:
        """Seconds until the earliest live timer, or None when none is pending."""
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        if not heap:
            return None
        return max(0.0, heap[0].when - self.clock())

    def due(self) -> bool:
        """Whether the earliest entry's deadline has passed. Any thread: it reads the heap's top
        (one atomic list read under the GIL) and the clock, nothing else; a cancelled top counts
        until the owner drops it (the entries under it may be due: the answer errs towards yes).
        """
        try:
            top = self._heap[0]
        except IndexError:
            return False
        return top.when <= self.clock()

    def run_due(self) -> int:
        """Fire every live timer whose deadline has passed; return how many fired."""
        heap = self._heap
        if not heap:
            return 0
        now = self.clock()
        fired = 0
        while heap and (heap[0].cancelled or heap[0].when <= now):
            entry = heapq.heappop(heap)
            if entry.cancelled:
                continue
            entry.cancelled = True
            self.active -= 1
            entry.fn(*entry.args)
            fired += 1
        return fired

    def clear(self) -> None:
        """Drop every timer (runtime shutdown)."""
        for entry in self._heap:
            entry.cancelled = True
        self._heap.clear()
        self.active = 0
