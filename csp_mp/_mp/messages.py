"""This P's messages to the other Ps: wake-ups queued and sent in batches, the outbox, ``P_OWES``.

One ``Messages`` per P, a part of its ``Broker``, which binds its methods as its own attributes
(``owe``, ``send``, ``flush_wakes``, ...) for the shared channels, the reporter and tracing.
A message goes into the inbox ring of the P it is for and rings that P's doorbell; a wake-up
(``M_WAKE``, a goroutine of that P whose wait completed here) is first queued in ``wakes_out``
and sent with the others of the same hub pass, one inbox write and one ring per P. The WAKE
messages written from C (``c/wake.c``) take the same steps for one message.

Invariants:
- ``wakes_out`` holds WAKE messages not yet sent; ``hub.poll_now`` is set while it is not
  empty, so the hub polls (and flushes) before its next switch. ``outbox`` holds messages an
  inbox had no room for, in order: while it is not empty, every new message queues behind it.
- Neither list is ever rebound: the broker reads the same lists.
- ``P_OWES`` (replace.py trusts it) is 1 while either list holds a message, and from a claim
  of another P's waiter (``owe``) until its wake-up is queued; after ``WAKE_BATCH`` wake-ups
  sent in the middle of one operation it stays 1 until the next ``flush_wakes``
  (``owes_kept``), since the operation may claim more.
- Owner P only.
"""

from __future__ import annotations

import msgspec

from .._hub import Hub
from . import ctx as C
from .watch import Watcher

_msg = msgspec.msgpack.Encoder().encode
# a WAKE message: (M_WAKE, gid, slot, gen, case, kind, data, chan_off), layout.WAKE_ITEMS items
# (c/wake.c writes the same array; broker.handle reads it), then the flow when sent while watched

WAKE_BATCH = 32  # wake-ups to other Ps sent at once


class Messages:
    """This P's outgoing messages (see the module docstring)."""

    def __init__(self, ctx: C.Ctx, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.wakes_out: list[tuple[int, bytes]] = []
        self.outbox: list[tuple[int, bytes, bool]] = []
        self.owes_kept = False  # P_OWES kept set after a mid-operation flush (_flush_batch)
        self._owes_w = ctx.pidx(ctx.p, C.P_OWES)
        self.watchers: tuple[Watcher, ...] = ()  # the broker's, while any watch

    def owe(self) -> bool:
        """Before claiming waiters, ``P_OWES`` set (kept until a wake-up for another P is in
        an inbox: ``flush_wakes``); whether this call set it."""
        q = self.ctx.q
        if q[self._owes_w]:
            return False
        q[self._owes_w] = 1
        return True

    def owe_cancel(self) -> None:
        """An ``owe`` that set ``P_OWES`` was followed by no claim of another P's waiter: the
        word back to 0, unless a message is queued meanwhile."""
        if not self.wakes_out and not self.outbox:
            self.ctx.q[self._owes_w] = 0

    def queue_wake(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                   data: bytes | None, off: int) -> None:
        """Queue a WAKE message for P ``p``."""
        if not self.wakes_out:
            self.ctx.q[self._owes_w] = 1
        self.wakes_out.append((p, _msg((C.M_WAKE, gid, slot, gen, case, kind, data, off))))
        self.hub.poll_now = True  # the next switch goes through the hub, which flushes
        if len(self.wakes_out) >= WAKE_BATCH:
            self._flush_batch()

    def queue_wake_watched(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                           data: bytes | None, off: int) -> None:
        """``queue_wake`` while watchers watch: the message also carries the flow they give
        it, which reaches them on P ``p`` (``wake_arrived``)."""
        flow = 0
        for w in self.watchers:
            flow = w.wake_sent(p, gid) or flow
        msg = (C.M_WAKE, gid, slot, gen, case, kind, data, off)
        if not self.wakes_out:
            self.ctx.q[self._owes_w] = 1
        self.wakes_out.append((p, _msg(msg + (flow,) if flow else msg)))
        self.hub.poll_now = True
        if len(self.wakes_out) >= WAKE_BATCH:
            self._flush_batch()

    def _flush_batch(self) -> None:
        """``WAKE_BATCH`` wake-ups queued by one operation, which may claim more waiters of
        other Ps before it ends: send them, and keep ``P_OWES`` set until the hub's next pass
        (by then the operation is over), where ``flush_wakes`` clears it."""
        self.flush_wakes()
        self.ctx.q[self._owes_w] = 1
        self.owes_kept = True

    def flush_wakes(self) -> None:
        """Send the queued wake-ups: one inbox write and one doorbell ring per P."""
        kept, self.owes_kept = self.owes_kept, False
        wakes, outbox = self.wakes_out, self.outbox
        if not wakes:
            if kept and not outbox:
                self.ctx.q[self._owes_w] = 0  # _flush_batch's operation is over
            return
        by_p: dict[int, list[bytes]] = {}
        for p, msg in wakes:
            by_p.setdefault(p, []).append(msg)
        wakes.clear()
        ctx = self.ctx
        for p, msgs in by_p.items():
            n = 0 if outbox else ctx.inbox[p].put_many(msgs)
            if n:
                ctx.padd(C.P_SENT, n)
                ctx.bells[p].ring()
            for msg in msgs[n:]:
                outbox.append((p, msg, True))
        if not outbox:
            ctx.q[self._owes_w] = 0  # every wake-up is in an inbox

    def send(self, p: int, msg: bytes, counted: bool = False) -> None:
        """Put ``msg`` in P ``p``'s inbox and ring its doorbell (queued locally if full)."""
        ctx = self.ctx
        if self.outbox or not ctx.inbox[p].try_put(msg):
            self.outbox.append((p, msg, counted))
            ctx.q[self._owes_w] = 1
            return
        if counted:
            ctx.padd(C.P_SENT, 1)
        ctx.bells[p].ring()

    def flush_outbox(self) -> None:
        """Retry the messages in ``outbox``, in order, until an inbox is full."""
        ctx, outbox = self.ctx, self.outbox
        sent = 0
        for p, msg, counted in outbox:
            if not ctx.inbox[p].try_put(msg):
                break
            sent += 1
            if counted:
                ctx.padd(C.P_SENT, 1)
            ctx.bells[p].ring()
        del outbox[:sent]
        if not outbox and not self.wakes_out:
            ctx.q[self._owes_w] = 0  # every message is in an inbox
