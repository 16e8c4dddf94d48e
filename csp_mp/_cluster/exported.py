"""A buffered channel of this node that other nodes send into on credits: a local channel whose
buffer slots reserved for other nodes (``credits.py``) count as taken.

A slot granted to another node belongs to a value already sent there (its sender returned) or
about to be. So a sender of the home finds room only where no slot is reserved: with the buffer
full but for reserved slots it parks as on a full buffer, and the home asks the nodes holding
them to give back those they have not used (``recall``); each answers after every value it sent
on them, which land first, and the slots given back take the parked senders' values
(``release``). A receiver finding the buffer empty while senders wait (held off by
reservations) takes a sender's value directly, as on an unbuffered channel.

Invariants (over ``LocalState``'s):
- ``len(buf) + reserved <= cap``: values buffered and slots reserved never exceed the capacity.
- A sender of the home waits in ``sendq`` only while ``len(buf) + reserved == cap``; the
  nodes holding reserved slots were asked for them (``recall``) when it parked.
- Owner P only, as ``LocalState`` (the home's P0, where the node's network part runs).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from .._chan.local import _NOQ, SENT, LocalState, Waiter, claim


class ExportedState(LocalState):
    """The state of a buffered channel homed here once another node holds it (module doc).
    Made from the channel's ``LocalState`` (``exported``); ``recall()`` asks the nodes holding
    reserved slots to give back the unused ones."""

    __slots__ = ("reserved", "recall")

    def __init__(self, cap: int, recall: Callable[[], None]) -> None:
        super().__init__(cap)
        self.reserved = 0
        self.recall = recall

    @classmethod
    def exported(cls, st: LocalState, recall: Callable[[], None]) -> ExportedState:
        """``st``'s buffer, queues and closed flag in an exported state (its waiters stay
        queued: the queues move as they are)."""
        new = cls(st.cap, recall)
        new.buf, new.closed, new.recvq, new.sendq = st.buf, st.closed, st.recvq, st.sendq
        return new

    # ------------------------------------------------------------------ senders of the home

    def send(self, v: Any, hub: Any) -> None:
        reserved = self.reserved
        if not reserved or len(self.buf) + reserved < self.cap or self.closed \
                or self._live(self.recvq):
            LocalState.send(self, v, hub)
            return
        self.recall()
        self.park_send(v, hub)

    def try_send(self, v: Any) -> tuple[bool, Waiter | None]:
        reserved = self.reserved
        if not reserved or len(self.buf) + reserved < self.cap or self.closed \
                or self._live(self.recvq):
            return LocalState.try_send(self, v)
        self.recall()  # a select parks its case, or takes another: either way, ask them back
        return False, None

    @staticmethod
    def _live(q: Any) -> bool:
        """Whether queue ``q`` holds a waiter whose select has not completed."""
        return any(w.sel is None or not w.sel.done for w in q)

    # ------------------------------------------------------------------ receivers

    def recv(self, hub: Any) -> tuple[Any, bool]:
        if self.buf or not self.sendq:
            return LocalState.recv(self, hub)
        sendq = self.sendq  # senders held off by reservations, the buffer empty: a hand-off
        while sendq:
            w = sendq.popleft()
            sel = w.sel
            if sel is not None and not claim(w):
                continue
            v = w.elem
            hub.ready(w if sel is None else w.g, SENT)
            return v, True
        return super().recv(hub)

    def try_recv(self) -> tuple[bool, Any, bool, Waiter | None]:
        if self.buf or not self.sendq:
            return LocalState.try_recv(self)
        sendq = self.sendq
        while sendq:
            w = sendq.popleft()
            if claim(w):
                return True, w.elem, True, w
        return super().try_recv()

    # ------------------------------------------------------------------ the credits' side

    def room(self) -> int:
        """Slots neither buffered nor reserved, unless a sender of the home waits for one."""
        if self.sendq and self._live(self.sendq):
            return 0
        return self.cap - len(self.buf) - self.reserved

    def reserve(self, k: int) -> None:
        """Reserve ``k`` of the free slots (``room``) for another node."""
        self.reserved += k

    def landed(self) -> None:
        """A value sent on a reserved slot arrived: the slot is its (the caller buffers it)."""
        self.reserved -= 1

    def release(self, k: int, hub: Any) -> None:
        """``k`` reserved slots were given back (or their node lost): the senders waiting for
        room take them, in order."""
        self.reserved -= k
        sendq = self.sendq
        while sendq and len(self.buf) + self.reserved < self.cap:
            w = sendq.popleft()
            sel = w.sel
            if sel is not None and not claim(w):
                continue
            if self.buf is _NOQ:
                self.buf = deque()
            self.buf.append(w.elem)
            hub.ready(w if sel is None else w.g, SENT)
