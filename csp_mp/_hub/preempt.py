"""Time-slice preemption: the signal handler that switches a hogging goroutine out at a safe
point (safepoint.py), and the handler's installation.

Sysmon (sysmon.py) decides *when*: the same goroutine has run a whole slice without a switch
while other work waits, or a quarter of one while a timer is due (the kernel's CPU-time signal,
slicer.py, applies the same rule without waiting for the GIL). It records a request and trips
``SIGNUM`` in the main thread with ``_thread.interrupt_main``, which sets CPython's
pending-signal flag without sending an OS signal, so no system call of the hub thread is ever
interrupted (no EINTR reaches foreign C code). CPython runs the Python handler on the main
thread at its next check point; the handler decides *whether*: it yields the P (the goroutine
goes to the back of the run queue, as ``gosched``) only when the hub greenlet is not the
current greenlet, the current greenlet is the goroutine the request named, the runtime is not
stopping, ``hub.no_preempt`` is 0, and ``safepoint.safe_point`` finds the interrupted frames
safe. The same handler serves drive.py (a real ``SIGNUM`` from sysmon's ``drive.kick``).

A request that meets no safe point because the handler runs just after a C call returned (or
inside one: the two cannot be told apart) is looked at again at the interrupted code's next
check point (``_rearm``), a few times per request; one refused by the frames (a ``with`` body,
runtime code) is kept, and renewed at the next request (sysmon's tick, the CPU clock's look).

``start_recording`` (benchmarks, debugging) records every request, refusal and switch with its
wall and CPU time until ``stop_recording``; off, each place that records costs one test.

Limits: Python handlers run only in the main thread, so a hub on another thread is not
preempted. Nothing is preempted inside one long C call (``sum(range(10**9))``, a regex, a NumPy
operation): the handler runs only when the call returns.

Design notes (rejected): ``signal.setitimer`` with ``ITIMER_REAL`` ticks whether or not the
goroutine yields and takes SIGALRM from the user (slicer.py uses ``ITIMER_VIRTUAL``, which ticks
only while the process uses the CPU, and only when the program leaves ``SIGVTALRM`` alone);
``pthread_kill`` with a real signal interrupts blocking system calls of foreign code; tracing
(``sys.settrace``) to find the next line costs every bytecode and fights debuggers and coverage.
"""

from __future__ import annotations

import _thread
import functools
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from greenlet import getcurrent

from .._proc import proc
from . import drive
from .safepoint import RETRY, SAFE, safe_point

SIGNUM = signal.SIGURG  # default action: ignore; also Go's choice

# ----------------------------------------------------------------- the handler, per process
# What install changed, for uninstall to put back, is the runtime object's preempt_handler.

def start_recording() -> list:
    """Turn the debug recorder on: the list returned receives ``(monotonic time, process CPU
    time, event, ...)`` tuples for each request, refusal and switch until ``stop_recording``."""
    proc.preempt_handler.recorder = []
    return proc.preempt_handler.recorder


def stop_recording() -> list:
    """Turn the debug recorder off; return what it recorded."""
    got, proc.preempt_handler.recorder = proc.preempt_handler.recorder, None
    return got if got is not None else []


def recording() -> bool:
    """Whether the debug recorder is on."""
    return proc.preempt_handler.recorder is not None


def note(*event: Any) -> None:
    """Record ``event`` with the times, when the recorder is on."""
    rec = proc.preempt_handler.recorder
    if rec is not None:
        rec.append((time.monotonic(), time.process_time(), *event))


def _handler(signum: int, frame: FrameType | None) -> None:
    inst = proc.preempt_handler
    chain = inst.chain
    if chain is not None:
        chain(signum, frame)
    hub = inst.hub
    if hub is not None:
        sm = hub.sysmon
        if sm is not None and sm.request is not None:
            _maybe_preempt(hub, sm, frame)
        if proc.driving.kicked:
            drive.drive(hub, frame)


