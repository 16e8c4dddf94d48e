"""A channel inside one P: Go's ``hchan`` with values passed by reference.

Invariants:
- At least one of ``sendq`` and ``recvq`` is empty, unless every waiter left in the non-empty
  one belongs to a select that has already completed elsewhere.
- ``len(buf) <= cap``; when ``recvq`` holds a live waiter, ``buf`` is empty.
- A closed channel has an empty ``sendq``.
- A queued waiter whose ``sel`` is None is a G, parked in a plain send or receive (g.py); a
  select's waiters are ``Waiter`` records, each with its select's ``sel``.
- ``Waiter.sel`` is shared by every waiter of one select; ``sel.done`` turns True exactly once,
  under the hub (one thread), so exactly one case of a select takes effect.
- All of this is owner-P state: only the P's hub thread touches it, never while another greenlet
  of the P runs (no preemption inside the runtime).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from .._errors import ClosedChannelError
from .._hub.waits import CHAN_RECV as W_RECV
from .._hub.waits import CHAN_SEND as W_SEND

# What a parked sender is readied with.
SENT = True
CLOSED = False


class SelectToken(Protocol):
    """A select's claim on its shared channels: whoever claims it first picks the case (the
    process layer makes them: ``ProcLayer.new_token``)."""

    slot: int
    gen: int

    def claim(self, case: int) -> bool:
        """Win the select for ``case`` (a partner on this P completing it)."""
        ...

    def release(self) -> None:
        """The select has finished: its token can be reused."""
        ...


class SelectState:
    """Shared by the waiters of one blocked select: which case won."""

    __slots__ = ("done", "case", "token")

    def __init__(self) -> None:
        self.done = False
        self.case = -1
        self.token: SelectToken | None = None  # set when it also waits on a shared channel


class Waiter:
    """A select's case parked on one channel queue (Go's ``sudog``); a plain send or receive
    queues its G, which reads the same (``g``, ``elem``, ``sel``, ``case``)."""

    __slots__ = ("g", "elem", "sel", "case")

    def __init__(self, g: Any, elem: Any, sel: SelectState, case: int):
        self.g = g
        self.elem = elem
        self.sel = sel
        self.case = case


def claim(w: Waiter) -> bool:
    """Take ``w`` for a completing operation; False if its select already completed."""
    sel = w.sel
    if sel is None:
        return True
    if sel.done:
        return False
    tok = sel.token
    if tok is not None and not tok.claim(w.case):
        sel.done = True  # a partner in another P won; its wake-up names the case
        return False
    sel.done = True
    sel.case = w.case
    return True


_NOQ: Any = ()  # a buffer or wait queue no one has used yet: empty


class LocalState:
    """Buffer and wait queues of a channel living in one P. Each is made when its first value
    or waiter comes (``_NOQ`` until then: a reply channel made per request often never
    holds one here, for it is shared before its first send)."""

    shared = False
    __slots__ = ("cap", "buf", "closed", "recvq", "sendq")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf: deque = _NOQ
        self.closed = False
        self.recvq: deque[Waiter] = _NOQ
        self.sendq: deque[Waiter] = _NOQ

    # Blocking operations, the whole fast path inline (the hot path of every program).

    def send(self, v: Any, hub: Any) -> None:
        """Send ``v``, parking the current goroutine until delivered or buffered."""
        if self.closed:
            raise ClosedChannelError("send on closed channel")
        recvq = self.recvq
        while recvq:
            w = recvq.popleft()
            if w.sel is None:  # a plain receive: the waiter is its G
                hub.ready(w, (v, True))
                return
            if claim(w):
                hub.ready(w.g, (v, True))
                return
        buf = self.buf
        if len(buf) < self.cap:
            if buf is _NOQ:
                buf = self.buf = deque()
            buf.append(v)
            return
        self.park_send(v, hub)

    def park_send(self, v: Any, hub: Any) -> None:
        """Park the current goroutine as a sender of ``v`` until a receiver takes it, or it is
        buffered, or the channel closes (ClosedChannelError)."""
        g = hub.current  # its own waiter (g.py)
        g.elem = v
        q = self.sendq
        if q is _NOQ:
            q = self.sendq = deque()
        q.append(g)
        try:
            res = hub.park(W_SEND)
        except BaseException:
            self.dequeue(g, True)
            raise
        finally:
            g.elem = None
        if res is CLOSED:
            raise ClosedChannelError("send on closed channel")

    def recv(self, hub: Any) -> tuple[Any, bool]:
        """Receive ``(value, ok)``, parking the current goroutine until one arrives."""
        sendq = self.sendq
        while sendq:
            w = sendq.popleft()
            sel = w.sel
            if sel is not None and not claim(w):
                continue
            if self.cap == 0:
                v = w.elem
            else:
                v = self.buf.popleft()
                self.buf.append(w.elem)
            hub.ready(w if sel is None else w.g, SENT)  # a plain send's waiter is its G
            return v, True
        if self.buf:
            return self.buf.popleft(), True
        if self.closed:
            return None, False
        g = hub.current  # its own waiter (g.py)
        q = self.recvq
        if q is _NOQ:
            q = self.recvq = deque()
        q.append(g)
        try:
            return hub.park(W_RECV)
        except BaseException:
            self.dequeue(g, False)
            raise

    # Each try_* either completes (returning the partner to ready, if any) or reports "not now".

    def try_send(self, v: Any) -> tuple[bool, Waiter | None]:
        """Deliver or buffer ``v`` if possible: (done, receiver to ready with (v, True))."""
        if self.closed:
            raise ClosedChannelError("send on closed channel")
        recvq = self.recvq
        while recvq:
            w = recvq.popleft()
            if claim(w):
                return True, w
        buf = self.buf
        if len(buf) < self.cap:
            if buf is _NOQ:
                buf = self.buf = deque()
            buf.append(v)
            return True, None
        return False, None

    def try_recv(self) -> tuple[bool, Any, bool, Waiter | None]:
        """Take a value if possible: (done, value, ok, sender to ready with SENT)."""
        sendq = self.sendq
        while sendq:
            w = sendq.popleft()
            if not claim(w):
                continue
            if self.cap == 0:
                return True, w.elem, True, w
            v = self.buf.popleft()
            self.buf.append(w.elem)
            return True, v, True, w
        if self.buf:
            return True, self.buf.popleft(), True, None
        if self.closed:
            return True, None, False, None
        return False, None, False, None

    def close(self) -> list[tuple[Waiter, Any]]:
        """Close; return every waiter to ready with what it must see."""
        if self.closed:
            raise ClosedChannelError("close of closed channel")
        self.closed = True
        woken: list[tuple[Waiter, Any]] = []
        while self.recvq:
            w = self.recvq.popleft()
            if claim(w):
                woken.append((w, (None, False)))
        while self.sendq:
            w = self.sendq.popleft()
            if claim(w):
                woken.append((w, CLOSED))
        return woken

    def enqueue_send(self, w: Waiter) -> None:
        """Park ``w`` as a sender (after a failed ``try_send``)."""
        if self.sendq is _NOQ:
            self.sendq = deque()
        self.sendq.append(w)

    def enqueue_recv(self, w: Waiter) -> None:
        """Park ``w`` as a receiver (after a failed ``try_recv``)."""
        if self.recvq is _NOQ:
            self.recvq = deque()
        self.recvq.append(w)

    def dequeue(self, w: Waiter, is_send: bool) -> None:
        """Remove ``w`` if still queued (a select's losing case, or an interrupted park)."""
        q = self.sendq if is_send else self.recvq
        if not q:
            return
        try:
            q.remove(w)
        except ValueError:
            pass

    def stats(self) -> tuple[int, int, int]:
        """(buffered, live senders waiting, live receivers waiting)."""
        live_s = sum(1 for w in self.sendq if w.sel is None or not w.sel.done)
        live_r = sum(1 for w in self.recvq if w.sel is None or not w.sel.done)
        return len(self.buf), live_s, live_r
