"""The goroutine record (Go's ``g``).

Invariants:
- ``glet`` is None until the goroutine first runs; from then on it is bound to this P's thread.
- ``state`` is one of RUNNABLE, RUNNING, WAITING, DEAD; ``reason`` is set only while WAITING.
- ``param`` carries the value handed over by ``Hub.ready`` until the goroutine resumes.
- A G is its own channel waiter (Go's ``sudog``) for a plain send or receive: ``g``, ``sel`` and
  ``case`` read as a waiter's do, ``elem`` holds the value a parked sender offers. A select
  makes one separate waiter per case instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import FrameType
from typing import Any

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

RUNNABLE = "runnable"
RUNNING = "running"
WAITING = "waiting"
DEAD = "dead"


class G:
    """One goroutine: its function, its greenlet once started, and its scheduling state."""

    # Fields most goroutines never change are class-level defaults, so that creating a G (once
    # per goroutine, on every spawn and steal) stores only what differs: 6 stores, not 14.
    glet: Any = None
    state = RUNNABLE
    reason = ""
    param: Any = None
    result: Any = None
    is_main = False
    name = ""
    elem: Any = None
    sel = None
    case = -1
    #: where it was created, for Go's "created by" line: ``(code, instruction offset, creator's
    #: goroutine id)`` of the user's call, resolved to a line only when printed (call_site);
    #: None when not recorded (sites off: hub.py; goroutines that go() queued for any P)
    made: Any = None

    def __init__(self, gid: int, fn: Callable[..., Any], args: tuple, kwargs: dict, p: int,
                 local: bool = True) -> None:
        self.id = gid
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.p = p
        self.local = local

    @property
    def g(self) -> G:
        """The goroutine a waiter wakes: itself."""
        return self

    def function(self) -> str:
        """``module.func`` of its function, or its name (``main``)."""
        if self.name:
            return self.name
        fn = self.fn
        what = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        mod = getattr(fn, "__module__", None)
        return f"{mod}.{what}" if mod else what

    def describe(self) -> str:
        """``goroutine N (module.func)``, as panics name it."""
        return f"goroutine {self.id} ({self.function()})"

    def created_by(self) -> str:
        """Go's ``created by fn in goroutine N at file:line``, or "" when not recorded (and
        for the main goroutine, as in Go)."""
        if self.made is None or self.is_main:
            return ""
        code, offset, creator = self.made
        line = next((ln for start, end, ln in code.co_lines() if start <= offset < end), None)
        where = f" in goroutine {creator}" if creator else ""
        return f"created by {code.co_qualname}{where} at {code.co_filename}:{line or '?'}"

    def __repr__(self) -> str:
        extra = f" [{self.reason}]" if self.state == WAITING else ""
        return f"<G {self.id} {self.state}{extra} on P{self.p}>"


def call_site(f: FrameType | None, current: G | None) -> tuple | None:
    """``G.made`` for a goroutine created by a call under frame ``f``: the innermost frame
    outside csp_mp (go() itself, errgroup, a hooked hub's layers are skipped) and the
    goroutine ``current`` running it."""
    while f is not None and f.f_code.co_filename.startswith(_PKG):
        f = f.f_back
    if f is None:
        return None
    return f.f_code, f.f_lasti, current.id if current is not None else 0
