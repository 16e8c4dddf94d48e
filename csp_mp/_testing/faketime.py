"""Fake time and ``wait_all_blocked``: the parts of Go's ``testing/synctest`` and trio's
``MockClock`` / ``wait_all_tasks_blocked`` a test of timeouts needs.

Invariants:
- At most one ``fake_time()`` block is active per runtime; while it is, the P's timer heap
  reads a ``VirtualClock`` (``TimerHeap.virtual`` is True).

Design notes: the clock lives in the P's timer heap, so ``sleep``, ``after``, ``tick``,
``Timer``, ``Ticker`` and context deadlines follow it without knowing about tests, and the idle
hub moves it (``_hub/quiet.py``). Patching ``time.monotonic`` itself was rejected: it would also
fool the runtime's own bookkeeping (preemption, blocking-call reports, waits on other Ps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .. import _hub
from .._hub import waits as W
from .._hub.quiet import park_until_quiet
from .._hub.timers import VirtualClock
from .._run import resolve_procs
from .._runtime import goid, num_goroutine, stack
from .stacks import parse_stack


class FakeClock:
    """The virtual clock of a ``fake_time()`` block."""

    __slots__ = ("_clock",)
    __module__ = "csp_mp.testing"

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock

    def now(self) -> float:
        """The virtual ``time.monotonic()`` reading that timers and contexts use."""
        return self._clock()

    def advance(self, d: float) -> None:
        """Move the clock ``d`` seconds forward; timers now due fire at the next switch."""
        self._clock.advance(d)


_ONE_P = ("fake_time() needs a runtime with one P (csp_mp.run(..., procs=1), GOMAXPROCS=1, "
          "or @pytest.mark.csp_mp(procs=1)): a virtual clock across Ps is not supported")


@contextmanager
def fake_time() -> Iterator[FakeClock]:
    """Inside the block the runtime's clock is virtual and jumps to the next timer as soon as
    every goroutine is durably blocked; with no timer pending that is a ``DeadlockError``."""
    hub = _hub.peek()
    if hub is None and resolve_procs(None) > 1:
        raise RuntimeError(_ONE_P)
    hub = _hub.current_hub()
    if hub.broker is not None or hub.nprocs > 1:
        raise RuntimeError(_ONE_P)
    if hub.timers.virtual:
        raise RuntimeError("fake_time() is already active in this runtime")
    # a whole second at or after the real reading: sums and differences of the usual delays
    # (1, 0.25, 30) are then exact in floating point, so tests may compare them with ==
    clock = VirtualClock(float(math.ceil(time.monotonic())))
    hub.timers.swap_clock(clock)
    try:
        yield FakeClock(clock)
    finally:
        hub.timers.swap_clock(time.monotonic)


_NOT_BLOCKED = {"runnable", "running", W.BLOCKING_CALL, W.GOSCHED}


def wait_all_blocked(timeout: float | None = None) -> None:
    """Return once every other goroutine is durably blocked (parked on a channel, a lock, a
    sleep, ...); ``TimeoutError`` if that takes more than ``timeout`` real seconds."""
    hub = _hub.current_hub()
    if hub.broker is None:
        if not park_until_quiet(hub, timeout):
            raise TimeoutError(f"goroutines still running after {timeout} s:\n{stack()}")
        return
    # several Ps: poll the goroutines of every P until all but the caller are parked
    from .._time import sleep

    deadline = None if timeout is None else time.monotonic() + timeout
    me = goid()
    pause = 0.0005
    while True:
        entries = [e for e in parse_stack(stack()) if e.gid != me]
        if all(e.state not in _NOT_BLOCKED for e in entries) \
                and num_goroutine() == sum(e.count for e in entries) + 1 \
                and not hub.broker.wakes_pending():  # else one of them is about to run
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"goroutines still running after {timeout} s:\n{stack()}")
        sleep(pause)
        pause = min(pause * 2, 0.05)
