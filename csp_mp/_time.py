"""Timers and sleeping: mirrors Go package ``time`` (the parts about waiting).

Durations are seconds as float; delivered values are ``time.monotonic()`` readings. Timer
callbacks run in the hub and never park: they deliver with a non-blocking send.

As in Go 1.23+, once ``stop()`` or ``reset()`` returns, no value prepared before the call is
received from ``.c``: the stale value, if any, is drained from the channel by the call itself.
(*) ``Timer.c`` reports ``cap == 1`` where Go 1.23 reports 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._chan import Chan, nilchan
from ._hub import current_hub, spawn
from ._hub import waits as W
from ._hub.timers import TimerEntry


def now() -> float:
    """The runtime's ``time.monotonic()`` reading (virtual under ``testing.fake_time()``)."""
    return current_hub().timers.clock()


def sleep(d: float) -> None:
    """Pause the calling goroutine for ``d`` seconds; other goroutines keep running."""
    hub = current_hub()
    if d <= 0:
        hub.gosched()
        return
    g = hub.current
    entry = hub.timers.add(d, _wake, hub, g)
    try:
        hub.park(W.SLEEP)
    except BaseException:
        entry.cancel()
        raise


def _wake(hub: Any, g: Any) -> None:
    hub.ready(g, None, next_=False)


def _deliver(c: Chan) -> None:
    """Non-blocking send of the current time (dropped if the buffer is full)."""
    done, w = c._st.try_send(t := current_hub().timers.clock())
    if done and w is not None:
        current_hub().ready(w.g, (t, True), next_=False)


def _drain(c: Chan) -> bool:
    done, _v, ok, _w = c._st.try_recv()
    return bool(done and ok)


class Timer:
    """Delivers the time once on ``.c`` after ``d`` seconds (Go's ``time.NewTimer``)."""

    __slots__ = ("c", "_entry", "_fn")
    __module__ = "csp_mp.time"

    def __init__(self, d: float, _fn: Callable[[], Any] | None = None) -> None:
        self._fn = _fn
        self.c: Chan = nilchan if _fn is not None else Chan(1)
        self._entry: TimerEntry | None = None
        self._start(d)

    def _start(self, d: float) -> None:
        self._entry = current_hub().timers.add(d, self._fire)

    def _fire(self) -> None:
        if self._fn is not None:
            spawn(self._fn, (), None, local=True)
        else:
            _deliver(self.c)

    def stop(self) -> bool:
        """Stop the timer; True if this call stopped it before its value was received."""
        stopped = self._entry.cancel() if self._entry is not None else False
        if self._fn is None and _drain(self.c):
            stopped = True
        return stopped

    def reset(self, d: float) -> bool:
        """Restart the timer to fire after ``d``; returns what ``stop()`` would have."""
        was = self.stop()
        self._start(d)
        return was


class Ticker:
    """Delivers the time on ``.c`` every ``d`` seconds; slow receivers miss ticks (Go)."""

    __slots__ = ("c", "_entry", "_d", "_next")
    __module__ = "csp_mp.time"

    def __init__(self, d: float) -> None:
        if d <= 0:
            raise ValueError("non-positive interval for Ticker")
        self.c: Chan = Chan(1)
        self._d = d
        self._entry: TimerEntry | None = None
        self._schedule(now() + d)

    def _schedule(self, when: float) -> None:
        self._next = when
        timers = current_hub().timers
        self._entry = timers.add(when - timers.clock(), self._fire)

    def _fire(self) -> None:
        _deliver(self.c)
        nxt = self._next + self._d
        t = current_hub().timers.clock()
        if nxt <= t:  # fell behind: skip missed ticks instead of bursting
            nxt = t + self._d - ((t - self._next) % self._d)
        self._schedule(nxt)

    def stop(self) -> None:
        """Stop ticking; no tick from before the call is received afterwards."""
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None
        _drain(self.c)

    def reset(self, d: float) -> None:
        """Stop and restart with period ``d``."""
        if d <= 0:
            raise ValueError("non-positive interval for Ticker.reset")
        self.stop()
        self._d = d
        self._schedule(now() + d)


def after(d: float) -> Chan:
    """A channel that receives the time once, after ``d`` seconds."""
    return Timer(d).c


def tick(d: float) -> Chan:
    """A channel that receives the time every ``d`` seconds (``nilchan`` if ``d <= 0``, as Go)."""
    if d <= 0:
        return nilchan
    return Ticker(d).c


def after_func(d: float, fn: Callable[[], Any]) -> Timer:
    """Run ``fn()`` in its own goroutine after ``d`` seconds; ``stop()`` cancels it."""
    if not callable(fn):
        raise TypeError(f"after_func needs a callable, got {type(fn).__name__}")
    return Timer(d, fn)
