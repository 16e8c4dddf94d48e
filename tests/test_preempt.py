"""Time-slice preemption: a CPU-bound goroutine does not starve others on its P, and is never
switched out where that would split a critical region (logging, thread locks, runtime code)."""

from __future__ import annotations

import _thread
import logging
import signal
import sys
import threading
import time

import pytest

import csp_mp
from csp_mp._hub import current_hub, interrupt, preempt, safepoint, sysmon
from csp_mp._proc import proc

TICK = 0.010  # one time slice: each tick needs the busy goroutine switched out within a period
WINDOW = 1.0
SLEEP = 0.010  # the due-timer test's timer
SLICE_BAR = 0.015  # about one time slice (10 ms), as SPEC promises


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _ticks_beside_busy_goroutine() -> tuple[int, float]:
    """(ticks a ticker goroutine receives in WINDOW while a CPU-bound goroutine shares its P,
    CPU seconds the P's thread got meanwhile)."""

    def main() -> tuple[int, float]:
        c = csp_mp.tick(TICK)
        deadline = time.monotonic() + WINDOW
        got: list[float] = []
        wg = csp_mp.WaitGroup()

        def ticker() -> None:
            while True:
                t = c.recv()
                if t >= deadline:
                    return
                got.append(t)

        def busy() -> None:
            while time.monotonic() < deadline:
                pass

        cpu = time.thread_time()
        wg.go(ticker)
        wg.go(busy)
        wg.wait()
        return len(got), time.thread_time() - cpu

    return csp_mp.run(main, procs=1)


def test_ticker_keeps_ticking_beside_a_busy_goroutine(monkeypatch):
    """A tick is lost only when its goroutine waits a whole period: each one needs the busy
    goroutine preempted within a slice. Counted against the CPU time the P's thread got (the
    busy goroutine keeps it on a CPU whenever the machine lets it): a starved process loses
    ticks to the machine, not to the scheduler."""
    monkeypatch.delenv("CSP_MP_PREEMPT", raising=False)
    got, cpu = _ticks_beside_busy_goroutine()
    assert got >= 0.9 * (cpu / TICK - 1), (got, cpu)


def test_ticker_starves_with_preemption_off(monkeypatch):
    monkeypatch.setenv("CSP_MP_PREEMPT", "0")  # read each time a hub loop starts
    got, _ = _ticks_beside_busy_goroutine()
    assert got <= 0.1 * (WINDOW / TICK - 1)


def test_a_due_timer_runs_within_a_slice_beside_a_busy_goroutine(monkeypatch):
    """From a timer's due time to its goroutine running, beside a CPU-bound goroutine on the
    same P: within about one slice. Measured in the CPU time the P's thread got (wall time is
    the machine's when others load it), for each of 100 sleeps: its CPU time past the sleep."""
    monkeypatch.delenv("CSP_MP_PREEMPT", raising=False)

    def main() -> list[float]:
        done: list[bool] = []

        def hog() -> None:
            while not done:
                pass

        csp_mp.go_local(hog)
        late = []
        for _ in range(100):
            cpu, wall = time.thread_time(), time.monotonic()
            csp_mp.sleep(SLEEP)
            late.append(min(time.thread_time() - cpu, time.monotonic() - wall) - SLEEP)
        done.append(True)
        return sorted(late)

    late = csp_mp.run(main, procs=1)
    assert late[98] <= SLICE_BAR, late[-5:]  # p99


def _overlap_run(region, rounds_outside: float = 0.002, deadline_s: float = 0.8,
                 workers: int = 3, stop_on_overlap: bool = False) -> dict:
    """Run ``workers`` goroutines that alternate ``region(state)`` with plain spinning; return
    the overlap count (a region entered while another goroutine is inside one) and the stats."""
    state = {"inside": 0, "overlaps": 0, "entries": 0}

    def main() -> dict:
        hub = current_hub()
        deadline = time.monotonic() + deadline_s
        wg = csp_mp.WaitGroup()

        def worker() -> None:
            while time.monotonic() < deadline:
                region(state)
                _spin(rounds_outside)
                if stop_on_overlap and state["overlaps"]:
                    return

        for _ in range(workers):
            wg.go(worker)
        wg.wait()
        return hub.sysmon.stats()

    stats = csp_mp.run(main, procs=1)
    return {**state, **stats}


