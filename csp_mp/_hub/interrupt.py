"""Ctrl-C while a hub runs: ``KeyboardInterrupt`` in user code, never in the middle of the runtime.

Python's default SIGINT handler raises ``KeyboardInterrupt`` at whatever bytecode the main thread
is running. Inside the runtime that can be between two statements that must go together: a
shared channel's lock taken and not yet released (every P, P0 included, then waits for it
forever), a goroutine queued and not yet switched to. While a hub loop runs on the main thread
with Python's default handler in place, this module's handler replaces it:

- interrupted in user code (the nearest frame that is not the standard library's is not
  csp_mp's), or while the goroutine body itself is being called: it raises
  ``KeyboardInterrupt`` there, as Python would, so a goroutine blocked in a C call
  (``time.sleep``) is interrupted at once;
- interrupted in the runtime's own code: it records the interrupt on the hub and wakes it. The hub
  ends the run with ``KeyboardInterrupt`` at its next pass (the goroutine parks, or the hub idles),
  and a helper thread re-trips the handler every ``RETRY_S`` (``_thread.interrupt_main``) so that a
  goroutine that never parks still gets it as soon as it runs user code.

Once the hub is stopping, a further Ctrl-C raises at once wherever it lands (the way out of a
shutdown that does not end). The handler the user installed themselves is never replaced.
"""

from __future__ import annotations

import _thread
import dis
import signal
import threading
import time
from types import FrameType
from typing import Any

from csp_mp._hub.preempt import RUNTIME, USER, _code_info

__all__ = ["RETRY_S", "install", "uninstall"]

RETRY_S = 0.002  # how often a deferred Ctrl-C is offered to the main thread again


class _Installed:
    hub: Any = None
    retrier: threading.Thread | None = None


_inst = _Installed()
_body_code: Any = None  # Hub._worker's code and the line where it calls the goroutine body
_body_line = -1


def _find_body_call(worker: Any) -> None:
    global _body_code, _body_line
    code = worker.__code__
    for ins in dis.get_instructions(code):
        if ins.opname == "CALL_FUNCTION_EX":
            _body_code, _body_line = code, ins.positions.lineno
            return


def _in_user_code(frame: FrameType | None) -> bool:
    f = frame
    while f is not None:
        code = f.f_code
        if code is _body_code:
            return f.f_lineno == _body_line
        kind = _code_info(code, f.f_globals.get("__name__"))[0]
        if kind == RUNTIME:
            return False
        if kind == USER:
            return True
        f = f.f_back  # the standard library: whoever called it decides
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
    if threading.current_thread() is not threading.main_thread():
        return False
    if threading.get_ident() != hub.thread_id:
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    if _body_code is None:
        _find_body_call(type(hub)._worker)
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
