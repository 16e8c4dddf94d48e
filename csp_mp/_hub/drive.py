"""Driving P0 while the implicit main goroutine waits in plain code.

The implicit runtime's main goroutine is the user's own thread (a script, a notebook). When
that thread blocks outside csp_mp (``future.result()`` of ``concurrent.futures``,
``concurrent.futures.wait``, an asyncio event loop waiting for a wrapped future), the hub, a
greenlet of the same thread, cannot run: the P's goroutines would wait until the thread next
enters csp_mp, and with one P nothing would ever run.

Sysmon notices it: the main goroutine has not switched for a time slice, its thread's innermost
frame is one of the *known waits* below, and the P has work. It then sends ``preempt.SIGNUM`` to
the thread as a real signal (``pthread_kill``). The wait's system call fails with EINTR (a
semaphore wait or ``epoll_wait`` is never restarted), CPython runs the Python handler, and the
handler parks the main goroutine with wait reason ``PLAIN_WAIT`` (``drive``): the hub runs
goroutines on the thread as usual. It hands the thread back (``Hub.release_driven``) when it has
nothing to run, when the awaited lock is released, or after ``HOLD`` seconds; the handler then
returns and CPython retries the wait.

Known waits, and why a switch there is safe: ``threading.Condition.wait`` on its waiter lock
(after ``_release_save``: the condition's own lock is not held; every wait of
``concurrent.futures`` and ``threading.Event`` ends there), a selector's ``select`` call (an
event loop waiting for I/O holds no lock), ``Thread.join`` waiting on the thread's state lock,
and ``time.sleep`` called as ``time.sleep(x)`` or ``sleep(x)`` with a simple argument (the
sleep holds nothing; its callers' frames pass preemption's ``safe_point`` rules, so no
``with lock:`` or ``try``/``finally`` body encloses it). Elsewhere (a socket read, other C code)
the thread is left alone: its code might hold a lock a goroutine needs.

Invariants:
- ``hub.driven`` is set only by ``drive`` on the hub's thread, and cleared only by
  ``Hub.release_driven`` (owner thread); while set, the main goroutine is parked (PLAIN_WAIT).
- ``proc.driving.kicked`` is set by sysmon before it signals, and cleared by the handler.
- Sysmon only reads hub state here, and asks for a release through ``hub.post``.

Design notes (rejected): running P0's hub loop on another thread while the main thread waits
(greenlets cannot move between threads, and the implicit main goroutine is the root greenlet of
the user's thread); ``_thread.interrupt_main`` as preemption uses (it sets a flag but does not
interrupt a blocked wait); releasing the thread at every completed task (a ``wait()`` for all
of them would then wake, find it not done and sleep again for a slice per task).
"""

from __future__ import annotations

import dis
import linecache
import selectors
import signal
import threading
import time
from types import CodeType, FrameType
from typing import Any

from greenlet import getcurrent

from .._errors import GoroutineExit, ProcessLost
from .._proc import proc
from . import waits
from .safepoint import UNSAFE, safe_point

HOLD = 0.050  # longest stretch the hub keeps the thread while its own wait may be done


def _source_lines(fn: Any) -> tuple[list[str], int]:
    """``fn``'s source lines and the number of the first, as ``inspect.getsourcelines`` gives
    them for a function, found from its code's line numbers: no tokenizer (whose patterns take
    milliseconds to compile) runs as the hub layer loads."""
    code = getattr(fn, "__code__", None)
    if code is None:
        raise TypeError(f"{fn!r} has no code")
    first = code.co_firstlineno
    last = max((n for _start, _end, n in code.co_lines() if n is not None), default=0)
    lines = linecache.getlines(code.co_filename)
    if last < first or len(lines) < last:
        raise OSError(f"no source for {code.co_qualname}")
    return lines[first - 1:last], first


def _condition_wait_lines() -> frozenset[int]:
    """Lines of ``Condition.wait`` that wait on the waiter lock with the condition released."""
    try:
        lines, first = _source_lines(threading.Condition.wait)
    except (OSError, TypeError):
        return frozenset()
    out = set()
    released = False
    for i, text in enumerate(lines):
        if "_release_save" in text:
            released = True
        elif released and "waiter.acquire(" in text:
            out.add(first + i)
    return frozenset(out)


def _selector_codes() -> dict[CodeType, frozenset[int]]:
    out: dict[CodeType, frozenset[int]] = {}
    for name in ("SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector",
                 "KqueueSelector"):
        cls = getattr(selectors, name, None)
        fn = getattr(cls, "select", None) if cls is not None else None
        if fn is None:
            continue
        try:
            lines, first = _source_lines(fn)
        except (OSError, TypeError):
            continue
        calls = frozenset(first + i for i, t in enumerate(lines)
                          if "self._selector." in t or "_select(" in t)
        if calls:
            out[fn.__code__] = calls
    return out


def _join_codes() -> dict[CodeType, frozenset[int]]:
    """``Thread.join``'s wait on the thread's state lock (it holds no other lock)."""
    fn = getattr(threading.Thread, "_wait_for_tstate_lock", None)
    if fn is None:
        return {}
    try:
        lines, first = _source_lines(fn)
    except (OSError, TypeError):
        return {}
    calls = frozenset(first + i for i, t in enumerate(lines) if "lock.acquire(" in t)
    return {fn.__code__: calls} if calls else {}


