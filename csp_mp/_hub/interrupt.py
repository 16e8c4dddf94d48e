"""Ctrl-C while a hub runs: ``KeyboardInterrupt`` in user code, never in the middle of the runtime.

Python's default SIGINT handler raises ``KeyboardInterrupt`` at whatever bytecode the main thread
is running. Inside the runtime that can be between two statements that must go together: a
shared channel's lock taken and not yet released (every P, P0 included, then waits for it
forever), a goroutine queued and not yet switched to. While a hub loop runs on the main thread
with Python's default handler in place, this module's handler replaces it:

- interrupted in user code with no runtime frame below it down to the goroutine's body call
  (see ``register_body_call``; a C function run as a goroutine has no frame of its own, so its
  caller's body-call line stands for it): it raises ``KeyboardInterrupt`` there, as Python
  would, so a goroutine blocked in a C call (``time.sleep``) is interrupted at once;
- interrupted in the runtime's own code: it records the interrupt on the hub and posts it
  ``Hub.interrupted``, which ends the run with ``KeyboardInterrupt`` at the hub's next pass (the
  goroutine parks, or the hub idles).
  Meanwhile the user frame the runtime call will return to is trapped: it raises
  ``KeyboardInterrupt`` at its next line (``f_trace``, as a debugger's breakpoint), so a goroutine
  that never parks gets it as soon as it is back in its own code, however little time it spends
  there. Where no such frame exists, or a trace function is already installed, a helper thread
  re-trips the handler every ``RETRY_S`` (``_thread.interrupt_main``) until one lands in user
  code.

Once the hub is stopping, a further Ctrl-C raises at once wherever it lands (the way out of a
shutdown that does not end). The handler the user installed themselves is never replaced.

The installation, the trapped frame and the re-tripping thread are the runtime object's
``sigint_handler`` (``_proc.py``): a forked child starts with none of them.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from .._proc import proc
from .safepoint import RUNTIME, _body_calls, code_kind, register_body_call

__all__ = ["RETRY_S", "install", "register_body_call", "uninstall"]

RETRY_S = 0.002  # how often a deferred Ctrl-C is offered to the main thread again


def _in_user_code(frame: FrameType | None) -> bool:
    """True unless a runtime frame, other than a wrapper on its body-call line, is on the stack
    (innermost first): user code that runtime code called back (a trace function, a
    ``__reduce__``) still has the runtime mid-update below it."""
    f = frame
    while f is not None:
        code = f.f_code
        lines = _body_calls.get(code)
        if lines is not None:
            return f.f_lineno in lines
        if code_kind(code, f.f_globals.get("__name__")) == RUNTIME:
            return False
        f = f.f_back  # user code or the standard library: whoever called it decides
    return True


def _return_point(frame: FrameType | None) -> FrameType | None:
    """The user frame the runtime call interrupted at ``frame`` returns to (the caller of the
    outermost runtime frame above the goroutine's base), or None when there is none: runtime
    code all the way down (the hub's own loop)."""
    target = None
    in_runtime = False
    f = frame
    while f is not None:
        code = f.f_code
        lines = _body_calls.get(code)
        if lines is not None and f.f_lineno in lines:
            break  # the goroutine's base: the wrapper calling the user's callable
        if lines is not None or code_kind(code, f.f_globals.get("__name__")) == RUNTIME:
            in_runtime = True
        elif in_runtime:
            target, in_runtime = f, False
        f = f.f_back
    return None if in_runtime else target


def _arm_trap(frame: FrameType | None) -> None:
    """Make the user frame the interrupted runtime call returns to raise KeyboardInterrupt at
    its next line (as a debugger's breakpoint does: ``f_trace`` on that frame, tracing turned
    on for this thread). Left to the re-trips when a trace function is already installed."""
    inst = proc.sigint_handler
    if inst.trapped is not None or sys.gettrace() is not None:
        return
    target = _return_point(frame)
    if target is None:
        return
    inst.trapped = target
    target.f_trace = _trap
    target.f_trace_lines = True
    sys.settrace(_no_call_trace)


def _disarm_trap() -> None:
    inst = proc.sigint_handler
    target = inst.trapped
    if target is None:
        return
    inst.trapped = None
    target.f_trace = None
    if sys.gettrace() is _no_call_trace:
        sys.settrace(None)


def _no_call_trace(frame: FrameType, event: str, arg: Any) -> None:
    """The thread's trace function while a trap is armed: traces no new frame."""
    return None


def _trap(frame: FrameType, event: str, arg: Any) -> Any:
    """``f_trace`` of the trapped frame: control is back in user code, the runtime call done."""
    inst = proc.sigint_handler
    if frame is not inst.trapped:
        return None
    _disarm_trap()
    hub = inst.hub
    if event in ("line", "return") and hub is not None and hub.interrupt_pending \
            and not hub.stopping:
        hub.interrupt_pending = False
        raise KeyboardInterrupt
    return None


def _handler(signum: int, frame: FrameType | None) -> None:
    inst = proc.sigint_handler
    if inst.handling:
        # A re-trip (or a second Ctrl-C) landed while this handler decides: Python runs handlers
        # at check points inside handlers too, and every 2 ms re-trip nested one more level
        # until the stack overflowed. The running call decides for both.
        return
    inst.handling = True
    try:
        _decide(frame)
    finally:
        inst.handling = False


def _decide(frame: FrameType | None) -> None:
    inst = proc.sigint_handler
    hub = inst.hub
    if hub is None or hub.stopping or _in_user_code(frame):
        if hub is not None:
            hub.interrupt_pending = False
        _disarm_trap()
        raise KeyboardInterrupt
    hub.interrupt_pending = True
    hub.post(hub.interrupted)
    _arm_trap(frame)
    r = inst.retrier
    if r is None or not r.is_alive():
        r = inst.retrier = threading.Thread(target=_retry, args=(hub,), daemon=True,
                                             name="csp_mp-sigint")
        r.start()


def _retry(hub: Any) -> None:
    while True:
        time.sleep(RETRY_S)
        if not hub.interrupt_pending or hub.stopping or proc.sigint_handler.hub is not hub:
            return
        _thread.interrupt_main(signal.SIGINT)


def install(hub: Any) -> bool:
    """Route SIGINT to the deferring handler while ``hub`` runs; False (nothing changed) off the
    main thread or when SIGINT is not Python's default handler."""
    if not hub.owns_main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    try:
        signal.signal(signal.SIGINT, _handler)
    except (ValueError, OSError):
        return False
    proc.sigint_handler.hub = hub
    return True


def uninstall(hub: Any) -> None:
    """Put Python's default handler back (unless the user has set another since)."""
    inst = proc.sigint_handler
    if inst.hub is not hub:
        return
    inst.hub = None
    hub.interrupt_pending = False
    _disarm_trap()
    r = inst.retrier
    inst.retrier = None
    if r is not None and r is not threading.current_thread():
        r.join()  # it sees inst.hub changed within RETRY_S; no trip after this
    if signal.getsignal(signal.SIGINT) is _handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
