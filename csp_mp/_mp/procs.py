"""P processes: starting them, watching them, stopping them, and the life of a worker P.

P0 (the user's process) creates the arena, the doorbells and the control block, starts P1..Pn-1
by forking itself when it can (``_can_fork``), else with the forkserver start method (csp_mp
preloaded, the user's ``__main__`` never re-run), and removes every name (``arena.seal()``) once
every P holds what it names: at once for forked Ps, which inherit it; for the fork server's, when
each has mapped the arena. From then on a SIGKILL of the whole tree leaves nothing in
``/dev/shm``. A monitor thread in P0 waits on the workers' sentinels and reports a death within
milliseconds, or has the zygote fork a new process for a P that died holding only executor tasks
(``replace.py``). A worker dies with P0: its parent is P0, or the forkserver, which exits when P0
does, and the worker asked for SIGKILL on its parent's death.

Invariants:
- Workers start before P0's hub runs any goroutine, from a process that has run none (P0 on its
  root greenlet with no other thread, or the forkserver), so no greenlet or M thread is ever
  forked.
- ``G_STOP`` is set before any worker is joined; a worker that exits after it is not "lost".
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import multiprocessing.spawn as mp_spawn
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from multiprocessing import reduction
from multiprocessing.connection import wait as mp_wait
from typing import Any

from greenlet import getcurrent

from .. import _hub
from .._hub import Hub, new_hub
from .._hub import sysmon as _sysmon  # noqa: F401 - loaded before Ps fork: none imports it again
from .._proc import proc as this_proc
from .._shm import Arena, Doorbell, cloud
from . import ctx as C
from . import demote, replace, tasks
from .broker import Broker, nlocks_for
from .promote import set_broker

ARENA_BYTES = int(os.environ.get("CSP_MP_ARENA_MB", "1024")) << 20
START_TIMEOUT = 30.0
MAXPROCS_MIN = 8  # gomaxprocs can grow a runtime up to max(procs, this)


@contextmanager
def _no_main_reimport():
    """Keep the user's ``__main__`` out of the preparation data: Ps never re-run it."""
    orig = mp_spawn.get_preparation_data

    def prep(name: str) -> dict:
        d = orig(name)
        d.pop("init_main_from_path", None)
        d.pop("init_main_from_name", None)
        return d

    mp_spawn.get_preparation_data = prep
    try:
        yield
    finally:
        mp_spawn.get_preparation_data = orig


_PRELOAD_IF_LOADED = ("numpy", "pandas", "scipy")


def _context() -> Any:
    """The forkserver start method. Its server starts once per process, with the modules to
    preload named before that: everything a P imports anyway, plus heavy libraries the user has
    already imported, so that a P starts as a fork of a warm process instead of importing them
    per run (naming them again once the server runs changes nothing)."""
    mctx = multiprocessing.get_context("forkserver")
    preload = ["csp_mp", "csp_mp._mp", "cloudpickle"]
    preload += [m for m in _PRELOAD_IF_LOADED if m in sys.modules]
    mctx.set_forkserver_preload(preload)
    return mctx


