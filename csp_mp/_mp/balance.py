"""What a P does with goroutines not started when its running goroutine runs out its time slice.

Go keeps every P busy while runnable goroutines exist anywhere, moving goroutines freely. Here a
goroutine that has started never leaves its P, so a P must not start several CPU-bound ones
while another P could take them: after a time slice, with another P idle, the goroutines made
here and not started go back to the queue between Ps (``give_back``); with every other P busy,
a queued one starts beside the running one only after ``STARVE`` seconds. The hub starts its
not-started goroutines (``hub.fresh``) when nothing else is runnable or every 61st pass
(``Hub.runqget``). A part of the broker (``broker.py``), owner P only.
"""

from __future__ import annotations

import time
from types import FunctionType
from typing import TYPE_CHECKING

from .._hub.g import requeued
from . import ctx as C

if TYPE_CHECKING:
    from .._hub import Hub
    from .runq import RunQueue

#: longest a queued goroutine waits while every P runs goroutines that never block (after_slice)
STARVE = 1.0


class Balance:
    """This P's side of keeping every P busy (see the module doc)."""

    def __init__(self, ctx: C.Ctx, rq: RunQueue) -> None:
        self.ctx = ctx
        self.p = ctx.p
        self.rq = rq
        self.declined_at = 0.0  # when after_slice first declined since a goroutine started

    def after_slice(self, hub: Hub) -> bool:
        """A goroutine ran out its time slice while goroutines not started wait here (made,
        or queued between Ps): whether one of them starts now. While another P could take
        them they are handed to it instead (the made ones back to the queue between Ps,
        ``give_back``); with every other P busy they wait for the running ones to end or block,
        at most ``STARVE`` seconds, so that a queued goroutine still starts while every P runs
        goroutines that never block."""
        if self.idle_p():
            self.declined_at = 0.0
            if hub.fresh:
                self.give_back(hub)
            return False
        if hub.runq or hub.runnext is not None:
            return False  # goroutines that ran before take turns
        now = time.monotonic()
        if not self.declined_at:
            self.declined_at = now
            return False
        if now - self.declined_at < STARVE:
            return False
        self.declined_at = 0.0
        if not hub.fresh and not self.rq.pop_own(hub):
            return False
        hub.runq.append(hub.fresh.popleft())
        return True

    def idle_p(self) -> bool:
        """Whether another P is idle and takes work (not draining)."""
        ctx = self.ctx
        for q in range(ctx.nprocs):
            if q != self.p and ctx.pload(q, C.P_STATUS) in (C.IDLE, C.STUCK) \
                    and not ctx.pload(q, C.P_DRAIN):
                return True
        return False

    def give_back(self, hub: Hub) -> None:
        """Queue this P's goroutines that have not started where other Ps can take them, as
        ``go()`` does (those pinned here stay: go_local's, executor tasks, watched arguments;
        nothing while a tool watches the hub's goroutines come and go)."""
        if hub.stopping or hub.instruments:
            return
        fresh, keep, moved, place = hub.fresh, [], 0, self.rq.place
        while fresh:
            g = fresh.popleft()
            fn = g.fn
            if g.local or (type(fn) is FunctionType and fn.__dict__.get("executor_task")):
                keep.append(g)
                continue
            try:
                place(fn, g.args, g.kwargs, requeued(g.made))
            except Exception:  # it cannot travel: it runs here
                keep.append(g)
                continue
            hub.allgs.pop(g.id, None)
            moved += 1
        fresh.extend(keep)
        if moved:
            hub.n_created -= moved  # counted once, when go() first queued them
            self.rq.flush_spawns()