def _critical(state: dict, seconds: float = 0.002) -> None:
    state["entries"] += 1
    if state["inside"]:
        state["overlaps"] += 1
    state["inside"] += 1
    _spin(seconds)
    state["inside"] -= 1


def test_plain_code_is_preempted_anywhere():
    # the control for the tests below: without a lock or a logging call around it, a region is
    # split by preemption, so they would see overlaps if preemption ignored those
    got = _overlap_run(_critical, deadline_s=10.0, stop_on_overlap=True)
    assert got["preempted"] >= 1
    assert got["overlaps"] >= 1


class _CheckingStream:
    """A logging stream whose write is a critical region that detects interleaving."""

    def __init__(self) -> None:
        self.state = {"inside": 0, "overlaps": 0, "entries": 0}
        self.lines = 0

    def write(self, text: str) -> None:
        _critical(self.state, 0.003)
        self.lines += text.count("\n")

    def flush(self) -> None:
        pass


def test_never_preempted_inside_a_logging_call():
    stream = _CheckingStream()
    logger = logging.getLogger("csp_mp.tests.preempt")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        got = _overlap_run(lambda state: logger.info("message %d", state["entries"]),
                           deadline_s=0.8)
    finally:
        logger.removeHandler(handler)
    assert got["preempted"] >= 1
    assert stream.state["overlaps"] == 0
    assert stream.lines == stream.state["entries"] >= 1