_COND_CODE = threading.Condition.wait.__code__
_COND_LINES = _condition_wait_lines()
_SELECT_CODES = {**_selector_codes(), **_join_codes()}
_SIMPLE_LOADS = frozenset({"LOAD_CONST", "LOAD_FAST", "LOAD_NAME", "LOAD_GLOBAL", "LOAD_DEREF"})
#: code object -> {offset of a (PRE)CALL of ``time.sleep``-looking code: (how, name)}; how is
#: "attr" (``name.sleep(x)``, name a module) or "bare" (``name(x)``, name the function)
_sleep_calls: dict[CodeType, dict[int, tuple[str, str]]] = {}
_SLEEP_CACHE_MAX = 4096


def _find_sleep_calls(code: CodeType) -> dict[int, tuple[str, str]]:
    """The CALLs in ``code`` whose callable is loaded as ``<name>.sleep`` or ``<name>`` with
    one simple argument (a constant or a variable), the way ``time.sleep(x)`` compiles."""
    ins = list(dis.get_instructions(code))
    out: dict[int, tuple[str, str]] = {}
    for k, i in enumerate(ins):
        if i.opname != "CALL" or i.arg != 1 or k < 3 or ins[k - 1].opname != "PRECALL":
            continue
        arg, fn = ins[k - 2], ins[k - 3]
        if arg.opname not in _SIMPLE_LOADS:
            continue
        if fn.opname in ("LOAD_METHOD", "LOAD_ATTR") and fn.argval == "sleep" and k >= 4 \
                and ins[k - 4].opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            what = ("attr", ins[k - 4].argval)
        elif fn.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            what = ("bare", fn.argval)
        else:
            continue
        # a specialized PRECALL makes the call itself: the frame then stands on it
        out[i.offset] = out[ins[k - 1].offset] = what
    return out


def _in_sleep(frame: FrameType) -> bool:
    """Whether ``frame`` is calling ``time.sleep`` now (names resolved in its globals)."""
    code = frame.f_code
    calls = _sleep_calls.get(code)
    if calls is None:
        if len(_sleep_calls) >= _SLEEP_CACHE_MAX:
            _sleep_calls.clear()
        calls = _sleep_calls[code] = _find_sleep_calls(code)
    how_name = calls.get(frame.f_lasti)
    if how_name is None:
        return False
    how, name = how_name
    g = frame.f_globals
    obj = g[name] if name in g else getattr(frame.f_builtins, "get", lambda _n: None)(name)
    if how == "attr":
        return obj is time
    return obj is time.sleep


def known_wait(frame: FrameType | None) -> bool:
    """Whether ``frame`` (a thread's innermost Python frame) sits in a known wait."""
    if frame is None:
        return False
    code = frame.f_code
    if code is _COND_CODE:
        return frame.f_lineno in _COND_LINES
    lines = _SELECT_CODES.get(code)
    if lines is not None:
        return frame.f_lineno in lines
    return _in_sleep(frame)


def wanted(hub: Any, frame: FrameType | None) -> bool:
    """Sysmon's test: the main goroutine waits in a known wait and the P has work."""
    if hub.driven is not None or hub.stopping or not known_wait(frame):
        return False
    return hub.has_work()


def kick(hub: Any, signum: int) -> None:
    """From sysmon: interrupt the hub thread's wait with ``signum``, the preemption handler's
    signal, so that the handler drives the hub."""
    st = proc.driving
    st.kicked = True
    try:
        signal.pthread_kill(hub.thread_id, signum)
    except (OSError, ValueError):
        st.kicked = False


def check_release(hub: Any, now: float | None = None) -> bool:
    """Whether the driven thread should get its wait back: its lock was released, or it has
    been held for ``HOLD`` (any thread: reads only)."""
    if hub.driven is None:
        return False
    st = proc.driving
    waiter = st.waiter
    if waiter is not None and not waiter.locked():
        return True
    return (time.monotonic() if now is None else now) - st.since > HOLD


def ask_release(hub: Any) -> None:
    """From any thread: have the hub hand the thread back at its next pass."""
    hub.post(hub.release_driven)


def release_if_done(hub: Any) -> None:
    """On the hub thread (a goroutine that completed a wait's subject): give the thread back
    if its wait is over."""
    if hub.driven is not None and check_release(hub):
        hub.release_driven()


def drive(hub: Any, frame: FrameType | None) -> None:
    """From the signal handler on the hub thread: park the main goroutine so the hub runs."""
    st = proc.driving
    if not st.kicked:
        return
    st.kicked = False
    g = hub.current
    if g is None or g is not hub.main_g or g.glet is not hub.root or getcurrent() is not hub.root \
            or hub.stopping or hub.no_preempt or hub.driven is not None or frame is None \
            or not known_wait(frame):
        return
    if frame.f_code is not _COND_CODE and frame.f_code not in _SELECT_CODES:
        if safe_point(frame, None) == UNSAFE:  # a sleep inside ``with lock:``, say
            return
    st.waiter = frame.f_locals.get("waiter") if frame.f_code is _COND_CODE else None
    st.since = time.monotonic()
    hub.driven = g
    hub.poll_now = True
    try:
        hub.park(waits.PLAIN_WAIT)
    except (GoroutineExit, ProcessLost):
        # the runtime ended (stopped, or a P died: the tasks it held carry the error); the
        # thread's own wait goes on, and its next csp_mp call starts a new runtime
        return
    finally:
        hub.driven = None
        st.waiter = None


__all__ = ["HOLD", "ask_release", "check_release", "drive", "kick", "known_wait",
           "release_if_done", "wanted"]
