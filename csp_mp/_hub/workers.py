"""The worker pool and the end of a goroutine: the greenlets goroutine bodies run on, and what
happens when a body returns or raises.

Goroutine bodies run on pooled worker greenlets: a worker that finishes a body takes the next
runnable goroutine on the same greenlet when that one has not started yet (no switch at all),
else parks in the pool (as Go keeps a free list of Gs). A fresh greenlet per ``go`` would cost
a new data-stack chunk each time.

Invariants:
- ``_free`` holds at most ``_FREE_WORKERS_MAX`` workers, each parked in ``_worker`` waiting to be
  switched to with its next goroutine.
- A goroutine leaves ``allgs`` when its body ends (``_goexit``) or the run stops
  (``_kill_all``); a body's exception sets the run's outcome once (``_panic``).

Design notes: these are methods of the hub (``Hub`` derives from ``Workers``), in a file of their
own by job; the annotations below name the hub's fields and methods they use (hub.py sets and
documents them). A worker's loop is the scheduler's hot path: it reads fields directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent, greenlet

from .._errors import GoroutineExit
from .g import DEAD, RUNNABLE, RUNNING, G
from .outcome import Outcome, panic_outcome
from .safepoint import register_body_call

_FREE_WORKERS_MAX = 4096  # parked worker greenlets kept for reuse


class Workers:
    """The worker greenlets of one P's hub and the end of its goroutines. Owner thread only."""

    # the hub's, used here (hub.py)
    stopping: bool
    outcome: Outcome | None
    tick: int
    poll_now: bool
    current: G | None
    runq: deque[G]
    fresh: deque[G]
    runnext: G | None
    allgs: dict[int, G]
    main_g: G | None
    root: greenlet
    hub_glet: greenlet
    _free: list[greenlet]
    runqget: Callable[[], G | None]

    def _switch_to(self, g: G) -> Any:
        """Switch from the current goroutine straight into ``g``: started, or not started and
        a parked worker greenlet free to run it. Else ``g`` goes back to the head of the run
        queue and the switch goes through the hub, which makes the new greenlet: a greenlet
        takes the recursion depth of whatever first switches into it, and a goroutine's depth
        handed on from greenlet to greenlet would grow until ``RecursionError``."""
        glet = g.glet
        if glet is None:
            if not self._free:
                self.runq.appendleft(g)
                return self.hub_glet.switch()
            glet = self._free.pop()
            g.glet = glet
            self.current = g
            g.state = RUNNING
            return glet.switch(g)
        self.current = g
        g.state = RUNNING
        return glet.switch()  # it takes the value it was readied with from g.param (park)

    def _worker(self, g: G) -> None:
        """Body of a pooled worker greenlet: run goroutine bodies until the runtime stops."""
        me = getcurrent()
        while True:
            try:
                args = g.args
                if g.kwargs:
                    result = g.fn(*args, **g.kwargs)
                elif not args:
                    result = g.fn()
                elif len(args) == 1:
                    result = g.fn(args[0])
                else:
                    result = g.fn(*args)
                if g.is_main:
                    g.result = result
            except GoroutineExit:
                pass
            except BaseException as exc:
                self._panic(g, exc)
            self._goexit(g)
            # drop what it ran with while parked in the pool: a channel it held is freed when
            # no goroutine can reach it (_mp/promote.py)
            g = args = result = None  # type: ignore[assignment]
            if self.stopping or self.outcome is not None:
                # main returned, or a goroutine panicked: back to the loop, which ends the run
                # before any other goroutine runs (Go's program exit)
                return
            # as park() does: every 16th switch, and whenever asked, through the hub's pass
            tick = self.tick + 1
            nxt = self.runqget() if tick & 15 and not self.poll_now else None
            if nxt is not None:
                self.tick = tick
                if nxt.glet is None:
                    # run the next fresh goroutine on this very greenlet: no switch at all
                    self.current = nxt
                    nxt.state = RUNNING
                    nxt.glet = me
                    g = nxt
                    continue
            if len(self._free) >= _FREE_WORKERS_MAX:
                if nxt is not None:
                    self.runq.appendleft(nxt)
                return
            self._free.append(me)
            if nxt is None:
                g = self.hub_glet.switch()  # the hub's pass counts this switch
            else:
                g = self._switch_to(nxt)

    def _goexit(self, g: G) -> None:
        """``g``'s body returned or raised: it is dead; main's return ends the run."""
        if g.state == RUNNABLE:
            # it ended while queued: an exception (Ctrl-C, preemption's gosched) struck between
            # gosched() queueing it and switching away; running it again would resume a body
            # that has finished
            if self.runnext is g:
                self.runnext = None
            try:
                self.runq.remove(g)
            except ValueError:
                pass
        g.state = DEAD
        self.allgs.pop(g.id, None)
        if g.is_main and self.outcome is None:
            self.outcome = Outcome("return", g.result)
        g.fn = g.args = g.kwargs = None  # type: ignore[assignment]  # free what it captured

    def _panic(self, g: G, exc: BaseException) -> None:
        """``g`` raised ``exc``: the run ends with it, unless it is ending already."""
        if self.outcome is None:
            self.outcome = panic_outcome(g, exc)

    def _kill_all(self) -> None:
        """Throw GoroutineExit into every started goroutine but the implicit main one, and end
        the parked workers."""
        for g in list(self.allgs.values()):
            glet = g.glet
            if g.is_main and glet is self.root:
                continue
            if glet is not None and not glet.dead and glet is not getcurrent():
                try:
                    glet.throw(GoroutineExit())
                except GoroutineExit:
                    pass
            g.state = DEAD
        self.allgs.clear()
        if self.main_g is not None and self.main_g.glet is self.root:
            self.allgs[self.main_g.id] = self.main_g
        self.runq.clear()
        self.fresh.clear()
        self.runnext = None
        for w in self._free:
            if not w.dead:
                w.throw()  # GreenletExit: the parked worker ends quietly
        self._free.clear()


register_body_call(Workers._worker)  # a Ctrl-C or preemption during g.fn(...) is the goroutine's

__all__ = ["Workers"]