class _TimedLock:
    """``with`` a thread lock, failing instead of hanging if another goroutine of the same thread
    already holds it (which only preemption inside the region could cause)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        if not self.lock.acquire(timeout=2.0):
            raise AssertionError("thread lock held by a preempted goroutine of this thread")

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_never_preempted_inside_a_with_lock_region():
    lock = _TimedLock()

    def region(state: dict) -> None:
        with lock:
            _critical(state)

    got = _overlap_run(region)
    assert got["preempted"] >= 1
    assert got["overlaps"] == 0


def test_never_preempted_inside_an_acquire_try_finally_region():
    lock = threading.Lock()

    def region(state: dict) -> None:
        if not lock.acquire(timeout=2.0):
            raise AssertionError("thread lock held by a preempted goroutine of this thread")
        try:
            _critical(state)
        finally:
            lock.release()

    got = _overlap_run(region)
    assert got["preempted"] >= 1
    assert got["overlaps"] == 0


def test_no_preempt_counter_holds_off_preemption():
    def main() -> tuple[int, int]:
        hub = current_hub()
        done = csp_mp.Chan()

        def other() -> None:
            done.recv()

        csp_mp.go_local(other)  # keeps "other work" pending only through the run queue
        csp_mp.go_local(lambda: None)
        sm = hub.sysmon
        hub.no_preempt += 1
        try:
            before = sm.preempted
            _spin(0.15)
            held = sm.preempted - before
        finally:
            hub.no_preempt -= 1
        deadline = time.monotonic() + 10.0
        while sm.preempted == before and time.monotonic() < deadline:
            pass
        done.send(None)
        return held, sm.preempted - before

    held, after = csp_mp.run(main, procs=1)
    assert held == 0
    assert after >= 1


@pytest.mark.parametrize("pre", ["default", "python"])
def test_signal_handler_composes_and_is_restored(pre):
    calls = []

    def user_handler(signum, frame):
        calls.append(signum)

    old = signal.signal(preempt.SIGNUM, user_handler if pre == "python" else signal.SIG_DFL)
    try:
        got = _overlap_run(_critical, deadline_s=0.3, workers=2)
        assert got["preempted"] >= 1
        if pre == "python":
            assert calls and set(calls) == {preempt.SIGNUM}  # chained, not replaced
            assert signal.getsignal(preempt.SIGNUM) is user_handler
        else:
            assert signal.getsignal(preempt.SIGNUM) == signal.SIG_DFL
    finally:
        signal.signal(preempt.SIGNUM, old)


def test_sigint_still_raises_keyboard_interrupt():
    before = signal.getsignal(signal.SIGINT)

    def main() -> None:
        # the runtime's Ctrl-C handler while it runs (interrupt.py); preemption leaves it alone
        assert signal.getsignal(signal.SIGINT) is interrupt._handler
        wg = csp_mp.WaitGroup()
        for _ in range(2):
            wg.go(_spin, 5.0)
        threading.Timer(0.2, _thread.interrupt_main).start()
        wg.wait()

    with pytest.raises(KeyboardInterrupt):
        csp_mp.run(main, procs=1)
    assert signal.getsignal(signal.SIGINT) is before


def test_sysmon_thread_does_not_outlive_the_runtime():
    def main() -> str:
        return current_hub().sysmon._thread.name

    name = csp_mp.run(main, procs=1)
    assert name.startswith("csp_mp-sysmon")
    assert not [t for t in threading.enumerate() if t.name == name]


def test_hub_off_the_main_thread_is_not_preempted():
    out: dict = {}

    def main() -> None:
        sm = current_hub().sysmon
        out["preempting"] = sm.preempting
        out["handler"] = signal.getsignal(preempt.SIGNUM)

    t = threading.Thread(target=lambda: csp_mp.run(main, procs=1))
    t.start()
    t.join(30)
    assert out["preempting"] is False
    assert out["handler"] is not preempt._handler


def test_env_switch_is_read_at_start(monkeypatch):
    monkeypatch.setattr(sysmon.settings, "preempt", None)
    monkeypatch.setenv("CSP_MP_PREEMPT", "0")
    assert sysmon.preempt_enabled() is False
    monkeypatch.setenv("CSP_MP_PREEMPT", "1")
    assert sysmon.preempt_enabled() is True
    monkeypatch.delenv("CSP_MP_PREEMPT")
    assert sysmon.preempt_enabled() is True


# ----------------------------------------------------------------- safe points, unit level


def _frame_at(fn):
    """Run ``fn(capture)``; return the verdict of ``safe_point`` for the frame that called
    ``capture`` (its f_lasti then points at that call, so only the frame rules decide)."""
    got = []

    def capture():
        import sys

        frame = sys._getframe(1)
        got.append(safepoint.safe_point(frame, _frame_at.__code__))  # stop at our caller

    fn(capture)
    return got[0]


def test_safe_point_rules():
    lock = threading.Lock()

    def plain(capture):
        capture()

    def in_with(capture):
        with lock:
            capture()

    def in_try_finally(capture):
        try:
            capture()
        finally:
            pass

    def in_try_except(capture):
        try:
            capture()
        except ValueError:
            pass

    def in_except(capture):
        try:
            raise ValueError
        except ValueError:
            capture()

    def in_finally_handler(capture):
        try:
            raise ValueError
        finally:
            capture()

    # "plain" code is not at a signal check point here (it is at a call), so RETRY, never UNSAFE
    assert _frame_at(plain) == safepoint.RETRY
    assert _frame_at(in_try_except) == safepoint.RETRY
    assert _frame_at(in_with) == safepoint.UNSAFE
    assert _frame_at(in_try_finally) == safepoint.UNSAFE
    assert _frame_at(in_except) == safepoint.UNSAFE
    with pytest.raises(ValueError):
        _frame_at(in_finally_handler)


def test_a_trace_function_between_two_steps_of_the_worker_loop_is_no_safe_point():
    """A trace function is user code, but run for the worker loop's own lines (the goroutine
    has returned, the worker may already be back in the hub's pool) it is a callback inside
    the runtime: switching there once lost a goroutine. Only the line calling the goroutine's
    function lets a user frame above the loop be preempted."""
    from csp_mp._hub.hub import Hub

    base = Hub._worker.__code__
    body_lines = safepoint._body_calls[base]
    verdicts: dict[int, set[int]] = {}

    def local(frame, event, arg):
        if frame.f_code is base:
            verdict = safepoint.safe_point(sys._getframe(0), base)
            verdicts.setdefault(frame.f_lineno, set()).add(verdict)
        return local

    def body():
        worker = sys._getframe(1)
        assert worker.f_code is base
        worker.f_trace = local
        worker.f_trace_opcodes = True
        sys.settrace(lambda *a: None)  # tracing on; only the worker frame has a local tracer

    def main():
        csp_mp.go(body)
        csp_mp.sleep(0.01)
        sys.settrace(None)

    csp_mp.run(main, procs=1)
    outside = {line: v for line, v in verdicts.items() if line not in body_lines}
    assert outside, verdicts  # the loop's own steps after the body returned were traced
    assert all(v == {safepoint.UNSAFE} for v in outside.values()), outside


def test_safe_point_refuses_locking_modules_and_del():
    def fake_module_frame(modname: str, src: str = "def f(cb):\n    cb()\n"):
        ns: dict = {"__name__": modname}
        exec(compile(src, f"<{modname}>", "exec"), ns)
        return ns["f"]

    for mod in ("logging", "threading", "importlib._bootstrap", "queue"):
        f = fake_module_frame(mod)
        assert _frame_at(f) == safepoint.UNSAFE, mod
    f = fake_module_frame("mymod", "class A:\n    def __del__(self, cb):\n        cb()\n"
                                   "def f(cb):\n    A.__del__(None, cb)\n")
    assert _frame_at(f) == safepoint.UNSAFE


def _runtime_function(src: str = "def f(cb):\n    x = 1\n    cb()\n    return x\n"):
    """A function whose frames count as the runtime's own (its module is under csp_mp)."""
    ns: dict = {"__name__": "csp_mp._fake_for_tests"}
    exec(compile(src, "<csp_mp._fake_for_tests>", "exec"), ns)
    return ns["f"]


