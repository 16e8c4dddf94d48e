"""Deadlock detection across Ps (Go's checkdead), run by P0 when it has nothing to do.

Each P publishes its status (RUNNING, IDLE, STUCK, EXITED), an epoch bumped on every return to
RUNNING, and counts of WAKE messages sent and handled. P0 reports a deadlock when every P is
STUCK or EXITED, no queue or inbox holds work, no wake-up is in flight (sent == handled), and the
same snapshot of epochs and counts is seen twice ``DEADLOCK_SETTLE`` apart: a P that woke and
fell asleep again in between bumped its epoch. A P that looks stuck because it died is not part
of a deadlock: its loss is reported instead (ProcessLost).

``Checkdead`` is P0's detector; it asks for every goroutine's stack (``stacks``, the reporter's
``gather_stacks``) only when it reports a deadlock.

Invariants:
- ``snap`` is the last all-stuck snapshot (None when the last look found work) and ``since``
  when it was first seen. P0 only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .._errors import DeadlockError
from .._hub import Hub, Outcome
from .._shm.locks import pid_alive
from . import ctx as C

DEADLOCK_SETTLE = 0.05  # two identical all-stuck snapshots this far apart make a deadlock


def work_visible(ctx: C.Ctx) -> bool:
    """Whether work for this P is in sight: a message in its inbox, or (unless it drains) a
    frame in another P's run queue. Reads only: any thread."""
    if len(ctx.inbox[ctx.p]):
        return True
    if ctx.pload(ctx.p, C.P_DRAIN):
        return False
    return any(len(ctx.runq[q]) for q in range(ctx.nprocs) if q != ctx.p)


class Checkdead:
    """P0's deadlock detector (see the module doc)."""

    def __init__(self, ctx: C.Ctx, stacks: Callable[[Hub, float], str]) -> None:
        """``stacks(hub, timeout)``: every goroutine of every P, for the report."""
        self.ctx = ctx
        self.stacks = stacks
        self.snap: tuple | None = None
        self.since = 0.0

    def check(self, hub: Hub) -> bool:
        """Whether every P is stuck for good; then ``hub.outcome`` is the deadlock (P0, idle)."""
        ctx = self.ctx
        n = ctx.nprocs
        sent = handled = 0
        epochs = []
        for q in range(n):
            status = ctx.pload(q, C.P_STATUS)
            if status not in (C.STUCK, C.EXITED):
                self.snap = None
                return False
            if len(ctx.runq[q]) or len(ctx.inbox[q]):
                self.snap = None
                return False
            sent += ctx.pload(q, C.P_SENT)
            handled += ctx.pload(q, C.P_HANDLED)
            epochs.append(ctx.pload(q, C.P_EPOCH))
        if sent != handled:
            self.snap = None
            return False
        snap = (tuple(epochs), sent)
        now = time.monotonic()
        if snap != self.snap:
            self.snap = snap
            self.since = now
            return False
        if now - self.since < DEADLOCK_SETTLE:
            return False
        if any(ctx.pload(q, C.P_STATUS) == C.STUCK and not pid_alive(ctx.pload(q, C.P_PID))
               for q in range(n) if q != ctx.p):
            return False  # a P died stuck: the watcher reports it lost (ProcessLost), no deadlock
        stack = self.stacks(hub, 0.5)
        if ctx.gload(C.G_LOST):
            return False  # lost while its stack was asked for: the next poll reports the loss
        hub.outcome = Outcome("deadlock", error=DeadlockError(stack=stack))
        return True
