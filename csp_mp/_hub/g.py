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

from collections.abc import Callable
from typing import Any

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

    def describe(self) -> str:
        """``goroutine N (module.func)``, as panics and stack dumps name it."""
        if self.name:
            what = self.name
        else:
            fn = self.fn
            what = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
            mod = getattr(fn, "__module__", None)
            if mod:
                what = f"{mod}.{what}"
        return f"goroutine {self.id} ({what})"

    def __repr__(self) -> str:
        extra = f" [{self.reason}]" if self.state == WAITING else ""
        return f"<G {self.id} {self.state}{extra} on P{self.p}>"
