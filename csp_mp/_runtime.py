"""Runtime queries and knobs: mirrors Go package ``runtime`` (the scheduler parts)."""

from __future__ import annotations

import os
from collections.abc import Callable

from . import _hub


def _multi(name: str) -> Callable:
    from . import _mp

    return getattr(_mp, name)


def num_cpu() -> int:
    """The number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gomaxprocs(n: int = 0) -> int:
    """Return the number of Ps; ``n > 0`` also sets it (resizing a running runtime)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"gomaxprocs needs an int, not {type(n).__name__}")
    hub = _hub.peek()
    if hub is None:
        from ._run import resolve_procs

        prev = resolve_procs(None)
        if n > 0:
            os.environ["GOMAXPROCS"] = str(n)
        return prev
    if hub.broker is not None:
        return _multi("gomaxprocs")(hub, n)
    prev = hub.nprocs
    if n > 0:
        hub.nprocs = n  # (*) a one-P run records the value; it cannot start Ps
    return prev


def native() -> bool:
    """True if the compiled core carries what crosses processes: in the running runtime, or
    (none running) in the next one to start. ``CSP_MP_NATIVE=0`` forces the pure-Python path."""
    hub = _hub.peek()
    if hub is not None and hub.broker is not None:
        return hub.broker.arena.core is not None
    from ._shm import native as _native

    try:
        return _native.enabled()
    except RuntimeError:  # CSP_MP_NATIVE=1 without the core: the next start raises
        return False


def num_goroutine() -> int:
    """Live goroutines in every P."""
    hub = _hub.peek()
    if hub is None:
        return 0
    return _multi("num_goroutine")(hub)


def gosched() -> None:
    """Yield the P, letting other goroutines run."""
    _hub.current_hub().gosched()


def goid() -> int:
    """The current goroutine's id (unique within its P; ``current_p()`` tells the P)."""
    g = _hub.current_hub().current
    return g.id if g is not None else 0


def current_p() -> int:
    """The index of the P running the caller (0 is the user's process)."""
    return _hub.current_hub().p


def stack() -> str:
    """Every goroutine in every P: id, P, state, wait reason and Python stack."""
    hub = _hub.peek()
    if hub is None:
        return ""
    return _multi("stack")(hub)


# Public home of these functions (pickling finds them by module): ``csp_mp.runtime``.
for _f in (num_cpu, gomaxprocs, num_goroutine, gosched, goid, current_p, stack):
    _f.__module__ = "csp_mp.runtime"
del _f
