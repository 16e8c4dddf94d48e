"""What reaches a hub from outside its goroutines: blocking calls on M threads, calls and
completions posted from other threads, the question whether it has work, and a deferred Ctrl-C.

``post`` is the one way into the hub from another thread; ``_drain_inbox`` runs what was posted
at the hub's next pass.

Design notes: these are methods of the hub (``Hub`` derives from ``Doors``), in a file of their
own by job, as ``workers.py``'s are; the annotations below name the hub's fields and methods
they use (hub.py sets and documents them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent, greenlet

from . import waits
from .g import WAITING, G
from .mthreads import MThreadPool
from .outcome import Outcome
from .ports import Completion, Waker, Wakes, wrong_context
from .timers import TimerHeap


class Doors:
    """A hub's entries from outside its goroutines (see the module doc)."""

    # the hub's, used here (hub.py)
    current: G | None
    thread_id: int
    hub_glet: greenlet
    pending_blocking: int
    n_blocking: int
    mpool: MThreadPool
    inbox: deque[Callable[[], object] | Completion]
    poll_now: bool
    waker: Waker | Wakes
    runq: deque[G]
    runnext: G | None
    fresh: deque[G]
    timers: TimerHeap
    broker: Any
    netpoll: Any
    interrupt_pending: bool
    outcome: Outcome | None
    park: Callable[[str], Any]
    ready: Callable[..., None]

    def blocking(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Run ``fn`` on an M thread while only the calling goroutine parks."""
        g = self.current
        if g is None or getcurrent() is not g.glet:
            raise wrong_context(self.thread_id, self.hub_glet)
        post = self.post

        def on_done(ok: bool, value: Any) -> None:  # runs on the M thread
            post((g, ok, value))

        self.pending_blocking += 1
        self.n_blocking += 1
        self.mpool.submit(fn, args, kwargs, on_done)
        ok, value = self.park(waits.BLOCKING_CALL)
        if ok:
            return value
        raise value

    def post(self, entry: Callable[[], object] | Completion) -> None:
        """Hand the hub work from any thread: a call to run on the hub thread at its next pass,
        or an M thread's ``(g, ok, value)`` completion. The one way into the hub from outside.

        Safe from any thread: the deque append is atomic, ``poll_now`` makes the running
        goroutine's next switch go through the hub, and the waker's post is never lost (an idle
        hub wakes, a busy one finds its next wait already posted).
        """
        self.inbox.append(entry)
        self.poll_now = True
        self.waker.post()

    def has_work(self) -> bool:
        """Whether this P has work besides the running goroutine: a runnable goroutine, a posted
        call or completion, a due timer, work from other Ps (the broker's ``work_waiting``) or
        frames from other nodes (the network poll's ``waiting``).

        Any thread (sysmon, the CPU-time handler): it only reads, each read is one atomic step
        under the GIL (a deque's truth, an attribute, ``TimerHeap.due``, the broker's reads, a
        poll of the links that reads nothing), and it takes no lock. The answer may be stale as
        it returns; callers act on it only by asking the hub to make a pass, and look again at
        their next tick.
        """
        if self.runq or self.runnext is not None or self.fresh or self.inbox \
                or self.timers.due():
            return True
        broker = self.broker
        if broker is not None and broker.work_waiting():
            return True
        netpoll = self.netpoll
        return netpoll is not None and netpoll.waiting()

    def _drain_inbox(self) -> None:
        inbox = self.inbox
        while inbox:
            entry = inbox.popleft()
            if isinstance(entry, tuple):  # an M thread's completion
                g, ok, value = entry
                self.pending_blocking -= 1
                if g.state == WAITING:
                    self.ready(g, (ok, value), next_=False)
            else:  # a call posted by another thread (sysmon reports, a timer thread)
                entry()

    def interrupted(self) -> None:
        """End the run with ``KeyboardInterrupt`` for a Ctrl-C that arrived in runtime code,
        unless it was raised in user code meanwhile (interrupt.py posts this; owner thread)."""
        if not self.interrupt_pending:
            return
        self.interrupt_pending = False
        if self.outcome is None:
            self.outcome = Outcome("interrupt", error=KeyboardInterrupt())