def test_safe_point_refuses_user_code_the_runtime_calls_back():
    """A trace function, or a ``__reduce__`` the codec calls, runs user code on top of runtime
    code that is mid-update: switching there once lost a goroutine between two broker steps."""
    runtime_f = _runtime_function()

    def callback_inside_runtime(capture):
        def user_callback():
            capture()

        runtime_f(user_callback)

    assert _frame_at(callback_inside_runtime) == safepoint.UNSAFE


def test_safe_point_passes_a_wrapper_on_its_body_call_line():
    wrapper = _runtime_function("def f(fn):\n    x = 1\n    fn()\n    return x\n")
    safepoint.register_body_call(wrapper)
    try:
        def body_inside_wrapper(capture):
            def user_body():
                capture()

            wrapper(user_body)

        # at a call, not a check point: RETRY, where a refusing frame would say UNSAFE
        assert _frame_at(body_inside_wrapper) == safepoint.RETRY
    finally:
        del safepoint._body_calls[wrapper.__code__]


# ---------------------------------------------------------------- the CPU-time clock (slicer)

CPU_CLOCK_PROG = """
import sys, time
import csp_mp
from csp_mp._hub import current_hub, sysmon

sysmon.settings.period = 3600.0  # sysmon never looks: only the kernel's CPU-time signal can
sysmon.settings.detect_blocking = False

def main():
    done = []

    def hog():
        while not done:
            pass

    csp_mp.go_local(hog)
    for _ in range(5):
        csp_mp.sleep(0.01)  # each wake needs the hog switched out
    done.append(True)
    return current_hub().sysmon.stats()["preempted"]

print("preempted", csp_mp.run(main, procs=int(sys.argv[1])))
"""


@pytest.mark.parametrize("procs", [1, 2], ids=["procs1", "procs2"])
def test_cpu_clock_preempts_without_sysmon_taking_the_gil(procs: int) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", CPU_CLOCK_PROG, str(procs)], capture_output=True,
                       text=True, timeout=40)
    assert r.returncode == 0, r.stderr
    word, n = r.stdout.split()
    assert word == "preempted" and int(n) >= 5, r.stdout


def test_cpu_clock_stops_with_the_run_and_leaves_a_handler_that_does_nothing():
    """A SIGVTALRM still on its way, or taken by CPython but not yet handled, when the run ends
    meets a Python handler that does nothing (with SIG_IGN, CPython raises "Signal 26 ignored
    due to race condition" in the program's code; the default action ends the process)."""
    csp_mp.run(lambda: csp_mp.sleep(0.01), procs=1)
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    handler = signal.getsignal(signal.SIGVTALRM)
    assert callable(handler)
    assert handler(signal.SIGVTALRM, None) is None
    signal.raise_signal(signal.SIGVTALRM)  # handled, quietly
    assert sum(range(1000)) == 499500


def test_a_program_that_uses_sigvtalrm_keeps_it():
    seen: list[int] = []

    def mine(signum, frame):
        seen.append(signum)

    saved = signal.signal(signal.SIGVTALRM, mine)
    try:
        def main() -> bool:
            return current_hub().sysmon is not None and proc.slice_clock.hub is None

        assert csp_mp.run(main, procs=1)
        assert signal.getsignal(signal.SIGVTALRM) is mine
        assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGVTALRM, saved)