class _Fd:
    """A file descriptor handed to a P in its start arguments.

    ``reduction.DupFd`` must run while the process is being started (the fork server then sends
    the fd along); called any earlier it falls back to a resource-sharer thread and a connection
    back to P0 per fd, which is slow and fails when starts and stops come quickly.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple:
        return (_detach, (reduction.DupFd(self.fd),))


def _detach(dupfd: Any) -> int:
    return dupfd.detach()


def _can_fork() -> bool:
    """Whether P0 may start Ps by forking itself: one thread, on its root greenlet.

    A fork copies only the forking thread (a lock another thread holds stays held forever in the
    child) and every greenlet of it, so it is safe only before any M thread, sysmon or user
    thread exists. It starts a P in milliseconds and the P shares the user's modules as they are;
    otherwise Ps come from the fork server.
    """
    if os.environ.get("CSP_MP_START", "") == "forkserver" or not hasattr(os, "fork"):
        return False
    return threading.active_count() == 1 and getcurrent().parent is None


def _adopt_fds(arena: Arena, lifeline: Any, drop: tuple[int, ...]) -> int:
    """In a new P: the lifeline fd; a forked P also closes P0's pipe ends and reports itself
    attached (a P from the fork server did both while unpickling its arguments)."""
    if isinstance(lifeline, _Fd):  # forked: the arguments were not pickled
        for fd in drop:
            os.close(fd)
        arena._mark_attached()
        return lifeline.fd
    return lifeline


class Runtime:
    """P0's handle on a running multi-P runtime.

    Besides P1..Pn-1 it starts a zygote: a single-threaded process holding the arena and every
    doorbell, which forks further Ps when ``gomaxprocs`` grows the runtime, and a new process for
    a P the watcher replaces (after start-up the semaphores have no names, so a new process can
    only inherit them).
    """

    def __init__(self, nprocs: int) -> None:
        self.nprocs = nprocs
        self.maxprocs = max(nprocs, MAXPROCS_MIN)
        #: called by ``stop`` once the other Ps are gone, before the arena closes
        self.before_close: Callable[[], None] | None = None
        self.arena = Arena.create(ARENA_BYTES, nlocks_for(self.maxprocs))
        self.procs: list[Any] = []
        self.forked: dict[int, tuple[int, int]] = {}  # P -> (pid, pidfd) of zygote children
        #: P0's side of a replaced P (replace.py): called with ``(q, dead pid, task keys)``
        self.on_replaced: Callable[[int, int, list[int]], None] | None = None
        self._grow_lock = threading.Lock()  # grow() and a replacement both ask the zygote
        self._lifeline = -1
        self._requests = -1
        self.monitor: threading.Thread | None = None
        self._stop_monitor = threading.Event()
        try:
            self.bells = [Doorbell.create(self.arena) for _ in range(self.maxprocs)]
            try:
                self.ctx = C.Ctx.create(self.arena, self.maxprocs, nprocs, self.bells)
            except MemoryError as exc:
                raise MemoryError(
                    f"CSP_MP_ARENA_MB={ARENA_BYTES >> 20} is too small for a runtime of up to "
                    f"{self.maxprocs} Ps (each P's queues take about 4 MiB of it): {exc}"
                ) from exc
            self._start_workers()
        except BaseException:
            self.close()
            raise

    def _start_workers(self) -> None:
        forked = _can_fork()
        mctx = multiprocessing.get_context("fork") if forked else _context()
        # A pipe whose write end only P0 holds: a worker reading EOF knows P0 is gone, however
        # it went (the forkserver outlives P0 while workers hold its alive fd).
        r, self._lifeline = os.pipe()
        zr, self._requests = os.pipe()
        # a forked P inherits P0's fds: it must drop P0's ends of those pipes
        drop = (self._lifeline, self._requests) if forked else ()
        try:
            with _no_main_reimport():
                for p in range(1, self.nprocs):
                    proc = mctx.Process(
                        target=worker_main, name=f"csp_mp-P{p}", daemon=True,
                        args=(self.bells, self.arena, self.ctx.off, p, _Fd(r), drop))
                    proc.start()
                    self.procs.append(proc)
                zygote = mctx.Process(
                    target=zygote_main, name="csp_mp-zygote", daemon=True,
                    args=(self.bells, self.arena, self.ctx.off, _Fd(r), _Fd(zr), drop))
                zygote.start()
                self.zygote = zygote
        finally:
            os.close(r)
            os.close(zr)
        # A forked P (and the zygote) inherits the mappings and the opened semaphores, so the
        # names can go at once and P0 runs on while its Ps start; one from the fork server
        # opens them by name as it unpickles its arguments: they go once every P has
        if not forked and not self.arena.wait_attached(self.nprocs, START_TIMEOUT):
            raise RuntimeError("csp_mp: worker processes did not start in time")
        self.arena.seal()
        self.monitor = threading.Thread(target=self._watch, name="csp_mp-monitor", daemon=True)
        self.monitor.start()

    def grow(self, n: int) -> None:
        """Start Ps until ``n`` exist (P0 only; the zygote forks them)."""
        with self._grow_lock:
            self._grow(n)

    def _grow(self, n: int) -> None:
        ctx = self.ctx
        if n > self.maxprocs:
            raise ValueError(f"gomaxprocs: at most {self.maxprocs} Ps in this runtime")
        started = ctx.gload(C.G_NPROCS)
        for q in range(started, n):
            ctx.store(ctx.pidx(q, C.P_PID), 0)
            ctx.store(ctx.pidx(q, C.P_STATUS), C.RUNNING)
            os.write(self._requests, q.to_bytes(4, "little"))
            deadline = time.monotonic() + START_TIMEOUT
            while not ctx.pload(q, C.P_PID):
                if time.monotonic() > deadline or not self.zygote.is_alive():
                    raise RuntimeError(f"csp_mp: P{q} did not start")
                time.sleep(0.001)
            pid = ctx.pload(q, C.P_PID)
            self.forked[q] = (pid, os.pidfd_open(pid))
            ctx.gstore(C.G_NPROCS, q + 1)

    def _watch(self) -> None:
        watched = {proc.sentinel: i + 1 for i, proc in enumerate(self.procs)}
        seen: set[int] = set()
        while not self._stop_monitor.is_set():
            for q, (_pid, fd) in list(self.forked.items()):
                if fd not in seen:
                    seen.add(fd)
                    watched[fd] = q
            ready = mp_wait(list(watched) + [self.zygote.sentinel], timeout=0.1)
            for s in ready:
                if self.ctx.gload(C.G_STOP) or self._stop_monitor.is_set():
                    return
                if s == self.zygote.sentinel:
                    continue  # only matters if a P must be grown (grow() reports it)
                p = watched.pop(s)
                if self._replace(p):
                    seen.discard(s)  # (its number may come back as a later pidfd's)
                    continue  # the run goes on: a new process is P p
                self.ctx.gstore(C.G_LOST, p + 1)
                self.bells[0].ring()
                return

    def _replace(self, q: int) -> bool:
        """Replace P ``q``, just dead, if it held only executor tasks (replace.py); False when
        its loss must end the run instead."""
        ctx = self.ctx
        pid = ctx.pload(q, C.P_PID)
        try:
            with self._grow_lock:
                if not replace.recoverable(ctx, q, pid) or not self.zygote.is_alive():
                    return False
                keys = [key for _owner, key in replace.tasks_of(ctx, q)]
                replace.reset(ctx, q)
                os.write(self._requests, q.to_bytes(4, "little"))
                new = replace.wait_started(ctx, q, self.zygote.is_alive, START_TIMEOUT)
                if not new:
                    ctx.q[ctx.pidx(q, C.P_PID)] = pid  # the loss report names the dead one
                    return False
                old = self.forked.get(q)
                self.forked[q] = (new, os.pidfd_open(new))
                if old is not None:
                    os.close(old[1])
        except OSError:  # the zygote's pipe closed, the new process already gone: the run ends
            return False
        if self.on_replaced is not None:
            self.on_replaced(q, pid, keys)
        return True

    def stop(self) -> None:
        """Stop every worker (politely, then SIGKILL) and free everything."""
        ctx = self.ctx
        ctx.gstore(C.G_STOP, 1)
        for bell in self.bells:
            bell.ring()
        self._stop_monitor.set()
        self._close_lifeline()
        deadline = time.monotonic() + 1.0
        with self._grow_lock:  # a replacement under way ends first (it sees G_STOP)
            forked = list(self.forked.values())
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for _pid, fd in forked:
            mp_wait([fd], timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for pid, _fd in forked:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.join(1.0)
        if self.monitor is not None:
            self.monitor.join(1.0)
        try:
            if self.before_close is not None:
                self.before_close()  # the Ps are gone, the arena still mapped
        finally:
            self.close()

    def _close_lifeline(self) -> None:
        for name in ("_lifeline", "_requests"):
            fd = getattr(self, name)
            setattr(self, name, -1)
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        self._close_lifeline()
        zygote = getattr(self, "zygote", None)
        for proc in self.procs + ([zygote] if zygote is not None else []):
            try:
                if proc.is_alive():
                    proc.kill()
                proc.join(1.0)
                proc.close()
            except ValueError:
                pass  # already closed
        for pid, fd in self.forked.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(fd)
        self.forked.clear()
        try:
            self.arena.seal()
        except RuntimeError:
            pass
        self.arena.close()


def running() -> Runtime | None:
    """P0's running runtime (None in other Ps and outside a multi-P run)."""
    return this_proc.runtime


