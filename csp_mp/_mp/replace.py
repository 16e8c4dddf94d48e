"""Replacing a P that died while it ran only executor tasks.

A P that dies ends the run (``ProcessLost``) unless everything it held was executor tasks: then
P0 fails those tasks' futures with ``ProcessLost`` and starts a new process for the same P
number, and the run goes on (SPEC: executor and map). Deciding that needs facts the dead
process published before it died, in its control-block words (``ctx.py``):

- ``P_DIRTY``: 1 while the P may hold anything but executor tasks: a goroutine started on it
  (``spawn``, ``spawn_local``, ``go``), a frame it stole that is not a task, frames in hand
  during a steal. A worker P starts clean; the first such event soils it, and it is clean again
  only when it has no goroutine and nothing queued (``at_idle``). While a P is clean an
  instrument on its hub (``_Soiler``, on the ``spawning`` hook point) soils it before a
  goroutine is started from it; it leaves the hub once the P is soiled (no cost then, and none
  on P0, which is never replaced). A steal soils the P while it makes the stolen frames'
  goroutines (no instrument sees those), and leaves it clean if every one is an executor task.
  ``TaskTable`` is this P's side of these words.
- ``P_OWES``: 1 while WAKE messages for other Ps (or an inbox's overflow) wait in this
  process, and from before a channel hand-off claims a waiter until its wake-up is queued or
  in an inbox (on both paths): their loss would leave goroutines elsewhere parked for ever.
- The task table (``P_TASKS``, ``TASK_SLOTS`` entries ``(owner pid, key)``): each executor task
  this P adopted and has not finished (``TaskTable.adopted``/``done``). More tasks than slots
  soil it.
  An executor task is a goroutine whose function has a true ``executor_task`` attribute and
  takes ``(key, owner pid, ...)`` (the executor's, a layer above, marks its own).

P0's watcher (``procs.Runtime._watch``) asks ``recoverable``: the dead P is not P0, the run is
not stopping, it held at least one task, it was clean and owed nothing, the allocator is sound
(``Arena.allocator_sound``: a holder of its lock killed outside a change of the free lists left
nothing torn), no lock guarding shared state is held by a dead process or was ever taken over from
one (the state may be torn: ``Arena.takeovers``, the compiled core's robust mutexes, the Python
path's owner words; the inbox and run-queue locks need no repair), and every task's owner is
P0. Then ``reset`` clears the P's words, token table and task table and raises its goroutine-id
floor (``P_GFLOOR``), the zygote forks a new process for it, and P0's hub runs the
``proc.on_tasks_lost`` hooks (the executor's futures) with the keys the dead P held.

Invariants:
- Goroutine ids come in batches from the runtime's one counter (``ctx.G_GOIDS``), which only
  grows: every id a process was given is at most the counter's value when it died, and every
  id its successor takes is above it; ``P_GFLOOR`` holds that value plus one. A waiter record
  (channel or semaphore) of a plain wait is live only while its goroutine id is at or above its
  P's floor (``plain_live``; the compiled core's ``peers_plain_live``): a value is never handed
  to a goroutine that died. Select records die with their token table, which ``reset`` zeroes
  but for slot 0, left done at the dead process's newest generation: claims of the old tokens
  fail, and the successor's generations start above it (``TokenTable``).
- A WAKE that reaches the new process for an id below its floor is dropped, its value freed.
- What a replaced P held stays counted (its handles, names in flight, live objects): those
  shared objects are not freed until the run ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import FunctionType
from typing import TYPE_CHECKING, Any

from .._errors import ProcessLost
from .._hub import hooks
from .._hub.hooks import Instrument
from . import ctx as C
from .tokens import T_DONE

if TYPE_CHECKING:
    from .._hub import Hub

# ---------------------------------------------------------------- on a worker P


class _Soiler(Instrument):
    """On a clean worker P's hub: the first goroutine started from it soils the P."""

    def __init__(self, table: TaskTable) -> None:
        self.table = table

    def spawning(self, fn: Callable[..., Any], local: bool) -> None:
        self.table.soil()


