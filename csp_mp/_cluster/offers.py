"""Select meets select across nodes: the cases a blocking select offers at the homes of its
remote channels, and the claim that completes one of them (``remote.select_remote`` is the
select's side).

A select's token is an unbuffered channel registered here (``tokens``) that the select waits
on. It offers each remote case at its channel's home, ``("offer", oid, token, case, is_send,
value)``, and takes them back with ``("unoffer", oid, token)`` when it returns. At a home, a try
(``trysend``/``tryrecv``) finding no partner takes an offer of the other side if it can claim
the offer's token at the token's node (node operation ``claim``, object id 0): the claim is a
send on the token's channel without blocking, which commits only while the select waits on it.

Invariants:
- A token commits at most one case: its claim is a non-blocking send on an unbuffered channel
  only its select receives from, and only while the select waits there.
- ``offers[oid]`` holds only offers of nodes not lost, each until its select withdraws it or a
  try took it.
"""

from __future__ import annotations

from typing import Any

from .._chan import Chan, default, select
from .._errors import ProcessLost


class Offers:
    """This node's selects' tokens and the cases other nodes' selects offer here (P0's hub
    only). ``net``: the node's ``Net``."""

    def __init__(self, net: Any) -> None:
        self.net = net
        #: select tokens of this node's selects that offered cases: id -> the unbuffered
        #: channel the select waits on
        self.tokens: dict[Any, Chan] = {}
        #: the cases other nodes' selects offer on channels homed here:
        #: oid -> [(node, token id, case, is_send, value)]
        self.offers: dict[int, list[tuple]] = {}

    # ------------------------------------------------------------------ the select's side

    def offer(self, tid: Any, token: Chan, cases: list[tuple]) -> None:
        """Register a select's token and offer its cases ``(home, oid, case, is_send, value)``
        at their homes (no answer)."""
        net = self.net
        self.tokens[tid] = token
        for home, oid, case, is_send, value in cases:
            if home not in net.lost:
                net.send(home, ("offer", oid, tid, case, is_send, value))

    def withdraw(self, tid: Any, homes: list[tuple[int, int]]) -> None:
        """A select is over: forget its token, take its offers on ``(home, oid)`` back."""
        net = self.net
        self.tokens.pop(tid, None)
        for home, oid in homes:
            if home not in net.lost:
                net.send(home, ("unoffer", oid, tid))

    def claim(self, tid: Any, case: int, payload: Any) -> str:
        """(dispatcher) A home asks to complete case ``case`` of token ``tid``'s select: ``ok``
        (the select waited on its token and returns that case), ``busy`` (it is not waiting
        there now: trying its cases, or taking another one) or ``gone`` (it is over)."""
        token = self.tokens.get(tid)
        if token is None:
            return "gone"
        if select((token.send, (case, payload)), default)[0] == 0:
            return "ok"
        return "busy"

    # ------------------------------------------------------------------ the home's side

    def add(self, node: int, oid: int, offer: tuple) -> None:
        """(dispatcher) A select of ``node`` offers ``(token id, case, is_send, value)`` on
        channel ``oid``."""
        self.offers.setdefault(oid, []).append((node, *offer))

    def remove(self, node: int, oid: int, tid: Any) -> None:
        """(dispatcher) The select of ``node`` with token ``tid`` takes its offer back."""
        kept = [o for o in self.offers.get(oid, ()) if o[:2] != (node, tid)]
        if kept:
            self.offers[oid] = kept
        else:
            self.offers.pop(oid, None)

    def node_lost(self, node: int) -> None:
        """``node`` is lost: its selects are gone with it."""
        for oid, offers in list(self.offers.items()):
            self.offers[oid] = [o for o in offers if o[0] != node]

    def match(self, node: int, rid: int, oid: int, op: str, arg: Any) -> None:
        """(a goroutine) A try from ``node`` found no partner on channel ``oid``: complete it
        with a select's offer of the other side, if that select's node lets it claim it."""
        net = self.net
        mine = arg[1] if op == "trysend" else arg
        want_send = op == "tryrecv"
        got: Any = False if op == "trysend" else (False, None)
        try:
            for off in list(self.offers.get(oid, ())):
                tnode, tid, case, is_send, value = off
                if is_send != want_send or (tnode, tid) == mine:
                    continue
                payload = None if is_send else (arg[0], True)
                try:
                    status = net.homes.call(tnode, 0, "claim", (tid, case, payload))
                except ProcessLost:
                    status = "gone"
                if status == "busy":
                    continue
                offers = self.offers.get(oid)
                if offers is not None and off in offers:
                    offers.remove(off)
                if status == "ok":
                    got = (True, (value, True)) if want_send else True
                    break
        finally:
            net.serving -= 1
        net.homes.reply(node, rid, True, got)
