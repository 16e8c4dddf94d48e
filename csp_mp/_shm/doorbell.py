"""Doorbells: one counting semaphore per P that anything ringing it can never lose.

On the Python path a doorbell is a named semaphore (sealed with the arena's registry); on the
compiled core it is two futex words in an arena block (:class:`NativeDoorbell`, nothing named):
``Doorbell.create(arena)`` picks the arena's kind.

``ring()`` posts (about 23 ns when nobody waits); ``wait(timeout)`` takes one post, sleeping in
the kernel until one arrives. Because the count remembers a post made before the wait, "publish
work, then ring" and "find no work, then wait" cannot lose a wake-up, with no flag and no fence.
Any process holding the doorbell and any thread of it may ring; one thread (the P's hub) waits.

Invariants:
  - count == posts not yet taken (saturating at SEM_VALUE_MAX: a saturated bell is already due
    to wake, so a ring that finds it full is dropped, not lost).
  - the waiter spins (non-blocking tries) before sleeping only when the spin policy says a core
    is spare: spinning on a shared core only burns the ringer's time slice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from csp_mp._proc import proc
from csp_mp._shm.locks import SEM_VALUE_MAX, Sem

__all__ = ["Doorbell", "NativeDoorbell", "SPIN_SECONDS", "set_spin_policy", "spare_core"]

SPIN_SECONDS = 30e-6  # how long a waiter spins before sleeping, when a core is spare

_NCPU = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def spare_core() -> bool:
    """Default spin policy: more than one CPU and the 1-minute load leaves one idle.

    The load is re-read at most every 0.25 s (``proc.load``, ``proc.load_at``).
    """
    if _NCPU < 2:
        return False
    now = time.monotonic()
    if now - proc.load_at > 0.25:
        proc.load_at = now
        proc.load = os.getloadavg()[0]
    return proc.load <= _NCPU - 1


def set_spin_policy(policy: Callable[[], bool]) -> None:
    """Replace the spare-core test (the runtime knows how many Ps are running or spinning)."""
    proc.spin_policy = None if policy is spare_core else policy


class Doorbell:
    """A P's wake-up semaphore: ring from any process or thread, wait in the owner."""

    __slots__ = ("_sem", "_post", "_try", "__weakref__")

    def __init__(self, sem: Sem) -> None:
        self._sem = sem
        self._post = sem.release
        self._try = sem.acquire

    @classmethod
    def create(cls, arena: Any) -> Doorbell | NativeDoorbell:
        """A new doorbell of ``arena``'s kind (creator process, before the others start)."""
        if arena.core is not None:
            return NativeDoorbell.create(arena)
        return cls(arena.sems.semaphore(0, SEM_VALUE_MAX))

    def ring(self) -> None:
        """Post one wake-up (any process, any thread)."""
        try:
            self._post()
        except ValueError:
            pass  # saturated: the waiter has more wake-ups pending than it will ever need

    def wait(self, timeout: float | None = None) -> bool:
        """Take one post, waiting up to ``timeout`` seconds (None: forever). False on timeout."""
        if self._try(False):
            return True
        if timeout != 0 and (proc.spin_policy or spare_core)():
            deadline = time.perf_counter() + min(SPIN_SECONDS, timeout or SPIN_SECONDS)
            try_ = self._try
            while time.perf_counter() < deadline:
                if try_(False):
                    return True
        if timeout == 0:
            return False
        return self._try(True, timeout)

    def drain(self) -> int:
        """Take every pending post without waiting; how many there were."""
        n = 0
        while self._try(False):
            n += 1
        return n

    @property
    def pending(self) -> int:
        """Posts not yet taken (a snapshot)."""
        return self._sem.value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Doorbell, (self._sem,))


class NativeDoorbell:
    """A doorbell of the compiled core: futex words in an arena block (the Doorbell interface).

    The block is never freed while the arena lives (one per P, made at start-up).
    """

    __slots__ = ("_arena", "_bell", "_post", "_wait", "__weakref__")

    def __init__(self, arena: Any, off: int) -> None:
        from csp_mp._shm.native import core

        self._arena = arena
        self._bell = core().Bell(arena.core, off)
        self._post = self._bell.ring
        self._wait = self._bell.wait

    @classmethod
    def create(cls, arena: Any) -> NativeDoorbell:
        off = arena.alloc(8)
        arena.words.store(off // 8, 0)  # count 0, no sleeper; before any other process sees it
        return cls(arena, off)

    def ring(self) -> None:
        """Post one wake-up (any process, any thread)."""
        self._post()

    @property
    def offset(self) -> int:
        """The bell's arena offset (the compiled core rings it by offset)."""
        return self._bell.offset

    def wait(self, timeout: float | None = None) -> bool:
        """Take one post, waiting up to ``timeout`` seconds (None: forever). False on timeout."""
        if timeout == 0:
            return self._wait(0)
        return self._wait(timeout, SPIN_SECONDS if (proc.spin_policy or spare_core)() else 0.0)

    def drain(self) -> int:
        """Take every pending post without waiting; how many there were."""
        return self._bell.drain()

    @property
    def pending(self) -> int:
        """Posts not yet taken (a snapshot)."""
        return self._bell.pending

    def __reduce__(self) -> tuple[Any, ...]:
        return (NativeDoorbell, (self._arena, self._bell.offset))
