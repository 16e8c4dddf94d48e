"""Sysmon: one watchdog thread per P (Go's ``sysmon``), for time-slice preemption and for
reporting a goroutine that blocks the hub thread.

Every ``period`` seconds it reads the hub's switch counter (``hub.tick``, which changes at every
greenlet switch) and the running goroutine (``hub.current``):

- Preemption: when the same goroutine has run for ``slice`` seconds without a switch and some
  other work waits (``Hub.has_work``: a runnable goroutine, a due timer, a posted call or
  completion, work from other Ps), or for a quarter of that while a timer is due, it records a
  request and trips the preemption handler (preempt.py), which yields the P at a safe point.
  ``CSP_MP_PREEMPT=0`` turns preemption off (read each time a hub loop starts).
- Blocking detection: when, in addition, the hub thread's innermost frame has stayed on the same
  instruction for ``block_threshold`` seconds, that instruction is no bytecode check point (a
  thread sampled there runs Python code), the thread used less than 5 % of that time on a CPU
  and the kernel shows it asleep, not running nor waiting for a CPU (it sits inside one call,
  blocked in the OS, rather than running bytecode, a long computation, which only preemption
  concerns, or starved of a CPU by a loaded machine), it queues a report to the hub, which
  emits ``BlockingWarning`` from the hub thread at its next pass (so warnings filters and
  ``pytest.warns`` see it), once per call site and hub.
  The implicit runtime's main goroutine (the caller's own thread code: a REPL, a notebook) is
  neither reported nor assumed to be a goroutine's long call.
- Network (a cluster node's hub, ``Hub.netpoll``; Go's sysmon polls the network too): while
  goroutines run, frames from other nodes waiting to be read make the hub's next switch go
  through its pass (``poll_now``), which reads them; a goroutine that does not switch is
  preempted for them, as for other work.

Invariants:
- At most one sysmon thread per hub; it is started by the hub loop and joined by the stop hook
  it appends to ``hub.hooks_on_stop``, so it never outlives the runtime.
- The sysmon thread only reads hub state (``Hub.has_work``, the counters above), sets
  ``poll_now`` and hands the hub calls through ``Hub.post`` (all safe from any thread);
  everything else it touches is its own.
- ``request`` is ``(tick, g)`` or None; set by the sysmon thread, cleared by the handler.
"""

from __future__ import annotations

import dis
import linecache
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._errors import BlockingWarning
from .._proc import proc
from .._tb import warn_quietly
from . import drive, preempt, safepoint, slicer

_TIMER_SLICE_SHARE = 0.25  # a due timer preempts after this share of a slice
_OFF_CPU_RATIO = 0.05  # a thread using less CPU than this share of the time is blocked
_REPORTED = float("inf")  # the stuck episode's start once it has been reported


#: process-wide knobs, the runtime object's (tests and benchmarks change them; read when a hub
#: loop starts)
settings = proc.sysmon_settings


def preempt_enabled() -> bool:
    """Whether hubs started now preempt (``settings.preempt``, else ``CSP_MP_PREEMPT``)."""
    if settings.preempt is not None:
        return settings.preempt
    return os.environ.get("CSP_MP_PREEMPT", "1").strip().lower() not in ("0", "false", "no", "off")