def _maybe_preempt(hub: Any, sm: Any, frame: FrameType | None) -> None:
    req = sm.request  # once: sysmon's thread may clear it between our check and here
    inst = proc.preempt_handler
    if inst.recorder is not None:
        note("handler", req, inst.deciding)
    if req is None or inst.deciding:  # a preemption check is running (a trip inside it)
        # a trip landing inside the check (Python runs handlers at check points inside a
        # handler too): when deciding takes longer than a trip's period (the first look at a
        # large function on a slow machine), each trip nested one level deeper until the C
        # stack overflowed; the running check decides for both
        return
    tick, g = req
    if hub.tick != tick or hub.current is not g or hub.stopping:
        sm.request = None  # stale: it switched meanwhile
        if proc.preempt_handler.recorder is not None:
            note("stale")
        return
    glet = g.glet
    if glet is None or getcurrent() is not glet or hub.no_preempt:
        sm.declined += 1
        if proc.preempt_handler.recorder is not None:
            note("refused", "no_preempt" if hub.no_preempt else "not the goroutine")
        return
    inst.deciding = True
    try:
        verdict = safe_point(frame, None if glet is hub.root else sm.base_code)
    finally:
        inst.deciding = False
    if verdict == SAFE:
        sm.request = None
        sm.preempted += 1
        hub.poll_now = True
        if proc.preempt_handler.recorder is not None:
            note("switch")
        hub.gosched(preempted=True)
        if proc.preempt_handler.recorder is not None:
            note("resumed")
        return
    sm.declined += 1
    if proc.preempt_handler.recorder is not None:
        note("refused", verdict, frame.f_code.co_name if frame else None,
             frame.f_lasti if frame else None)
    if verdict == RETRY and sm.retries < RETRIES and _rearm is not None:
        # not at a check point (just after a C call, or inside one): look again at the next
        # one rather than at the next request; the last call of the handler (see _rearm)
        sm.retries += 1
        _rearm()


RETRIES = 8  # looks at the next check point per request, after one that was not a safe point


def _make_rearm() -> Callable[[], object] | None:
    """A call that trips ``SIGNUM`` once the current check point's handlers have run, so that
    the handler runs again at the interrupted code's *next* check point; None where CPython's
    API cannot be reached.

    ``trip()`` from the handler would not do: the trip is seen at the check point that ends the
    trip's own call, still inside the handler, whose frames are no safe point. A pending call
    (``Py_AddPendingCall``) of ``PyErr_SetInterruptEx(SIGNUM)`` runs at that same check point,
    but after its signal handlers: the trip it makes waits for the next check point, which is
    in the interrupted code once the handler returns without another call.
    """
    try:
        import ctypes

        api = ctypes.pythonapi
        add = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
            ("Py_AddPendingCall", api))
        fn = ctypes.cast(api.PyErr_SetInterruptEx, ctypes.c_void_p).value
    except (ImportError, AttributeError, OSError):
        return None
    return functools.partial(add, fn, int(SIGNUM))


_rearm = _make_rearm()


def install(hub: Any) -> bool:
    """Route ``SIGNUM`` to the preemption handler for ``hub``; False when that is impossible
    (not the main thread). A Python handler already installed is chained, not replaced."""
    if not hub.owns_main_thread():
        return False
    inst = proc.preempt_handler
    current = signal.getsignal(SIGNUM)
    if current is not _handler:
        try:
            signal.signal(SIGNUM, _handler)
            # no SA_RESTART: drive.py's signal must end an untimed lock wait (a restarted
            # futex wait would never see it). Nothing else sends SIGNUM as a real signal:
            # preemption requests set a flag, and drive.py signals only a thread it found in
            # a known wait, so a C call blocked in a system call sees no EINTR from us
            signal.siginterrupt(SIGNUM, True)
        except (ValueError, OSError):
            return False
        inst.saved = current
        inst.chain = current if callable(current) else None
    inst.hub = hub
    return True


def uninstall(hub: Any) -> None:
    """Undo ``install`` for ``hub``; a handler the user set since is left alone."""
    inst = proc.preempt_handler
    if inst.hub is not hub:
        return
    inst.hub = None
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(SIGNUM) is _handler:
        saved = inst.saved
        signal.signal(SIGNUM, saved if saved is not None else signal.SIG_DFL)
    inst.saved = inst.chain = None


def trip() -> None:
    """Ask the main thread to run the handler at its next check point (any thread)."""
    _thread.interrupt_main(SIGNUM)
