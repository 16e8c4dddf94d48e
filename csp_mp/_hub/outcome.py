"""How a hub loop ends: its ``Outcome``, and what a goroutine's uncaught exception makes of it.

Invariants:
- An ``Outcome`` is made once per run and never changed (the hub's ``outcome`` field is set
  once; see hub.py).
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from .. import _tb
from .._errors import GoroutineExit, Panic
from .g import G


class Outcome:
    """How a hub loop ended: ``kind`` is "return", "panic", "deadlock", "stop", "interrupt" or
    "lost"."""

    __slots__ = ("kind", "value", "error")

    def __init__(self, kind: str, value: Any = None, error: BaseException | None = None) -> None:
        self.kind = kind
        self.value = value
        self.error = error


def panic_outcome(g: G, exc: BaseException) -> Outcome:
    """The outcome of a run whose goroutine ``g`` raised ``exc``: Ctrl-C and ``SystemExit`` end
    it as they are, anything else as a ``Panic`` naming the goroutine, its P and the P's pid (Go's
    program exit)."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return Outcome("interrupt", error=exc)
    if isinstance(exc, Panic):
        return Outcome("panic", error=exc)
    _tb.trim(exc)  # the goroutine's frames, not the worker loop that ran it
    pid = os.getpid()
    err = Panic(f"panic in {g.describe()} on P{g.p} (pid {pid}): {type(exc).__name__}: {exc}",
                goroutine=g.describe(),
                traceback_text="".join(traceback.format_exception(exc)), p=g.p, pid=pid)
    err.__cause__ = exc
    return Outcome("panic", error=err)


def outcome_error(out: Outcome) -> BaseException:
    """What a goroutine still parked when the run ended with ``out`` raises as it unwinds."""
    if out.error is not None:
        return out.error
    return GoroutineExit()


__all__ = ["Outcome", "outcome_error", "panic_outcome"]