P1_CLOCK_PROG = """
import sys
import csp_mp
import csp_mp._proc
from csp_mp._hub import current_hub, sysmon

sysmon.settings.period = 3600.0  # only the CPU-time clock can preempt
sysmon.settings.detect_blocking = False

def on_p1(out):
    if csp_mp.runtime.current_p() != 1:
        out.send(None)
        return
    done = []

    def hog():
        while not done:
            pass

    csp_mp.go_local(hog)
    csp_mp.sleep(0.01)  # needs the hog switched out, on P1
    done.append(True)
    out.send(csp_mp._proc.proc.slice_clock.hub is current_hub())  # (a module travels by name)

def main():
    out = csp_mp.Chan()
    while True:
        for _ in range(8):
            csp_mp.go(on_p1, out)
        got = [out.recv() for _ in range(8)]
        if any(v is not None for v in got):
            return [v for v in got if v is not None][0]

print("clock on P1", csp_mp.run(main, procs=2))
"""


@pytest.mark.parametrize("start", ["", "forkserver"], ids=["fork", "forkserver"])
def test_cpu_clock_runs_in_worker_ps(start: str) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("CSP_MP_START", None)
    if start:
        env["CSP_MP_START"] = start
    r = subprocess.run([sys.executable, "-c", P1_CLOCK_PROG], capture_output=True, text=True,
                       timeout=40, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["clock", "on", "P1", "True"], r.stdout


def test_a_request_cleared_by_sysmon_before_the_handler_reads_it_is_ignored() -> None:
    """sysmon's thread may drop its request between the signal handler's check and its read:
    the handler then does nothing (it used to fail unpacking None)."""
    import sys

    from csp_mp import _hub
    from csp_mp._hub import preempt

    def main() -> int:
        hub = _hub.peek()
        sm = hub.sysmon
        assert sm is not None
        sm.request = None
        before = (sm.preempted, sm.declined)
        preempt._maybe_preempt(hub, sm, sys._getframe())
        return int((sm.preempted, sm.declined) == before)

    assert csp_mp.run(main, procs=1) == 1


def test_a_trip_landing_inside_the_preemption_check_is_left_to_the_running_check(
        monkeypatch) -> None:
    """Python runs a signal handler at check points inside a handler too: a check slower than
    the trips' period (disassembling a large function under valgrind) nested one level per trip
    until the C stack overflowed."""
    from types import SimpleNamespace

    g = SimpleNamespace(glet=None)
    sm = SimpleNamespace(request=None, declined=0, preempted=0, base_code=None)
    hub = SimpleNamespace(tick=7, current=g, stopping=False, no_preempt=False, root=None)
    nested = []

    def deciding_slowly(frame, base):
        sm.request = (7, g)  # the next trip asks again while this one decides
        nested.append(preempt._maybe_preempt(hub, sm, frame))
        return safepoint.UNSAFE

    g.glet = preempt.getcurrent()
    sm.request = (7, g)
    monkeypatch.setattr(preempt, "safe_point", deciding_slowly)
    preempt._maybe_preempt(hub, sm, sys._getframe())
    assert nested == [None]  # the nested trip returned at once, without a second check
    assert sm.preempted == 0 and not proc.preempt_handler.deciding



def test_a_c_call_blocked_in_a_system_call_sees_no_eintr():
    """A C function (libc ``read`` through ctypes, the GIL released) blocks the P's thread on a
    pipe while other work waits: sysmon asks for preemption many times meanwhile, and none of
    its requests interrupts the system call."""
    import ctypes
    import ctypes.util
    import os
    import warnings

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    r, w = os.pipe()

    def main() -> tuple[int, int, bytes, int]:
        done: list[bool] = []

        def hog() -> None:  # runnable the whole time: sysmon wants the P for it
            while not done:
                pass

        csp_mp.go_local(hog)
        writer = threading.Timer(0.3, os.write, (w, b"hello"))
        writer.start()
        buf = ctypes.create_string_buffer(16)
        n = libc.read(r, buf, 16)
        err = ctypes.get_errno()
        done.append(True)
        writer.join()
        return n, err, buf.raw[:max(n, 0)]

    preempt.start_recording()  # sysmon's trips, each a request for the handler
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", csp_mp.BlockingWarning)  # it does block the P
            n, err, data = csp_mp.run(main, procs=1)
    finally:
        trips = sum(1 for event in preempt.stop_recording() if event[2] == "trip")
        os.close(r)
        os.close(w)
    assert (n, data) == (5, b"hello"), (n, os.strerror(err))
    assert trips >= 3  # preemption was asked for while the call blocked