class Sysmon:
    """The watchdog of one hub. Created and stopped on the hub thread."""

    def __init__(self, hub: Any, preempting: bool, driving: bool = False) -> None:
        self.hub = hub
        self.preempting = preempting
        self.driving = driving  # the signal handler is installed: drive.py can take the thread
        self.slice = settings.slice
        self.timer_slice = settings.slice * _TIMER_SLICE_SHARE
        self.period = settings.period
        self.idle_period = settings.idle_period
        self.block_threshold = settings.block_threshold
        self.detect_blocking = settings.detect_blocking
        self.base_code = type(hub)._worker.__code__  # the entry frame of every worker greenlet
        self.request: tuple[int, Any] | None = None
        # (tick, since): the switch counter sysmon last saw change, and a time before that
        # switch; the CPU-time clock measures its slices from here when its own looks are sparse
        self.started: tuple[int, float] = (-1, 0.0)
        self.preempted = 0  # goroutines switched out by the handler
        self.declined = 0  # handler runs that found no safe point
        self.retries = 0  # looks at the next check point for the current request (preempt.py)
        self.requests = 0  # requests made by sysmon
        self.reported: set[tuple[str, int, str]] = set()
        self.reports = 0
        self.drives = 0  # times the main goroutine's thread was taken for the hub
        self._pending: list[Callable[[], None]] = []  # reports queued, not yet emitted
        try:
            self._cpu_clock: int | None = time.pthread_getcpuclockid(hub.thread_id)
        except (AttributeError, OSError, OverflowError):
            self._cpu_clock = None
        # the kernel's view of the hub thread (Linux): running or waiting for a CPU, or asleep
        self._stat: str | None = None
        if threading.get_ident() == hub.thread_id:
            path = f"/proc/self/task/{threading.get_native_id()}/stat"
            if _asleep(path) is not None:
                self._stat = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"csp_mp-sysmon-P{hub.p}",
                                        daemon=True)

    def start(self) -> None:
        """Start the thread (the hub's own thread calls this as its loop starts)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread; undo the handler installation."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        for emit in list(self._pending):  # reports queued after the loop's last pass
            emit()
        if self.preempting:
            slicer.uninstall(self.hub)
        if self.driving:
            preempt.uninstall(self.hub)
        if self.hub.sysmon is self:
            self.hub.sysmon = None

    def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks."""
        return {"preempted": self.preempted, "declined": self.declined,
                "requests": self.requests, "reports": self.reports, "drives": self.drives}

    # ----------------------------------------------------------------- the thread

    def _run(self) -> None:
        hub = self.hub
        stop = self._stop
        last_tick: int | None = None
        last_g: Any = None
        prev = since = time.monotonic()
        self._stuck_at: tuple[Any, int] | None = None
        wait = self.period
        lag = 0.0  # how late sysmon wakes, mostly waiting for the GIL (EWMA)
        while True:
            target = time.monotonic() + wait
            if stop.wait(wait):
                return
            tick = hub.tick
            g = hub.current
            now = time.monotonic()
            lag += (max(0.0, now - target) - lag) * 0.25
            if preempt.recording():
                preempt.note("sm", tick, now - target, lag)
            sampled, prev = prev, now
            if g is None or hub.stopping:
                last_g = None
                self._stuck_at = None
                wait = self.idle_period
                continue
            netpoll = hub.netpoll
            if netpoll is not None and not hub.poll_now and netpoll.waiting():
                hub.poll_now = True
            if tick != last_tick or g is not last_g:
                # the switch happened after the previous sample: count from there
                last_tick, last_g, since = tick, g, sampled
                self.started = (tick, since)
                self._stuck_at = None
                self.request = None
            elif g.glet is not None and g.glet is hub.root:
                if self.driving and now - since >= self.slice:
                    self._drive(hub)
            elif self.detect_blocking:
                self._watch_blocking(g, tick, now, now - since)
            if hub.driven is not None and drive.check_release(hub, now):
                drive.ask_release(hub)
            remaining = since + self.slice - now - lag
            # before the slice ends, wake when it does; past it (nothing else to run, so no
            # preemption) sample once a period: every wake takes the GIL from the hub
            wait = min(self.period, max(0.0005, remaining)) if remaining > 0 else self.period
            ran = now - since
            if self.preempting and (ran >= self.slice and hub.has_work()
                                    or ran >= self.timer_slice and hub.timers.due()):
                if self.request is None:
                    self.requests += 1
                    self.retries = 0
                self.request = (tick, g)
                preempt.trip()
                if preempt.recording():
                    preempt.note("trip", tick, now - since)
                # the switch should follow at once: wake one slice later, early by the lag
                wait = min(self.period, max(0.0005, self.slice - lag))

    def _drive(self, hub: Any) -> None:
        """The main goroutine's thread has sat in plain code for a slice: take it for the hub
        if it waits in a known wait and the P has work (drive.py)."""
        frame = sys._current_frames().get(hub.thread_id)
        if drive.wanted(hub, frame):
            self.drives += 1
            drive.kick(hub, preempt.SIGNUM)

    def _watch_blocking(self, g: Any, tick: int, now: float, ran: float) -> None:
        """One sample of a goroutine that has not switched: report it once when it has sat in
        one call, off the CPU and not waiting for one, for ``block_threshold``."""
        frame = sys._current_frames().get(self.hub.thread_id)
        if frame is None:
            return
        stuck = self._stuck_at
        cpu = self._cpu()
        if stuck is None or frame is not stuck[0] or frame.f_lasti != stuck[1]:
            if _running_bytecode(frame):
                self._stuck_at = None
                return
            self._stuck_at = (frame, frame.f_lasti)
            self._stuck_since, self._stuck_cpu = now, cpu
            return
        if self._stuck_since == _REPORTED:
            return
        window = now - self._stuck_since
        # Off the CPU since the window began, and asleep at each sample: blocked in a call, not
        # running bytecode (sampling alone cannot tell: the GIL hand-off to sysmon lands on the
        # same instruction each time), nor starved of a CPU by a loaded machine (such a thread
        # uses little CPU too, but it is runnable: it waits for a CPU, not for its call).
        if cpu - self._stuck_cpu >= _OFF_CPU_RATIO * window or not self._asleep():
            self._stuck_since, self._stuck_cpu = now, cpu  # not blocked: count from here
            return
        if window < self.block_threshold or self.hub.tick != tick:
            return
        try:
            self._report(g, frame, ran)
        except Exception:
            pass  # a diagnostic: never the end of sysmon, nor of the program
        self._stuck_since = _REPORTED  # once per episode

    def _asleep(self) -> bool:
        """Whether the hub thread sleeps in the kernel (True where the platform cannot tell).
        Read while this thread lets the GIL go, so a hub thread that only waits for the GIL
        gets it and shows as runnable."""
        path = self._stat
        if path is None:
            return True
        got = _asleep(path)
        if got is None:
            self._stat = None
            return True
        return got

    def _cpu(self) -> float:
        """CPU seconds used by the hub thread (0.0 where the platform cannot tell)."""
        clock = self._cpu_clock
        if clock is None:
            return 0.0
        try:
            return time.clock_gettime(clock)
        except OSError:
            self._cpu_clock = None
            return 0.0

    def _report(self, g: Any, frame: Any, ran: float) -> None:
        """Queue a BlockingWarning for the call ``frame`` sits in, attributed to the innermost
        frame of user code (a blocking ``subprocess.run`` is reported at the user's line, not
        inside ``subprocess``); nothing when that frame is the runtime's own."""
        site = frame
        while site is not None:
            kind = safepoint.code_kind(site.f_code, site.f_globals.get("__name__"))
            if kind == safepoint.RUNTIME:
                return  # the runtime's own wait (starting an M thread, say): not the user's
            if kind != safepoint.STDLIB and kind != safepoint.LOCKING:
                break
            site = site.f_back
        if site is None:
            site = frame
        code = site.f_code
        filename, lineno = code.co_filename, site.f_lineno or 0
        call = _call_text(site)
        key = (filename, lineno, call)
        if key in self.reported:
            return
        self.reported.add(key)
        stack = "".join(traceback.format_stack(frame))
        message = (f"{g.describe()} blocked its P for more than {ran:.2f} s in a call to {call} "
                   f"({filename}:{lineno}); other goroutines of the P cannot run meanwhile. "
                   f"Use csp_mp.blocking(...) or csp_mp.patch_blocking().\n"
                   f"Goroutine stack (most recent call last):\n{stack}")
        module_globals = site.f_globals
        hub = self.hub

        def emit() -> None:  # runs on the hub thread: at its next pass, or when the loop ends
            if emit not in self._pending:
                return
            self._pending.remove(emit)
            self.reports += 1
            try:
                warn_quietly(BlockingWarning(message), filename, lineno, module_globals)
            except Warning as exc:  # a filter turned it into an error: it fails the program
                if hub.outcome is not None and hub.outcome.kind == "return":
                    hub.outcome = None  # the loop is ending: the error replaces the result
                hub._panic(g, exc)

        self._pending.append(emit)
        hub.post(emit)


