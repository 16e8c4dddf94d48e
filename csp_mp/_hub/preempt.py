"""Time-slice preemption: the signal handler that switches a hogging goroutine out at a safe
point (safepoint.py), and the handler's installation.

Sysmon (sysmon.py) decides *when*: the same goroutine has run a whole slice without a switch (the
kernel's CPU-time signal, slicer.py, applies the same rule without waiting for the GIL). It
records a request and trips ``SIGNUM`` in the main thread with ``_thread.interrupt_main``, which
sets CPython's pending-signal flag without sending an OS signal, so no system call of the hub
thread is ever interrupted (no EINTR reaches foreign C code). CPython runs the Python handler on
the main thread at its next check point; the handler decides *whether*: it yields the P (the
goroutine goes to the back of the run queue, as ``gosched``) only when the hub greenlet is not
the current greenlet, the current greenlet is the goroutine the request named, the runtime is
not stopping, ``hub.no_preempt`` is 0, and ``safepoint.safe_point`` finds the interrupted
frames safe. The same handler serves drive.py (a real ``SIGNUM`` from sysmon's ``drive.kick``).

A request that meets no safe point is kept; sysmon renews it at its next tick (every
``period``). Re-tripping from the handler itself is useless: the call's own signal check, still
inside the handler, would consume it.

Limits: Python handlers run only in the main thread, so a hub on another thread is not
preempted. Nothing is preempted inside one long C call (``sum(range(10**9))``, a regex, a NumPy
operation): the handler runs only when the call returns. A loop that spends nearly all its time
in C calls that release the GIL (printing, I/O) is preempted late or not at all: sysmon can only
run while the GIL is free, so its trip lands just after such a call, never at a safe point.

Design notes (rejected): ``signal.setitimer`` with ``ITIMER_REAL`` ticks whether or not the
goroutine yields and takes SIGALRM from the user (slicer.py uses ``ITIMER_VIRTUAL``, which ticks
only while the process uses the CPU, and only when the program leaves ``SIGVTALRM`` alone);
``pthread_kill`` with a real signal interrupts blocking system calls of foreign code; tracing
(``sys.settrace``) to find the next line costs every bytecode and fights debuggers and coverage.
"""

from __future__ import annotations

import _thread
import signal
import threading
from types import FrameType
from typing import Any

from greenlet import getcurrent

from .._proc import proc
from . import drive
from .safepoint import SAFE, safe_point

SIGNUM = signal.SIGURG  # default action: ignore; also Go's choice

# ----------------------------------------------------------------- the handler, per process
# What install changed, for uninstall to put back, is the runtime object's preempt_handler.


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
    if req is None or inst.deciding:  # a preemption check is running (a trip inside it)
        # a trip landing inside the check (Python runs handlers at check points inside a
        # handler too): when deciding takes longer than a trip's period (the first look at a
        # large function on a slow machine), each trip nested one level deeper until the C
        # stack overflowed; the running check decides for both
        return
    tick, g = req
    if hub.tick != tick or hub.current is not g or hub.stopping:
        sm.request = None  # stale: it switched meanwhile
        return
    glet = g.glet
    if glet is None or getcurrent() is not glet or hub.no_preempt:
        sm.declined += 1
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
        hub.gosched(preempted=True)
    else:
        sm.declined += 1


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
            # futex wait would never see it); nothing else sends SIGNUM as a real signal
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
