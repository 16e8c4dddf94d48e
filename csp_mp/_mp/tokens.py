"""Select tokens: the words that let exactly one case of a select win across Ps.

A select of this P that waits on a shared channel holds a token slot in this P's token table
(control block, ``TOKENS`` words per P). Its word reads ``gen << 8 | T_WAITING`` while the select
waits; the first claimer, on any P, sets ``T_DONE`` and so picks the case. Functions take the
P's ``Broker``, which holds the slots; ``Broker`` binds them as its methods (they are the
``claim``/``new_token``/``token_live`` of the shared channel's ``ProcLayer``).

Invariants:
- A token slot is in ``b.tokens`` (slot -> (g, sel, gen)) exactly while its select is parked or
  about to park; its word reads ``gen << 8 | T_WAITING`` until one claimer sets T_DONE.
- A token word is stored only under its token lock (``b.token_locks``, a stripe of
  ``TOKEN_LOCKS``), except by the owner when it hands out a fresh slot (nobody else knows that
  ``gen`` yet). Token locks are leaves, taken under channel locks. With the compiled core, a
  claim is instead one compare-and-swap (``Peers.claim``); a run uses one of the two.
- ``new_token``/``release_token``: owner P only. ``claim``/``token_live``: any P.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .._chan.local import SelectState
from .._chan.proclayer import NO_OBJ
from .._shm.doorbell import NativeDoorbell
from .._shm.native import core as native_core
from . import ctx as C

if TYPE_CHECKING:
    from .broker import Broker

T_WAITING, T_DONE = 1, 2
TOKEN_LOCKS = 32  # arena locks serializing claims (a token word picks one by its index)


class Token:
    """The select token of one parked select of this P (a ``SelectToken``)."""

    __slots__ = ("broker", "slot", "gen")

    def __init__(self, broker: Broker, slot: int, gen: int) -> None:
        self.broker = broker
        self.slot = slot
        self.gen = gen

    def claim(self, case: int) -> bool:
        """Win the select for ``case`` (a local partner completing it)."""
        return self.broker.claim(self.broker.p, self.slot, self.gen, case)

    def release(self) -> None:
        """The select has finished."""
        release_token(self.broker, self)


def peers(b: Broker) -> Any:
    """The compiled core's ``Peers`` of this P (token claims by CAS, wake-ups written to other
    Ps' inboxes), or None on the Python path."""
    core = b.arena.core
    if core is None:
        return None
    ctx = b.ctx
    bells = [cast(NativeDoorbell, bell).offset for bell in ctx.bells]
    return native_core().Peers(
        core, b.p, ctx.tok_base * 8, C.TOKENS, [r.offset for r in ctx.inbox], bells,
        ctx.pidx(b.p, C.P_SENT) * 8, C.M_WAKE, b.deliver_off, NO_OBJ,
        floor_off=ctx.pidx(0, C.P_GFLOOR) * 8, pstride=C.P_STRIDE * 8)


def tok_word(b: Broker, p: int, slot: int) -> int:
    return b.ctx.tok_base + p * C.TOKENS + slot


def new_token(b: Broker, g: Any, sel: SelectState) -> Token:
    """A token for a select of goroutine ``g`` that waits on a shared channel."""
    if not b.free_slots:
        raise RuntimeError("too many goroutines blocked in select on shared channels")
    slot = b.free_slots.pop()
    b.token_gen = gen = (b.token_gen + 1) & 0xFFFF_FFFF_FFFF
    b.ctx.store(tok_word(b, b.p, slot), gen << 8 | T_WAITING)
    b.tokens[slot] = (g, sel, gen)
    tok = Token(b, slot, gen)
    sel.token = tok
    return tok


def release_token(b: Broker, tok: Token) -> None:
    """The select that owned ``tok`` has finished."""
    if b.tokens.pop(tok.slot, None) is not None:
        b.free_slots.append(tok.slot)


def claim(b: Broker, p: int, slot: int, gen: int, case: int) -> bool:
    """Win token ``(p, slot, gen)`` for ``case``; False if its select already completed."""
    word = tok_word(b, p, slot)
    lock = b.token_locks[(p * C.TOKENS + slot) % TOKEN_LOCKS]
    lock.acquire()
    try:
        if b.ctx.load(word) != gen << 8 | T_WAITING:  # load; under the token lock
            return False
        b.ctx.store(word, gen << 8 | T_DONE)  # store; under the token lock
        return True
    finally:
        lock.release()


def token_live(b: Broker, p: int, gid: int, slot: int, gen: int) -> bool:
    """Whether a record still waits: its select's token does, or for a plain record its
    goroutine's process is the P's current one (a snapshot)."""
    if slot < 0:
        return b.plain_live(p, gid)
    return b.ctx.load(tok_word(b, p, slot)) == gen << 8 | T_WAITING

