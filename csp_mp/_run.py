"""L6: ``run()``, ``go()``, ``go_local()``, ``blocking()``, ``shutdown()`` and the implicit runtime.

The implicit runtime starts on first use outside ``run()``: the calling thread's code becomes the
main goroutine, and the runtime stops at interpreter exit or at ``shutdown()``.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from . import _hub, _tb
from ._errors import DeadlockError, Panic
from ._hub import Hub, Outcome
from ._proc import proc
from ._shm import native

R = TypeVar("R")


def resolve_procs(procs: int | None) -> int:
    """``procs``, else ``GOMAXPROCS``, else the usable CPUs; ValueError when not >= 1."""
    if procs is None:
        env = os.environ.get("GOMAXPROCS", "").strip()
        if env:
            try:
                procs = int(env)
            except ValueError:
                raise ValueError(f"GOMAXPROCS={env!r} is not an integer") from None
        else:
            procs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1)
    if isinstance(procs, bool) or not isinstance(procs, int):
        raise TypeError(f"procs must be an int, not {type(procs).__name__}")
    if procs < 1:
        raise ValueError(f"procs must be >= 1, got {procs}")
    return procs


def _outcome_result(out: Outcome) -> Any:
    __tracebackhide__ = not _tb.debug()  # pytest leaves it out, the excepthook (_tb) others
    if out.kind == "return":
        return out.value
    if out.error is not None:
        _tb.trim(out.error)  # the user's frames only, unless CSP_MP_DEBUG=1
        raise out.error
    if out.kind == "deadlock":
        raise DeadlockError()
    raise Panic(f"runtime stopped: {out.kind}")


def run(main: Callable[..., R], *args: Any, procs: int | None = None,
        cluster: str | None = None, **kwargs: Any) -> R:
    """Run ``main(*args, **kwargs)`` as the main goroutine on ``procs`` Ps; return its result.

    When ``main`` returns, every other goroutine and P is stopped. A panic in any goroutine
    raises ``Panic``; a deadlock raises ``DeadlockError``. ``cluster`` (or ``CSP_MP_CLUSTER``):
    ``"ray"`` or a Ray address runs the program on every node of that Ray cluster, ``procs``
    Ps on each (docs/cluster.md); ``""`` runs it here whatever the environment says.
    """
    __tracebackhide__ = not _tb.debug()
    if not callable(main):
        raise TypeError(f"run() needs a callable, got {type(main).__name__}")
    if cluster is None:
        cluster = os.environ.get("CSP_MP_CLUSTER")
    if cluster:
        if proc.run_cluster is None:
            raise RuntimeError("csp_mp.run(cluster=...): the cluster layer is not loaded")
        return proc.run_cluster(main, args, kwargs, cluster, procs)
    n = resolve_procs(procs)
    _tb.install_excepthook()
    from ._shm import native

    native.enabled()  # CSP_MP_NATIVE=1 without the compiled core: RuntimeError before anything
    hub = _hub.peek()
    if hub is not None:
        if hub is proc.implicit and hub.current is hub.main_g:
            shutdown()
        else:
            raise RuntimeError("csp_mp.run() called while a runtime is running")
    if os.environ.get("CSP_MP_TRACE"):
        main = _traced_main(main)
    if n > 1:
        from . import _mp

        return _outcome_result(_mp.run_multi(main, args, kwargs, n))
    hub = _hub.new_hub(0)
    hub.nprocs = n
    _hub.set_current(hub)
    try:
        g = hub.spawn(main, args, kwargs, local=True)
        assert g is not None  # a local spawn on a fresh hub always makes a G
        g.is_main = True
        g.name = "main"
        hub.main_g = g
        out = hub.run_until_done()
    finally:
        proc.stop()
    return _outcome_result(out)


def _traced_main(main: Callable[..., R]) -> Callable[..., R]:
    """``main`` traced into ``CSP_MP_TRACE`` from its start to its return."""
    from ._mp import tracing

    def traced(*args: Any, **kwargs: Any) -> R:
        tracing.start(os.environ["CSP_MP_TRACE"])
        try:
            return main(*args, **kwargs)
        finally:
            tracing.stop()

    return traced


def _publish_main_spawns(hub: Hub) -> None:
    """Make every ``go()`` of the script's own code stealable at once: its thread may next wait
    where nothing can take it for the hub (a prompt, a socket read), and the goroutines it
    queued would wait with it. Goroutines' own ``go()`` calls batch as usual."""
    place, broker, main = hub.placer, hub.broker, hub.main_g

    def implicit_go(fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        place(fn, args, kwargs)
        if hub.current is main:
            broker.flush_spawns()  # type: ignore[union-attr]

    hub.set_placer(implicit_go)


def _start_implicit(procs: int | None = None) -> Hub:
    n = resolve_procs(procs)
    _tb.install_excepthook()  # a deadlock or Ctrl-C met in plain code shows the user's frames
    from ._shm import native

    native.enabled()  # CSP_MP_NATIVE=1 without the compiled core: RuntimeError before anything
    if n > 1:
        from . import _mp

        hub = _mp.start_implicit(n)
    else:
        hub = _hub.new_hub(0)
        hub.nprocs = 1
    hub.adopt_root_as_main()
    if n > 1:
        _publish_main_spawns(hub)

    def forget() -> None:
        if proc.hub is hub or proc.implicit is hub:
            proc.stop()

    hub.hooks_on_stop.append(forget)
    proc.implicit = hub
    _hub.set_current(hub)
    # sysmon from the start, not from the hub loop's first pass: a script that calls go() and
    # then waits in plain code (time.sleep, a future's result()) never enters the loop, and
    # only sysmon can take the thread for the goroutines meanwhile (_hub/drive.py)
    from ._hub.sysmon import start_sysmon

    start_sysmon(hub)
    if not proc.exit_hook:
        atexit.register(shutdown)
        proc.exit_hook = True
    if os.environ.get("CSP_MP_TRACE"):
        from ._mp import tracing

        tracing.start(os.environ["CSP_MP_TRACE"])
    return hub


_hub.set_default_factory(_start_implicit)


def ensure_runtime(procs: int | None = None) -> Hub:
    """This process's hub; starts the implicit runtime with ``procs`` Ps when none runs."""
    hub = _hub.peek()
    return hub if hub is not None else _start_implicit(procs)


def shutdown() -> None:
    """Stop the implicit runtime: every goroutine but the caller is stopped. Idempotent."""
    hub = proc.implicit
    if hub is None:
        return
    if hub.current is not hub.main_g:
        raise RuntimeError("csp_mp.shutdown() must be called from the main goroutine")
    try:
        if proc.stop_trace is not None:  # a trace still running: written while Ps live
            proc.stop_trace()
        hub.request_stop()
    finally:
        if proc.hub is hub or proc.implicit is hub:
            proc.stop()


def go(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Start ``fn(*args, **kwargs)`` in a new goroutine, on any P (it may migrate)."""
    if not callable(fn):
        raise TypeError(f"go() needs a callable, got {type(fn).__name__}")
    (proc.hub or _hub.current_hub()).go(fn, args, kwargs)


def _compiled_go(slow: Callable[..., None]) -> Callable[..., None]:
    """``go`` as the compiled core's ``GoEntry`` when it is built, else ``slow``: the common call
    (the callable last given, no keyword arguments) is then framed by the hub's Spawner without
    a Python frame of its own; every other call is ``slow``, the function above, which stays
    the specification."""
    if not native.built():
        return slow
    entry = native.core().GoEntry(slow)
    functools.update_wrapper(entry, slow)  # its name, doc, module, and signature (__wrapped__)
    proc.go_entry = entry
    hub = proc.hub
    if hub is not None:  # (a runtime running in this process already: none at import)
        hub.aim_go_entry()
    return entry


go = _compiled_go(go)


def go_local(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Start ``fn(*args, **kwargs)`` in a new goroutine pinned to the current P."""
    if not callable(fn):
        raise TypeError(f"go_local() needs a callable, got {type(fn).__name__}")
    (proc.hub or _hub.current_hub()).spawn_local(fn, args, kwargs)


def blocking(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a call that blocks in the OS on one of the P's M threads; only the caller waits."""
    if not callable(fn):
        raise TypeError(f"blocking() needs a callable, got {type(fn).__name__}")
    return _hub.current_hub().blocking(fn, args, kwargs)