class TaskTable:
    """This P's ``P_DIRTY`` word and task table (see the module doc). Owner P only."""

    def __init__(self, ctx: C.Ctx, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.clean = False  # whether this worker P holds only executor tasks (P0: never)
        self.slots: dict[tuple[int, int], int] = {}  # (owner, key) -> its table entry
        self.free = list(range(C.TASK_SLOTS - 1, -1, -1))
        self.w = ctx.pload(ctx.p, C.P_TASKS) // 8
        self.soiler = _Soiler(self)

    def start_clean(self) -> None:
        """Start this worker P clean (P0 is never replaced: it never calls this)."""
        self.clean = True
        self.ctx.pstore(C.P_DIRTY, 0)
        hooks.install(self.hub, self.soiler, first=True)  # soiled before any other tool sees it

    def soil(self) -> None:
        """This P may now hold more than executor tasks: a loss of it ends the run."""
        if not self.clean:
            return
        self.clean = False
        self.ctx.pstore(C.P_DIRTY, 1)
        hooks.uninstall(self.hub, self.soiler)  # no cost on its hub once soiled

    def at_idle(self, holding: bool) -> None:
        """Nothing runs here: a soiled worker P with no goroutine and, ``holding`` false,
        nothing queued or owed to other Ps is clean again."""
        hub = self.hub
        if not self.clean and not holding and not hub.allgs and not hub.runq and not hub.fresh:
            self.start_clean()

    def steal_begins(self) -> bool:
        """Frames are about to be in hand: lost with this P should it die now, so the P is
        soiled while it makes their goroutines (its hub uninstrumented). Whether it was clean
        (give it to ``steal_ends``)."""
        clean = self.clean
        if clean:
            self.soil()
        return clean

    def steal_ends(self, was_clean: bool, gs: list) -> None:
        """The stolen frames are goroutines ``gs`` now: a P that was clean before the steal is
        clean again if every one of them is an executor task (each now in the table)."""
        if was_clean and self.adopted(gs):
            self.start_clean()

    def adopted(self, gs: list) -> bool:
        """Record the executor tasks among ``gs`` (goroutines just stolen) in the task table;
        False at the first goroutine that is not one (the P stays soiled: the table no longer
        decides anything)."""
        q, w, slots, free = self.ctx.q, self.w, self.slots, self.free
        for g in gs:
            fn = g.fn  # (a plain function's own attribute: no user __getattr__ runs here)
            if not (type(fn) is FunctionType and fn.__dict__.get("executor_task") and free
                    and type(g.args[0]) is int and type(g.args[1]) is int):
                return False
            i = free.pop()
            slots[g.args[1], g.args[0]] = i
            q[w + 2 * i] = g.args[1]  # owner pid
            q[w + 2 * i + 1] = g.args[0]  # task key
        return True

    def done(self, owner: int, key: int) -> None:
        """Executor task ``key`` of process ``owner`` finished here: its table entry goes."""
        i = self.slots.pop((owner, key), None)
        if i is not None:
            self.ctx.q[self.w + 2 * i] = 0
            self.free.append(i)


# ---------------------------------------------------------------- on P0


def tasks_of(ctx: C.Ctx, q: int) -> list[tuple[int, int]]:
    """The ``(owner pid, key)`` of each task in P ``q``'s table."""
    w = ctx.pload(q, C.P_TASKS) // 8
    out = []
    for i in range(C.TASK_SLOTS):
        owner = ctx.q[w + 2 * i]
        if owner:
            out.append((owner, ctx.q[w + 2 * i + 1]))
    return out


def recoverable(ctx: C.Ctx, q: int, pid: int) -> bool:
    """Whether P ``q`` (process ``pid``, just dead) held nothing but executor tasks of P0's and
    left no shared state torn (see the module doc)."""
    arena = ctx.arena
    if q == 0 or ctx.stopping or ctx.gload(C.G_LOST):
        return False
    if ctx.pload(q, C.P_DIRTY) or ctx.pload(q, C.P_OWES):
        return False
    if not arena.allocator_sound() or arena.takeovers() or arena.locks_orphaned(pid):
        return False
    held = tasks_of(ctx, q)
    me = os.getpid()  # (a P that held no task at all: its loss ends the run, as any P's does)
    return bool(held) and all(owner == me for owner, _key in held)


def reset(ctx: C.Ctx, q: int) -> None:
    """Make P ``q``'s words ready for its next process (P0, the old one dead)."""
    for i in (C.P_PID, C.P_INFOLEN, C.P_NGOR, C.P_DIRTY, C.P_OWES):
        ctx.q[ctx.pidx(q, i)] = 0
    w = ctx.pload(q, C.P_TASKS) // 8
    ctx.arena.map[w * 8 : (w + 2 * C.TASK_SLOTS) * 8] = bytes(16 * C.TASK_SLOTS)
    tok = ctx.tok_base + q * C.TOKENS
    newest = max(ctx.q[tok : tok + C.TOKENS]) >> 8  # the dead process's last token generation
    ctx.arena.map[tok * 8 : (tok + C.TOKENS) * 8] = bytes(8 * C.TOKENS)
    ctx.q[tok] = newest << 8 | T_DONE  # where the successor's generations start (tokens.py)
    # last: from here no record of the dead process is live, and the new one starts above it
    ctx.q[ctx.pidx(q, C.P_GFLOOR)] = ctx.goids_taken() + 1
    ctx.q[ctx.pidx(q, C.P_STATUS)] = C.RUNNING


def lost_error(q: int, pid: int, keys: list[int]) -> ProcessLost:
    """What the futures of the tasks a replaced P held are set to."""
    n = len(keys)
    return ProcessLost(f"P{q} (pid {pid}) died running {n} executor task{'s' * (n != 1)}; "
                       f"the runtime replaced it", p=q,
                       goroutines=tuple(f"executor task {k}" for k in keys))


def wait_started(ctx: C.Ctx, q: int, alive: Callable[[], bool], timeout: float) -> int:
    """The pid of P ``q``'s new process once it runs (0: it did not start in time, or the run
    is stopping)."""
    deadline = time.monotonic() + timeout
    while not ctx.pload(q, C.P_PID):
        if time.monotonic() > deadline or not alive() or ctx.stopping:
            return 0
        time.sleep(0.001)
    return ctx.pload(q, C.P_PID)
