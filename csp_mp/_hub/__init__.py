"""L2: one P. Goroutine records, the wait-reason table, the run loop, timers, M threads.

``current_hub()`` returns this process's hub, starting the implicit runtime through the factory
the upper layer registered with ``set_default_factory`` when none runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .._proc import proc
from . import hooks
from .g import DEAD, RUNNABLE, RUNNING, WAITING, G
from .hub import Broker, Hub, Outcome
from .ports import Waker


def new_hub(p: int = 0) -> Hub:
    """A hub for P ``p``; with ``CSP_MP_SCHED_SEED`` set, its order is the seeded scheduler's."""
    hub = Hub(p)
    env = os.environ.get("CSP_MP_SCHED_SEED", "").strip()
    if env:
        seed = int(env)
        hub.select_rng.seed(seed)
        hooks.install(hub, hooks.Seeded(seed))
    return hub


def set_current(hub: Hub | None) -> None:
    """Install (or clear) the hub of this process."""
    proc.hub = hub
    if hub is not None:
        hub.aim_go_entry()
    elif proc.go_entry is not None:
        proc.go_entry.target = None


def peek() -> Hub | None:
    """This process's hub, or None when no runtime runs."""
    return proc.hub


def set_default_factory(factory: Callable[[], Hub]) -> None:
    """Register how to start the implicit runtime (the ``_run`` layer does, at import)."""
    proc.start_implicit = factory


def current_hub() -> Hub:
    """This process's hub, starting the implicit runtime on first use."""
    hub = proc.hub
    if hub is None:
        factory = proc.start_implicit
        if factory is None:
            raise RuntimeError("csp_mp runtime is not available")
        hub = factory()
    return hub


def spawn(fn: Callable[..., object], args: tuple = (), kwargs: dict | None = None,
          local: bool = True) -> G | None:
    """Start a goroutine on the current runtime (``local=False``: it may migrate to another P)."""
    if not callable(fn):
        raise TypeError(f"go() needs a callable, got {type(fn).__name__}")
    return current_hub().spawn(fn, args, kwargs, local)


__all__ = ["G", "Hub", "Outcome", "Broker", "Waker", "RUNNABLE", "RUNNING", "WAITING", "DEAD",
           "current_hub", "new_hub", "spawn", "peek", "set_current", "set_default_factory"]
