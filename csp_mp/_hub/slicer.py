"""The time-slice clock: the kernel, not a Python thread, says when a slice has passed.

Sysmon (sysmon.py) is a Python thread: to look at the hub it must first take the GIL from the
goroutine that hogs it, which CPython hands over only at its switch interval (5 ms), and only
then can it trip the preemption handler; a goroutine whose timer is due waited two to four
slices. Here ``setitimer(ITIMER_VIRTUAL)`` makes the kernel send ``SIGVTALRM`` every
``QUANTUM`` of the process's CPU time. CPython's C-level handler only records it (no GIL
needed); the Python handler below runs in the main thread at its next check point and applies
sysmon's rule itself: the same goroutine has run ``slice`` seconds without a switch and other
work waits (``Hub.has_work``), or a quarter of that while a timer is due -> preempt at a safe
point (preempt.py). It also acts on a request sysmon made, which otherwise lands inside this
handler more often than not (sysmon takes the GIL at the handler's first check point) and
finds no safe point there.

The kernel looks at its timer tick (4 ms at HZ=250), and only while the process runs: on a
loaded machine its looks are sparse, so a slice is counted from sysmon's first sighting of the
switch when it has one (``Sysmon.started``), rather than from the look that saw it. A due
timer needs only a quarter slice: a ticker's goroutine, readied a little late each period,
would otherwise start the busy goroutine's next slice late too, and the lateness would add up
until a tick was lost.

Only CPU time counts, so an idle or blocked process gets no signal, and the signal goes to the
thread that was using the CPU, not to one sitting in a system call (``SA_RESTART`` is set
anyway). Sysmon keeps its own requests as a fallback (a hub off the main thread, a program that
uses ``SIGVTALRM`` or the virtual timer itself, which are then left alone).

After a run, ``SIGVTALRM`` is left to the handler, which does nothing without a hub: its
default action ends the process, a signal generated just before the timer stopped may still
arrive, and one CPython has taken but not yet handled would raise ``OSError`` in the program's
code if the handler were then ``SIG_IGN``.

Invariants:
- Installed by the hub loop of the main thread only, uninstalled by its stop hook; the timer
  and the handler are set together and removed together.
- ``proc.slice_clock`` is touched by the main thread only (install, uninstall, the handler).

Rejected: ``ITIMER_REAL``/``SIGALRM`` (a signal programs use, and it ticks while idle);
``pthread_kill`` from a thread (that thread needs the GIL to run Python, the very wait this
removes); ``ITIMER_PROF``/``SIGPROF`` (profilers own it).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from .._proc import proc
from . import preempt

__all__ = ["QUANTUM", "install", "uninstall"]

QUANTUM = 0.002  # CPU seconds between two looks; the handler costs about a microsecond
SIGNUM: Any = getattr(signal, "SIGVTALRM", None)


def _handler(signum: int, frame: Any) -> None:
    st = proc.slice_clock
    hub = st.hub
    if hub is None:
        return
    sm = hub.sysmon
    g = hub.current
    tick = hub.tick
    now = time.monotonic()
    last, st.last = st.last, now
    if preempt.recording():
        preempt.note("vt", tick, st.tick, now - st.since, hub.has_work())
    if g is None or sm is None:
        return
    if tick != st.tick:
        # the switch came after the previous look; under load the kernel's looks are sparse
        # (it looks at its timer tick, and only while the process runs), so take sysmon's
        # earlier sighting of the same switch when it has one, else count from the previous
        # look but never more than half a slice back
        seen_tick, seen = sm.started
        st.tick = tick
        st.since = seen if seen_tick == tick else max(last, now - 0.5 * sm.slice)
    if hub.stopping:
        return
    if sm.request is None:
        ran = now - st.since
        if ran < sm.slice:
            if ran < sm.timer_slice or not hub.timers.due():
                return
        elif not hub.has_work():
            return
        sm.requests += 1
        sm.retries = 0
        sm.request = (tick, g)
    # sysmon's own request too: its trip lands inside this handler more often than not (it
    # takes the GIL at this handler's first check point), where it finds no safe point
    preempt._maybe_preempt(hub, sm, frame)


def install(hub: Any, quantum: float = QUANTUM) -> bool:
    """Start the CPU-time clock for ``hub``; False when it cannot be had (not the main thread,
    no ``SIGVTALRM``, or the program uses the signal or the virtual timer)."""
    if SIGNUM is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        # ours too: a P forked while P0's clock ran inherits the handler, never the timer
        if signal.getsignal(SIGNUM) not in (signal.SIG_DFL, signal.SIG_IGN, None, _handler):
            return False
        if signal.getitimer(signal.ITIMER_VIRTUAL) != (0.0, 0.0):
            return False
        signal.signal(SIGNUM, _handler)
        signal.siginterrupt(SIGNUM, False)
        st = proc.slice_clock
        st.hub, st.tick = hub, -1
        signal.setitimer(signal.ITIMER_VIRTUAL, quantum, quantum)
    except (ValueError, OSError, AttributeError):
        uninstall(hub)
        return False
    return True


def uninstall(hub: Any) -> None:
    """Stop the clock ``install`` started for ``hub``."""
    st = proc.slice_clock
    if st.hub is not hub:
        return
    st.hub = None
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    except (ValueError, OSError):
        pass
    # The handler stays, doing nothing without a hub: a signal the kernel generated just before
    # the timer stopped may still be on its way, and one CPython received but has not yet run
    # the handler for would raise "Signal 26 ignored due to race condition" in the program's
    # code were the handler SIG_IGN (and the default action ends the process).
