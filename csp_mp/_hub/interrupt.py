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
- interrupted in the runtime's own code: it records the interrupt on the hub and wakes it. The hub
  ends the run with ``KeyboardInterrupt`` at its next pass (the goroutine parks, or the hub idles),
  and a helper thread re-trips the handler every ``RETRY_S`` (``_thread.interrupt_main``) so that a
  goroutine that never parks still gets it as soon as it runs user code.

Once the hub is stopping, a further Ctrl-C raises at once wherever it lands (the way out of a
shutdown that does not end). The handler the user installed themselves is never replaced.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time
from types import FrameType
from typing import Any

from csp_mp._hub.preempt import RUNTIME, _body_calls, _code_info, register_body_call

__all__ = ["RETRY_S", "install", "register_body_call", "uninstall"]

RETRY_S = 0.002  # how often a deferred Ctrl-C is offered to the main thread again


class _Installed:
    hub: Any = None
    retrier: threading.Thread | None = None


_inst = _Installed()


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
        if _code_info(code, f.f_globals.get("__name__"))[0] == RUNTIME:
            return False
        f = f.f_back  # user code or the standard library: whoever called it decides
    return True


def _handler(signum: int, frame: FrameType | None) -> None:
    hub = _inst.hub
    if hub is None or hub.stopping or _in_user_code(frame):
        if hub is not None:
            hub.interrupt_pending = False
        raise KeyboardInterrupt
    hub.interrupt_pending = True
    hub.poll_now = True
    hub.waker.post()
    r = _inst.retrier
    if r is None or not r.is_alive():
        r = _inst.retrier = threading.Thread(target=_retry, args=(hub,), daemon=True,
                                             name="csp_mp-sigint")
        r.start()


def _retry(hub: Any) -> None:
    while True:
        time.sleep(RETRY_S)
        if not hub.interrupt_pending or hub.stopping or _inst.hub is not hub:
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
    _inst.hub = hub
    return True


def uninstall(hub: Any) -> None:
    """Put Python's default handler back (unless the user has set another since)."""
    if _inst.hub is not hub:
        return
    _inst.hub = None
    hub.interrupt_pending = False
    r = _inst.retrier
    _inst.retrier = None
    if r is not None and r is not threading.current_thread():
        r.join()  # it sees _inst.hub changed within RETRY_S; no trip after this
    if signal.getsignal(signal.SIGINT) is _handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