def start_p0(nprocs: int) -> tuple[Runtime, Hub, Broker]:
    """Start the Ps and make the calling process P0 with a fresh hub."""
    rt = Runtime(nprocs)
    this_proc.runtime = rt
    hub = new_hub(0)
    hub.nprocs = nprocs
    C.set_current(rt.ctx)
    broker = Broker(rt.ctx, hub)
    hub.broker = broker
    set_broker(broker)
    tasks.install()
    _hub.set_current(hub)
    rt.before_close = functools.partial(demote.demote_all, broker)
    rt.on_replaced = functools.partial(_replaced, hub)
    return rt, hub, broker


def _replaced(hub: Hub, q: int, pid: int, keys: list[int]) -> None:
    """From the watcher thread: P ``q`` (process ``pid``) was replaced; its executor tasks'
    owners learn it on P0's hub thread (``proc.on_tasks_lost``)."""

    def tell() -> None:
        for hook in this_proc.on_tasks_lost:
            hook(keys, replace.lost_error(q, pid, keys))

    hub.post(tell)


def stop_p0(rt: Runtime) -> None:
    """Undo ``start_p0`` whatever happened."""
    try:
        rt.stop()
    finally:
        this_proc.stop()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _watch_lifeline(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os._exit(0 if (C.current() is not None and C.current().stopping) else 1)


def worker_main(bells: list[Doorbell], arena: Arena, ctl_off: int, p: int, lifeline: Any,
                drop: tuple[int, ...]) -> None:
    """Body of P1..Pn-1 started by P0: a hub with a broker, until P0 says stop (or is gone).

    The doorbells come first in the arguments: they are opened by name while unpickling, and the
    arena, unpickled after them, is what tells P0 this process is attached and the names may go.
    """
    _worker_body(arena, ctl_off, p, bells, _adopt_fds(arena, lifeline, drop))


def zygote_main(bells: list[Doorbell], arena: Arena, ctl_off: int, lifeline: Any,
                requests: Any, drop: tuple[int, ...]) -> None:
    """Wait for "start P q" requests from P0 and fork each new P (single-threaded, no hub)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    lfd = _adopt_fds(arena, lifeline, drop)
    rfd = requests.fd if isinstance(requests, _Fd) else requests
    while True:
        ready, _, _ = select.select([lfd, rfd], [], [])
        if lfd in ready and not os.read(lfd, 1):
            os._exit(0)
        if rfd in ready:
            data = os.read(rfd, 4)
            if len(data) < 4:
                os._exit(0)
            q = int.from_bytes(data, "little")
            if os.fork() == 0:
                try:
                    os.close(rfd)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _worker_body(arena, ctl_off, q, bells, lfd)
                finally:
                    os._exit(1)


def _worker_body(arena: Arena, ctl_off: int, p: int, bells: list[Doorbell], lifeline: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is P0's to handle
    cloud.begin_worker()  # module globals: this P's own from here on
    threading.Thread(target=_watch_lifeline, args=(lifeline,), name="csp_mp-lifeline",
                     daemon=True).start()
    ctx = C.Ctx(arena, ctl_off, p, bells)
    C.set_current(ctx)
    hub = new_hub(p)
    hub.nprocs = ctx.nprocs
    broker = Broker(ctx, hub)
    hub.broker = broker
    set_broker(broker)
    tasks.install()
    this_proc.task_done = broker.task_table.done
    _hub.set_current(hub)
    code = 0
    try:
        out = hub.run_until_done()
        if out.kind in ("panic", "interrupt") and out.error is not None:
            broker.report_panic(out.error)
            deadline = time.monotonic() + 5.0
            while not ctx.stopping and time.monotonic() < deadline:
                if broker.outbox:
                    broker.flush_outbox()
                ctx.bell.wait(0.05)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        ctx.pstore(C.P_STATUS, C.EXITED)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
