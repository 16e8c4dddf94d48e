"""L5: processes. Start, watch and stop Ps; work stealing; shared channels, atomics and
semaphores; deadlock detection, lost Ps and panics across Ps.

Importing this package changes nothing below it: a runtime it starts registers the promoters
on the runtime object (``promote.set_broker``) and a stop removes them. ``_run`` calls
``run_multi`` for ``procs > 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._hub import Hub, Outcome
from . import arrays as _arrays  # noqa: F401 - discard must know the names of shared arrays
from . import ctx as C
from .counters import metrics as metrics
from .procs import running, start_p0, stop_p0


def run_multi(main: Callable[..., Any], args: tuple, kwargs: dict, nprocs: int) -> Outcome:
    """Run ``main`` as the main goroutine of a runtime with ``nprocs`` Ps; its outcome."""
    rt, hub, broker = start_p0(nprocs)
    try:
        g = hub.spawn(main, args, kwargs, local=True)
        assert g is not None  # a local spawn on a fresh hub always makes a G
        g.is_main = True
        g.name = "main"
        hub.main_g = g
        return broker.reporter.lost_behind(hub.run_until_done())
    finally:
        broker.drain_warnings()
        stop_p0(rt)


def start_implicit(nprocs: int) -> Hub:
    """Start the Ps of the implicit runtime; they stop when its hub finishes."""
    rt, hub, broker = start_p0(nprocs)

    def stop() -> None:
        broker.drain_warnings()
        stop_p0(rt)

    hub.hooks_on_stop.append(stop)
    return hub


def num_goroutine(hub: Hub) -> int:
    """Live goroutines of every P."""
    broker: Any = hub.broker  # the _mp Broker, more than the hub's Protocol says
    return broker.num_goroutine(hub) if broker is not None else hub.num_goroutine()


def stack(hub: Hub) -> str:
    """Every goroutine of every P."""
    broker: Any = hub.broker
    if broker is None:
        return hub.stack_text()
    return broker.gather_stacks(hub, 1.0)


def gomaxprocs(hub: Hub, n: int) -> int:
    """Return GOMAXPROCS; ``n > 0`` sets it: Ps are started up to ``n`` (from P0), and Ps at or
    above ``n`` drain: they finish their goroutines but take no new work."""
    ctx = C.current()
    if ctx is None:
        prev = hub.nprocs
        if n > 0:
            hub.nprocs = n
        return prev
    prev = ctx.gload(C.G_LOGICAL)
    if n <= 0 or n == prev:
        return prev
    if n > ctx.gload(C.G_NPROCS):
        rt = running()
        if rt is None:
            raise RuntimeError("runtime.gomaxprocs: only goroutines on P0 can add Ps")
        rt.grow(n)
    for q in range(1, ctx.gload(C.G_NPROCS)):
        ctx.store(ctx.pidx(q, C.P_DRAIN), 1 if q >= n else 0)
    ctx.gstore(C.G_LOGICAL, n)
    hub.nprocs = n
    return prev


__all__ = ["run_multi", "start_implicit", "num_goroutine", "stack", "gomaxprocs", "metrics"]