def _asleep(path: str) -> bool | None:
    """Whether the thread whose ``/proc/.../stat`` is ``path`` sleeps (state S or D), rather
    than running or waiting for a CPU; None when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            text = f.read()
        return text[text.rindex(b")") + 2:][:1] in (b"S", b"D")
    except (OSError, ValueError):
        return None


def _running_bytecode(frame: Any) -> bool:
    """Whether ``frame`` stands where the interpreter checks for a GIL hand-off between two
    bytecodes (a loop's backward jump, a function's start): running Python code, in no call."""
    code = frame.f_code
    try:
        _, _, checks = safepoint._code_info(code, frame.f_globals.get("__name__"))
    except Exception:
        return False
    return frame.f_lasti in checks


def _call_text(frame: Any) -> str:
    """The source of the call the frame is in, e.g. ``time.sleep``; else its source line."""
    code = frame.f_code
    try:
        positions = list(code.co_positions())
        pos = positions[frame.f_lasti // 2]
    except (IndexError, AttributeError, ValueError):
        pos = None
    lineno = frame.f_lineno or 0
    if pos and pos[0] is not None and pos[0] == pos[1] and pos[2] is not None \
            and pos[3] is not None:
        line = linecache.getline(code.co_filename, pos[0], frame.f_globals)
        text = line[pos[2]:pos[3]] if line else ""
        if "(" in text:
            return text.split("(", 1)[0].strip() or text.strip()
        if text.strip():
            return text.strip()
    callee = _callee_name(frame)
    if callee:
        return callee
    line = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
    return line or f"{code.co_name}()"


_NAME_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_DEREF"})
_ATTR_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})


def _callee_name(frame: Any) -> str | None:
    """The dotted name of the callable the frame is calling, read from its bytecode (for code
    without source: ``python -c``, a notebook's lost cell), e.g. ``time.sleep``; else None."""
    try:
        ins = list(dis.get_instructions(frame.f_code))
        k = next(i for i, x in enumerate(ins) if x.offset == frame.f_lasti)
        if ins[k].opname == "CALL" and k and ins[k - 1].opname == "PRECALL":
            k -= 1
        need = ins[k].arg
        if ins[k].opname not in ("PRECALL", "CALL") or need is None:
            return None
        # back over the arguments: each leaves one value on the stack
        depth, j = 0, k
        while depth < need:
            j -= 1
            if j < 0:
                return None
            op = ins[j]
            depth += dis.stack_effect(op.opcode, op.arg if op.opcode >= dis.HAVE_ARGUMENT
                                      else None, jump=False)
        names: list[str] = []
        j -= 1
        while j >= 0 and ins[j].opname in _ATTR_LOADS:
            names.append(str(ins[j].argval))
            j -= 1
        if j < 0 or ins[j].opname not in _NAME_LOADS:
            return None
        names.append(str(ins[j].argval))
        return ".".join(reversed(names))
    except (StopIteration, ValueError, TypeError):
        return None


def start_sysmon(hub: Any) -> Sysmon | None:
    """Start ``hub``'s sysmon (called on the hub thread as the loop starts); None when both
    preemption and blocking detection are off."""
    if hub.sysmon is not None:
        return hub.sysmon
    installed = preempt.install(hub)  # the handler serves preemption and drive.py
    preempting = installed and preempt_enabled()
    if not installed and not settings.detect_blocking:
        return None
    sm = Sysmon(hub, preempting, driving=installed)
    hub.sysmon = sm
    hub.hooks_on_stop.append(sm.stop)
    if preempting and settings.cpu_clock:
        slicer.install(hub)
    sm.start()
    return sm


__all__ = ["Sysmon", "preempt_enabled", "settings", "start_sysmon"]
