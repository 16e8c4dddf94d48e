"""Deadlock detection across Ps (Go's checkdead), run by P0 when it has nothing to do.

Each P publishes its status (RUNNING, IDLE, STUCK, EXITED), an epoch bumped on every return to
RUNNING, and counts of WAKE messages sent and handled. P0 reports a deadlock when every P is
STUCK or EXITED, no queue or inbox holds work, no wake-up is in flight (sent == handled), and the
same snapshot of epochs and counts is seen twice ``DEADLOCK_SETTLE`` apart: a P that woke and
fell asleep again in between bumped its epoch. A P that looks stuck because it died is not part
of a deadlock: its loss is reported instead (ProcessLost).

Invariants:
- ``b.dl_snap`` is the last all-stuck snapshot (None when the last look found work) and
  ``b.dl_t`` when it was first seen. P0 only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._errors import DeadlockError
from .._hub import Hub, Outcome
from .._shm.locks import pid_alive
from . import ctx as C
from . import reports

if TYPE_CHECKING:
    from .broker import Broker

DEADLOCK_SETTLE = 0.05  # two identical all-stuck snapshots this far apart make a deadlock


def work_visible(b: Broker) -> bool:
    ctx = b.ctx
    if len(ctx.inbox[b.p]):
        return True
    if ctx.pload(b.p, C.P_DRAIN):
        return False
    return any(len(ctx.runq[q]) for q in range(ctx.nprocs) if q != b.p)


def check(b: Broker, hub: Hub) -> bool:
    ctx = b.ctx
    n = ctx.nprocs
    sent = handled = 0
    epochs = []
    for q in range(n):
        status = ctx.pload(q, C.P_STATUS)
        if status not in (C.STUCK, C.EXITED):
            b.dl_snap = None
            return False
        if len(ctx.runq[q]) or len(ctx.inbox[q]):
            b.dl_snap = None
            return False
        sent += ctx.pload(q, C.P_SENT)
        handled += ctx.pload(q, C.P_HANDLED)
        epochs.append(ctx.pload(q, C.P_EPOCH))
    if sent != handled:
        b.dl_snap = None
        return False
    snap = (tuple(epochs), sent)
    now = time.monotonic()
    if snap != b.dl_snap:
        b.dl_snap = snap
        b.dl_t = now
        return False
    if now - b.dl_t < DEADLOCK_SETTLE:
        return False
    if any(ctx.pload(q, C.P_STATUS) == C.STUCK and not pid_alive(ctx.pload(q, C.P_PID))
           for q in range(n) if q != b.p):
        return False  # a P died stuck: the watcher reports it lost (ProcessLost), no deadlock
    stack = reports.gather_stacks(b, hub, 0.5)
    if ctx.gload(C.G_LOST):
        return False  # lost while its stack was asked for: the next poll reports the loss
    hub.outcome = Outcome("deadlock", error=DeadlockError(stack=stack))
    return True

