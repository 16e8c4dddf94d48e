"""The hub: one P's scheduler, a greenlet on the P's main thread.

Only the hub switches greenlets: ``park()`` is the one way out of a goroutine and ``ready()``
the one way back in; ``post()`` is the one way in from other threads. Goroutine bodies run on
pooled worker greenlets, and their end is handled there (workers.py, whose methods the hub
inherits); ``stack_text`` is dumps.py's, the run's ``Outcome`` outcome.py's, the waker an idle
hub waits on ports.py's, the collector's pace while it runs gcpace.py's.

Scheduling (Go's ``schedule``): ``ready()`` applies the one scheduling rule as it queues a
goroutine (``runnext`` first, with a bound on how long the run queue waits for it), and
``runqget()`` takes the next one. A goroutine that stops running (it parks, or it ends on its
worker) switches straight into that next one; every 16th switch (``tick``), and whenever
``poll_now`` asks, it switches to the hub instead, whose pass (``_find_runnable``) runs posted
calls, due timers and the broker's poll before it takes the next goroutine. ``gosched`` always
goes through the hub.

Invariants:
- Exactly one greenlet of this thread runs at a time: the hub or the goroutine in ``current``.
- A G is in at most one of: ``runq``, ``runnext``, parked (state WAITING), running.
- ``pending_blocking`` counts calls handed to M threads whose completion has not been drained.
- ``outcome`` once set never changes; the loop then stops every goroutine and returns it.
- ``inbox`` holds only calls and M threads' ``(g, ok, value)`` completions, put there by
  ``post`` (any thread: a deque append, then ``poll_now`` set, then ``waker`` posted, each step
  atomic under the GIL), and taken by the hub's pass.
- Every other field is owned by the hub thread (its goroutines, the hub greenlet, and the
  signal handlers that run there: preemption sets ``poll_now``, Ctrl-C ``interrupt_pending``).
  Other threads only read ``tick``, ``current``, ``stopping``, ``driven`` and what ``has_work``
  reads (sysmon, drive.py).
- Fields other modules set, each a stated part of the hub's interface: ``nprocs``, ``broker``
  and ``main_g`` by whoever creates the hub (``_run.py``, ``_mp/procs.py``, ``_mp/__init__.py``),
  ``nprocs`` also by ``runtime.gomaxprocs``; ``outcome`` by whoever ends the run, on the hub
  thread (the broker's ``poll`` and ``idle`` and its parts, a sysmon report); ``poll_now``
  (the broker, preempt.py, drive.py, sysmon.py); ``driven`` (drive.py); ``interrupt_pending``
  (interrupt.py); ``sysmon`` (sysmon.py); ``all_blocked`` (quiet.py); ``instruments``,
  ``picker`` and ``runnext`` (hooks.py, as it installs an instrument). The waker, the network
  poll (a cluster node's) and the goroutine ids (a multi-P runtime's shared batches) are set
  through ``use_waker``, ``use_netpoll`` and ``use_ids``.

Design notes: the main goroutine of the implicit runtime is the thread's root greenlet itself, so
user code at top level runs unchanged and blocks by switching into the hub. ``run()`` instead runs
``main`` on a worker and waits in the root greenlet for the loop to return its outcome.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from sys import _getframe
from types import FrameType
from typing import Any, Protocol

from greenlet import getcurrent, greenlet

from .._errors import DeadlockError, GoroutineExit, InternalError
from .._proc import proc
from . import dumps, gcpace, interrupt, quiet
from .doors import Doors
from .g import DEAD, RUNNABLE, RUNNING, WAITING, G, record_class, recorder, root_body
from .mthreads import MThreadPool
from .outcome import Outcome, outcome_error
from .ports import Completion, Waker, Wakes, wrong_context
from .timers import TimerHeap
from .workers import Workers

_RUNNEXT_STREAK_MAX = 64  # goroutines put in runnext before the waiting run queue's turn


class Broker(Protocol):
    """What the multi-process layer plugs into a hub (registered by ``_mp``; None for one P)."""

    def poll(self, hub: Hub) -> bool:
        """Take wake-ups and work from other Ps without blocking; True if any arrived."""

    def idle(self, hub: Hub, timeout: float | None, local_can_wake: bool) -> None:
        """Park this P until rung or ``timeout``; may set ``hub.outcome`` (deadlock, lost P)."""

    def place(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        """Queue a new migratable goroutine where other Ps can take it (the hub's ``go``)."""

    def steal(self, hub: Hub) -> bool:
        """Take queued goroutines from another P without blocking; True if any came."""

    def work_waiting(self) -> bool:
        """Whether this P has work from other Ps to take (any thread: reads only)."""

    def wakes_pending(self) -> bool:
        """Whether a wake-up between Ps is on its way (queued, or sent and not handled)."""

    @property
    def seq(self) -> int:
        """How many ``go()`` calls this P has framed so far (the seq of the last frame)."""


class NetPoll(Protocol):
    """What a cluster node plugs into its hub to read other nodes' frames (``_cluster``)."""

    def poll(self) -> None:
        """(owner thread) Read what other nodes sent, without blocking."""

    def waiting(self) -> bool:
        """(any thread: reads only) Whether frames from other nodes wait to be read."""


class Hub(Workers, Doors):
    """The scheduler of one P. Owner thread only, unless a method says otherwise."""

    # Its fields are slots: a hub has more of them than an instance dict keeps in the fast
    # shared-key form, and park/ready read and write several on every switch. (Workers gives
    # it a __dict__ too, which stays empty: no module adds fields, nor replaces a method.)
    __slots__ = ("p", "thread_id", "root", "hub_glet", "runq", "runnext", "fresh", "_streak",
                 "timers", "allgs", "_ids", "_free", "current", "inbox", "waker",
                 "pending_blocking", "outcome", "stopping", "main_g", "broker", "placer", "go",
                 "instruments", "picker", "mpool", "tick", "select_rng", "hooks_on_stop",
                 "nprocs", "_gc_saved", "no_preempt", "poll_now", "preempted",
                 "interrupt_pending", "sysmon", "all_blocked", "n_created", "n_blocking",
                 "n_xops", "n_xbytes", "driven", "made_here", "netpoll", "_G")

    def __init__(self, p: int = 0) -> None:
        self.p = p
        self.thread_id = threading.get_ident()
        self.root = getcurrent()
        self.hub_glet = greenlet(self._loop, parent=self.root)
        self.runq: deque[G] = deque()
        self.runnext: G | None = None
        # goroutines made from task frames (stolen, or this P's own queued ones) and not started
        # yet: one starts when nothing else is runnable, or at every FRESH_EVERY-th pass
        # (runqget); until then the broker may hand them back to the queue between Ps, so that
        # an idle P takes them (a started one never moves)
        self.fresh: deque[G] = deque()
        self._streak = 0  # goroutines put in runnext while the run queue waited (ready)
        self.timers = TimerHeap()
        self.allgs: dict[int, G] = {}
        # goroutine ids 1, 2, 3...; with several Ps, batches unique in the runtime (the
        # broker's: ctx.goids)
        self._ids: Iterator[int] = itertools.count(1)
        self._G = record_class()  # the goroutine records' class (g.py)
        self._free: list[greenlet] = []  # parked worker greenlets (workers.py)
        self.current: G | None = None
        self.inbox: deque[Callable[[], object] | Completion] = deque()  # post()
        self.waker: Wakes = Waker()  # use_waker
        self.pending_blocking = 0
        self.outcome: Outcome | None = None
        self.stopping = False
        self.main_g: G | None = None
        self.broker: Broker | None = None
        #: reads what other nodes sent, without blocking, in the pass (use_netpoll)
        self.netpoll: NetPoll | None = None
        #: what ``go`` hands a goroutine that may run on any P: the broker's (set_placer), else
        #: a goroutine of this P
        self.placer: Callable[[Callable[..., Any], tuple, dict], Any] = self._go_here
        #: go(fn, args, kwargs): start a goroutine that may run on any P; the placer itself, or
        #: the instrumented variant while instruments are installed (bind_go)
        self.go: Callable[[Callable[..., Any], tuple, dict], Any] = self._go_here
        #: the tools watching this hub (hooks.py), and the one deciding the order, if any
        self.instruments: tuple = ()
        self.picker: Callable[[deque], G] | None = None
        self.mpool = MThreadPool()
        self.tick = 0
        self.select_rng = random.Random()  # which ready case a select takes
        self.hooks_on_stop: list[Callable[[], None]] = []
        self.nprocs = 1
        self._gc_saved: tuple[int, ...] | None = None
        self.no_preempt = 0  # > 0: the running goroutine holds a runtime lock; never preempt it
        # the next switch goes through the hub's pass, which runs timers and polls the broker
        # (set by post, preemption, drive.py, the broker's queued wake-ups)
        self.poll_now = False
        self.preempted: G | None = None  # switched out by preemption, queued at the next pass
        self.interrupt_pending = False  # a Ctrl-C deferred out of runtime code (interrupt.py)
        self.sysmon: Any = None  # this P's sysmon (sysmon.py), while the loop runs
        self.all_blocked: list[G] = []  # parked in testing.wait_all_blocked (quiet.py)
        # runtime.metrics() counters: plain ints, owner P only (published by _mp/counters.py)
        self.n_created = 0  # goroutines started here (go, go_local, main)
        self.n_blocking = 0  # calls handed to M threads
        self.n_xops = 0  # sends and receives on shared (cross-P) channels
        self.n_xbytes = 0  # encoded bytes sent on shared channels
        # the implicit main goroutine, parked by drive.py while its thread waits in plain code
        self.driven: G | None = None
        #: made_here(frame, creator id): G.made of a goroutine made here, the user's call that
        #: made it (go(), go_local, errgroup, the executor: G.created_by)
        self.made_here = recorder()

    def owns_main_thread(self) -> bool:
        """True when called on the main thread and this hub runs there: the only thread where
        Python signal handlers run (preemption and Ctrl-C handling need it)."""
        return (threading.current_thread() is threading.main_thread()
                and threading.get_ident() == self.thread_id)

    def use_waker(self, waker: Wakes) -> None:
        """Wake this hub with ``waker`` from now on (the broker's: the P's doorbell, which other
        Ps ring too; a node's poller). Before the loop runs, or on the hub thread by a waker
        whose wait returns at once while ``inbox`` holds entries (a post may reach the old one)."""
        self.waker = waker

    def use_netpoll(self, netpoll: NetPoll) -> None:
        """Poll ``netpoll`` in the pass, as often as the broker (owner thread): a node's poller
        reads its links there while the hub is busy, and frames waiting count as work."""
        self.netpoll = netpoll

    def use_ids(self, ids: Iterator[int]) -> None:
        """Number the goroutines created from now on from ``ids`` (a P of a multi-P runtime:
        batches of a counter every P shares). Before the loop runs."""
        self._ids = ids

    # ----------------------------------------------------------------- goroutines in and out

    def new_g(self, fn: Callable[..., Any], args: tuple, kwargs: dict, local: bool) -> G:
        """Create a goroutine record (not yet queued)."""
        g = self._G(next(self._ids), fn, args, kwargs, self.p, local)
        self.allgs[g.id] = g
        return g

    def new_gs(self, made: list[tuple[Callable[..., Any], tuple, Any]]) -> list[G]:
        """``new_g(fn, args, {}, False)`` for each ``(fn, args, made)`` (goroutines that came
        from task frames: ``made`` is their ``G.made``), in one call."""
        return self._G.many(self._ids, self.allgs, self.p, made)

    def spawn(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
              local: bool = True) -> G | None:
        """Start a goroutine on this P (or offer it to the broker when not ``local``); its G, or
        None when the broker took it."""
        return self._spawn(fn, args, kwargs, local, _getframe(1))

    def _spawn(self, fn: Callable[..., Any], args: tuple, kwargs: dict | None, local: bool,
               at: FrameType) -> G | None:
        """``spawn``, called under frame ``at``: the user's call that made the goroutine is
        there or further out (G.made; the caller passes the user's frame when it knows it)."""
        if self.stopping:
            return None
        if not local and self.broker is not None:
            self.broker.place(fn, args, kwargs or {})
            return None  # queued where other Ps can steal it; it gets a G where it runs
        self.n_created += 1  # (the broker counts what it queues: its seq)
        g = self.new_g(fn, args, kwargs or {}, local)
        cur = self.current
        g.made = self.made_here(at, cur.id if cur is not None else 0)
        self.runq.append(g)
        return g

    def _go_here(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self._spawn(fn, args, kwargs, False, _getframe(2))  # at go()'s caller

    def set_placer(self, placer: Callable[[Callable[..., Any], tuple, dict], Any]) -> None:
        """Make ``placer`` what ``go`` hands goroutines that may run on any P (the broker's)."""
        self.placer = placer
        self.bind_go()

    def bind_go(self) -> None:
        """Point ``go`` at the placer, or at the instrumented variant while instruments run."""
        self.go = self.placer if not self.instruments else self.go_hooked  # type: ignore[attr-defined]
        self.aim_go_entry()

    def aim_go_entry(self) -> None:
        """Point the compiled ``go()`` (``proc.go_entry``) at the Spawner this hub hands
        ``go()`` to while it is this process's hub, else at nothing (it then calls the Python
        ``go()``, which asks the hub)."""
        entry = proc.go_entry
        if entry is not None:
            # (the entry keeps only a Spawner: a Python placer's __self__ is stored as None)
            entry.target = getattr(self.go, "__self__", None) if proc.hub is self else None

    def spawn_local(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        """``spawn(..., local=True)`` without the checks a pinned goroutine does not need."""
        if self.stopping:
            return
        self.n_created += 1
        g = self._G(next(self._ids), fn, args, kwargs, self.p, True)
        try:
            gid = self.current.id  # type: ignore[union-attr]
        except AttributeError:  # no goroutine runs: the hub's pass (a timer's callback)
            gid = 0
        g.made = self.made_here(_getframe(2), gid)  # go_local's caller
        self.allgs[g.id] = g
        self.runq.append(g)

    def adopt_root_as_main(self) -> G:
        """Make the calling (root) greenlet the main goroutine: the implicit runtime."""
        g = self.new_g(root_body, (), {}, True)
        self.n_created += 1
        g.glet = self.root
        g.state = RUNNING
        g.is_main = True
        g.name = "main"
        self.main_g = g
        self.current = g
        return g

    def ready(self, g: G, value: Any = None, next_: bool = True) -> None:
        """Make a parked goroutine runnable, handing it ``value`` as park()'s result.

        With ``next_`` (from a goroutine), it runs next (``runnext``), so that a hand-off runs
        its partner at once; a goroutine it displaces from ``runnext`` keeps its turn at the
        run queue's tail. The scheduling rule, written here only: of the goroutines put in
        ``runnext`` while the run queue waits, every ``_RUNNEXT_STREAK_MAX + 1``-th joins the
        queue's tail instead, so the queue's head runs after at most that many hand-offs.

        Called from the owner thread only (goroutines, the hub, timer callbacks).
        """
        if g.state != WAITING:
            raise InternalError(f"ready of {g!r}, which is not waiting")
        g.state = RUNNABLE
        g.param = value
        runq = self.runq
        if not next_ or self.current is None:
            runq.append(g)
            return
        old = self.runnext
        if old is not None:
            runq.append(old)
        if not runq:
            self.runnext = g
        elif self._streak < _RUNNEXT_STREAK_MAX:
            self._streak += 1
            self.runnext = g
        else:
            self._streak = 0  # runnext had its streak: the run queue's head goes first
            self.runnext = None
            runq.append(g)

    def park(self, reason: str) -> Any:
        """Park the current goroutine until ``ready()``; return the value it was readied with."""
        g = self.current
        if g is None or getcurrent() is not g.glet:
            raise wrong_context(self.thread_id, self.hub_glet)
        if self.stopping:
            raise GoroutineExit()
        g.state = WAITING
        g.reason = reason
        # Every 16th switch, and whenever asked (poll_now), the switch goes through the hub's
        # pass, which counts it; else straight into the next goroutine: runqget's, with its
        # first case inlined (a readied goroutine has parked: it has its greenlet)
        tick = self.tick + 1
        nxt = self.runnext
        if not tick & 15 or self.poll_now:
            v = self.hub_glet.switch()
        elif nxt is not None:
            self.runnext = None
            self.tick = tick
            self.current = nxt
            nxt.state = RUNNING
            v = nxt.glet.switch()
        else:
            nxt = self.runqget()
            if nxt is None:
                v = self.hub_glet.switch()
            else:
                self.tick = tick
                v = self._switch_to(nxt)
        if type(v) is Outcome:  # the loop ended while the implicit main goroutine was parked
            raise outcome_error(v)
        # the value ready() handed over waits in g.param, never on a switch's arguments: a
        # parked goroutine's frame would keep what it passed on alive until it resumes
        v = g.param
        g.param = None
        return v

    def runqget(self) -> G | None:
        """Take the next goroutine to run (Go's ``runqget``): ``runnext``, else the run
        queue's head, else the oldest not-started goroutine made from a task frame (``fresh``);
        None when all are empty. Every ``FRESH_EVERY``-th pass takes ``fresh`` first, as Go's
        scheduler looks at its global queue every 61st tick: goroutines that switch often run
        the fresh ones within microseconds, while a CPU-bound one preempted each time slice
        lets a fresh one start beside it only after about ``FRESH_EVERY`` slices (by then an
        idle P has taken it). Owner thread."""
        g = self.runnext
        if g is not None:
            self.runnext = None
            return g
        runq = self.runq
        if runq:
            if self.fresh and not self.tick % FRESH_EVERY:
                return self.fresh.popleft()
            return runq.popleft()
        fresh = self.fresh
        return fresh.popleft() if fresh else None

    def gosched(self, preempted: bool = False) -> None:
        """Yield the P: the current goroutine goes to the back of the run queue (``preempted``:
        also behind what the hub's next pass makes ready, a due timer's goroutine say)."""
        g = self.current
        if g is None or getcurrent() is not g.glet:
            raise wrong_context(self.thread_id, self.hub_glet)
        if self.stopping:
            raise GoroutineExit()
        g.state = RUNNABLE
        if preempted:
            self.preempted = g  # queued by the hub's pass, after timers and the broker ran
            v = self.hub_glet.switch()
        else:
            self.runq.append(g)
            # as park() does: every 16th switch, and whenever asked, through the hub's pass;
            # else straight into the next goroutine (itself when nothing else is runnable)
            tick = self.tick + 1
            nxt = self.runqget() if tick & 15 and not self.poll_now else None
            if nxt is None:  # (also with a picker installed: it picks in the hub's pass)
                v = self.hub_glet.switch()
            else:
                self.tick = tick
                if nxt is g:
                    g.state = RUNNING
                    return
                v = self._switch_to(nxt)
        if type(v) is Outcome:
            raise outcome_error(v)

    # ----------------------------------------------------------------- the loop

    def run_until_done(self) -> Outcome:
        """From the root greenlet: run the loop until it ends; return its outcome."""
        out = self.hub_glet.switch()
        if type(out) is not Outcome:
            raise InternalError(f"hub returned {out!r}")
        return out

    def _stop_placing(self) -> None:
        """The hub stops: ``stopping`` set, and ``go`` handed to ``spawn``, which starts nothing
        from now on (so a placer, the compiled core's Spawner among them, need not check)."""
        self.stopping = True
        self.placer = self._go_here
        self.bind_go()

    def request_stop(self) -> Outcome | None:
        """From the root greenlet: stop every goroutine and end the loop (implicit runtime)."""
        if self.outcome is None:
            self.outcome = Outcome("stop")
        if self.hub_glet.dead:
            return self.outcome
        if not self.hub_glet:  # never started: nothing ran, nothing to unwind
            self._stop_placing()
            self._finish()
            return self.outcome
        out = self.hub_glet.switch()
        return out if type(out) is Outcome else self.outcome

    def _loop(self, *_: Any) -> Outcome:
        # (a worker that ends the run before the loop ever ran starts it by returning into
        # it, its parent, with its return value: the loop then ends at once with the outcome)
        from .sysmon import start_sysmon  # loaded with the first hub that runs, not on import

        runq = self.runq
        start_sysmon(self)  # preemption and blocking reports; stopped by a hooks_on_stop entry
        if interrupt.install(self):  # Ctrl-C never lands inside the runtime's own code
            self.hooks_on_stop.append(lambda: interrupt.uninstall(self))
        self._gc_saved = gcpace.raise_threshold()
        try:
            while self.outcome is None:
                g = self._find_runnable(runq)
                if g is None:
                    if self.outcome is None:
                        self._idle()
                    continue
                self.current = g
                g.state = RUNNING
                glet = g.glet
                if glet is None:
                    glet = self._free.pop() if self._free else greenlet(self._worker, self.hub_glet)
                    g.glet = glet
                    glet.switch(g)
                else:
                    glet.switch()  # park() takes its value from g.param
                self.current = None
        finally:
            self._stop_placing()
            self._kill_all()
            self._finish()
        return self.outcome

    def _find_runnable(self, runq: deque) -> G | None:
        """The hub's pass (Go's ``findRunnable``): run posted calls, and every 16th switch, when
        asked (``poll_now``) or when nothing is runnable, due timers and the broker's poll; the
        node's network poll when asked (sysmon asks when frames wait) and after a preemption
        (an idle hub's wait reads the links; a poll gives up the GIL, which costs a busy hub
        more than the poll); then
        the next goroutine (``runqget``, or the picker of an instrumented hub), or None."""
        self.tick += 1
        poll = self.poll_now
        self.poll_now = False  # before the drain: an M thread's later post sets it again
        if self.inbox:
            self._drain_inbox()
            if self.outcome is not None:  # a posted call ended the run (Ctrl-C, a report)
                return None
        preempted = self.preempted is not None
        busy = runq or self.runnext or self.fresh or preempted
        if self.tick & 15 == 0 or poll or preempted or not busy:
            self.timers.run_due()
            if self.broker is not None:
                self.broker.poll(self)
            if self.netpoll is not None and busy and (poll or preempted):
                self.netpoll.poll()
        if self.preempted is not None:
            runq.append(self.preempted)
            self.preempted = None
        elif not runq and self.runnext is None and self.fresh:
            runq.append(self.fresh.popleft())
        if self.picker is not None:  # a scheduler that decides the order (hooks.py)
            return self.picker(runq) if runq else None
        return self.runqget()

    def _idle(self) -> None:
        if self.driven is not None:  # its thread waits in plain code: hand it back, not sleep
            if self.broker is None or not self.broker.steal(self):
                self.release_driven()
            return
        delay = self.timers.next_delay()
        if not self.pending_blocking and not self.inbox and quiet.on_quiet(self, delay):
            return  # all durably blocked: wait_all_blocked callers run, or fake time moved
        local_can_wake = delay is not None or self.pending_blocking > 0 or bool(self.inbox)
        if self.broker is not None:
            self.broker.idle(self, delay, local_can_wake)
            return
        if not local_can_wake:
            self.outcome = Outcome("deadlock", error=DeadlockError(stack=self.stack_text()))
            return
        if delay is None or delay > 0:
            self.waker.wait(delay)

    def release_driven(self) -> None:
        """Give the thread back to the main goroutine that drive.py parked (owner thread)."""
        g = self.driven
        if g is None:
            return
        self.driven = None
        if g.state == WAITING:
            self.ready(g)

    def _finish(self) -> None:
        self.timers.clear()
        gcpace.restore(self._gc_saved)
        self._gc_saved = None
        for hook in self.hooks_on_stop:
            try:
                hook()
            except Exception:  # a failing hook must not hide the outcome
                traceback.print_exc()
        self.mpool.shutdown()

    # ----------------------------------------------------------------- introspection

    def num_goroutine(self) -> int:
        """Live goroutines on this P."""
        return len(self.allgs)

    def stack_text(self) -> str:
        """Every goroutine of this P: id, P, state, wait reason and Python stack (Go's format)."""
        return dumps.stack_text(self.allgs.values(), sys._getframe(1))


#: passes of the hub between two looks at ``fresh`` before the run queue (runqget)
FRESH_EVERY = 61



__all__ = ["Hub", "Outcome", "Broker", "G", "RUNNABLE", "RUNNING", "WAITING", "DEAD"]
