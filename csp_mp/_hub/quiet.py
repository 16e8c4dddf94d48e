"""A P with nothing to run and no blocking call in flight: every goroutine on it is durably
blocked. That moment wakes ``wait_all_blocked`` callers (trio's ``wait_all_tasks_blocked``)
and, under fake time, moves the virtual clock to the next timer (Go's ``testing/synctest``).

Invariants:
- ``hub.all_blocked`` holds exactly the goroutines parked with ``WAIT_ALL_BLOCKED``.
- The clock moves only when no goroutine can run and none waits for a blocking call, and never
  while a ``wait_all_blocked`` caller is still to be woken: callers see the blocked state
  before time moves on.

Design notes: one P only. Across Ps the blocked state is a global property that the Ps would
have to agree on (as the deadlock check does); fake time refuses to start on several Ps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from . import waits as W
from .g import G
from .timers import TimerHeap


class Hub(Protocol):
    """What this module uses of a hub (hub.py's ``Hub``, which calls it)."""

    all_blocked: list[G]
    current: G | None
    timers: TimerHeap

    def ready(self, g: G, value: Any = None, next_: bool = True) -> None: ...

    def park(self, reason: str) -> Any: ...

    def post(self, entry: Callable[[], object]) -> None: ...


def on_quiet(hub: Hub, delay: float | None) -> bool:
    """Called by the idle hub (owner P only) when no goroutine can run and no blocking call is
    in flight; True if it made a goroutine runnable or moved the clock."""
    waiters = hub.all_blocked
    if waiters:
        hub.all_blocked = []
        for g in waiters:
            hub.ready(g, True, next_=False)
        return True
    return delay is not None and hub.timers.virtual and hub.timers.advance()


def park_until_quiet(hub: Hub, timeout: float | None) -> bool:
    """Park the calling goroutine until every other goroutine of this P is durably blocked;
    False if ``timeout`` real seconds passed first."""
    g = hub.current
    if g is None:
        raise RuntimeError("wait_all_blocked() called outside a goroutine")
    timer = None
    if timeout is not None:
        def expire() -> None:  # runs in the hub, posted by the timer thread
            if g in hub.all_blocked:
                hub.all_blocked.remove(g)
                hub.ready(g, False, next_=False)

        timer = threading.Timer(timeout, hub.post, (expire,))  # run by the hub, not the timer
        timer.daemon = True
        timer.start()
    hub.all_blocked.append(g)
    try:
        return bool(hub.park(W.WAIT_ALL_BLOCKED))
    except BaseException:
        if g in hub.all_blocked:
            hub.all_blocked.remove(g)
        raise
    finally:
        if timer is not None:
            timer.cancel()
