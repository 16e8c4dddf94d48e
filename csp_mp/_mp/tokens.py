"""Select tokens: the words that let exactly one case of a select win across Ps.

A select of this P that waits on a shared channel holds a token slot in this P's token table
(control block, ``TOKENS`` words per P). Its word reads ``gen << 8 | T_WAITING`` while the select
waits; the first claimer, on any P, sets ``T_DONE`` and so picks the case. ``TokenTable`` is this
P's side of it: the broker holds one and passes its ``new_token``, ``claim``, ``token_live`` and
``plain_live`` on as the shared channel's ``ProcLayer`` methods (bound methods, no extra layer).

Invariants:
- A token slot is in ``waiting`` (slot -> (g, sel, gen)) exactly while its select is parked or
  about to park; its word reads ``gen << 8 | T_WAITING`` until one claimer sets T_DONE.
- A token word is stored only under its token lock (``locks``, a stripe of ``TOKEN_LOCKS``),
  except by the owner when it hands out a fresh slot (nobody else knows that ``gen`` yet). Token
  locks are leaves, taken under channel locks. With the compiled core, a claim is instead one
  compare-and-swap (``Peers.claim``); a run uses one of the two.
- ``new_token``/``release_token``: owner P only. ``claim``/``token_live``/``plain_live``: any P.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._chan.local import SelectState
from .._shm import layout as L
from . import ctx as C

T_WAITING, T_DONE = L.T_WAITING, L.T_DONE  # (layout.py, which wake.c is built from)
_GEN = L.TOKEN_GEN_SHIFT  # a token word is gen << _GEN | state
TOKEN_LOCKS = 32  # arena locks serializing claims (a token word picks one by its index)


class Token:
    """The select token of one parked select of this P (a ``SelectToken``)."""

    __slots__ = ("table", "slot", "gen")

    def __init__(self, table: TokenTable, slot: int, gen: int) -> None:
        self.table = table
        self.slot = slot
        self.gen = gen

    def claim(self, case: int) -> bool:
        """Win the select for ``case`` (a local partner completing it)."""
        return self.table.claim(self.table.p, self.slot, self.gen, case)

    def release(self) -> None:
        """The select has finished."""
        self.table.release_token(self)


class TokenTable:
    """This P's select tokens, and the liveness of any P's waiter records (see the module doc)."""

    def __init__(self, ctx: C.Ctx, lock_base: int, gfloor: int, peers: Any) -> None:
        """``lock_base``: the arena lock of the first token lock; ``gfloor``: this P's
        goroutine-id floor (replace.py); ``peers``: the compiled core's ``Peers`` or None."""
        self.ctx = ctx
        self.p = ctx.p
        self.locks = [ctx.arena.locks.lock(lock_base + i) for i in range(TOKEN_LOCKS)]
        self.waiting: dict[int, tuple[Any, SelectState, int]] = {}
        self.free_slots = list(range(C.TOKENS - 1, -1, -1))
        # above any earlier process's of this P: replace.reset left its newest in slot 0
        self.gen = ctx.load(self.word(self.p, 0)) >> 8 if gfloor else 1
        self._floors = ctx.pidx(0, C.P_GFLOOR)
        #: claim(p, slot, gen, case): win token ``(p, slot, gen)`` for ``case``; False if its
        #: select already completed. The compiled core's is one CAS; the Python path's
        #: (``claim_locked``) takes a lock
        self.claim: Callable[[int, int, int, int], bool] = (
            peers.claim if peers is not None else self.claim_locked)

    def word(self, p: int, slot: int) -> int:
        """The control-block word of token ``slot`` of P ``p``."""
        return self.ctx.tok_base + p * C.TOKENS + slot

    def new_token(self, g: Any, sel: SelectState) -> Token:
        """A token for a select of goroutine ``g`` that waits on a shared channel."""
        if not self.free_slots:
            raise RuntimeError("too many goroutines blocked in select on shared channels")
        slot = self.free_slots.pop()
        self.gen = gen = (self.gen + 1) & 0xFFFF_FFFF_FFFF
        self.ctx.store(self.word(self.p, slot), gen << _GEN | T_WAITING)
        self.waiting[slot] = (g, sel, gen)
        tok = Token(self, slot, gen)
        sel.token = tok
        return tok

    def release_token(self, tok: Token) -> None:
        """The select that owned ``tok`` has finished."""
        if self.waiting.pop(tok.slot, None) is not None:
            self.free_slots.append(tok.slot)

    def claim_locked(self, p: int, slot: int, gen: int, case: int) -> bool:
        """``claim`` on the Python path, under the token's lock."""
        word = self.word(p, slot)
        lock = self.locks[(p * C.TOKENS + slot) % TOKEN_LOCKS]
        lock.acquire()
        try:
            if self.ctx.load(word) != gen << _GEN | T_WAITING:  # load; under the token lock
                return False
            self.ctx.store(word, gen << _GEN | T_DONE)  # store; under the token lock
            return True
        finally:
            lock.release()

    def token_live(self, p: int, gid: int, slot: int, gen: int) -> bool:
        """Whether a record still waits: its select's token does, or for a plain record its
        goroutine's process is the P's current one (a snapshot)."""
        if slot < 0:
            return self.plain_live(p, gid)
        return self.ctx.load(self.word(p, slot)) == gen << _GEN | T_WAITING

    def plain_live(self, p: int, gid: int) -> bool:
        """Whether goroutine ``gid`` of P ``p`` is of that P's current process (replace.py)."""
        return gid >= self.ctx.q[self._floors + p * C.P_STRIDE]
