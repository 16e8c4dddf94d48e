"""The cases a blocking select offers at the homes of its remote channels: the poke that
sends it to try them again once one could complete, and the claim that completes one of them
when a select of another node meets it (``remote.select_remote`` is the select's side).

A select's token is an unbuffered channel registered here (``tokens``) that the select waits
on, with its poke channel (``Chan(1)``). It offers each remote case at its channel's home,
``("offer", oid, token, case, is_send, value)``, and takes them back with ``("unoffer", oid,
token)`` when it returns.

At a home, an offer is poked, ``("poke", token)``, once its case could complete (``check``): a
value or a sender there for a receive case, room or a receiver for a send, the channel closed,
or an offer of the other side by a select whose token orders after this one's (select meets
select: the first in token order tries, the other waits, as Go's selects take channel locks in
one global order). The home checks a channel's offers when an offer comes, after every request
carried out on it and every put landed, and, for what the home's own goroutines do, on a timer
while offers wait there (``_poll``: local, no message unless a poke). The poked select tries its
cases again; a try from it clears its poke here, so a later change pokes it again. A try
(``trysend``/``tryrecv``) finding no partner takes an offer of the other side if it can claim
the offer's token at the token's node (node operation ``claim``, object id 0): the claim is a
send on the token's channel without blocking, which commits only while the select waits on it.
A waiting select has no timer: deadlock detection sees it blocked, and ``Rounds.quiet`` asks
``unpoked_ready`` whether a poke is due.

Invariants:
- A token commits at most one case: its claim is a non-blocking send on an unbuffered channel
  only its select receives from, and only while the select waits there.
- A poke is never lost: the poke channel holds one until the select takes it (it tries its
  cases after each).
- ``offers[oid]`` holds only offers of nodes not lost, each until its select withdraws it or a
  try took it; ``poked`` holds (node, token, oid) of offers poked whose select has not tried
  that channel since.
"""

from __future__ import annotations

from typing import Any

from .._chan import Chan, default, select
from .._errors import ProcessLost

#: the home's timer for what its own goroutines do to offered channels: from, to (seconds)
_POLL_MIN = 0.0005
_POLL_MAX = 0.010


class Offers:
    """This node's selects' tokens and the cases other nodes' selects offer here (P0's hub
    only). ``net``: the node's ``Net``."""

    def __init__(self, net: Any) -> None:
        self.net = net
        #: select tokens of this node's selects that offered cases: id -> (the unbuffered
        #: channel the select waits on, its poke channel, the homes it offered cases at)
        self.tokens: dict[Any, tuple[Chan, Chan, frozenset[int]]] = {}
        #: the cases other nodes' selects offer on channels homed here:
        #: oid -> [(node, token id, case, is_send, value)]
        self.offers: dict[int, list[tuple]] = {}
        #: offers poked whose select has not tried their channel since: (node, token id, oid)
        self.poked: set[tuple[int, Any, int]] = set()
        #: the poller goroutine runs (``_poll``), and is asleep on a timer
        self.polling = False
        self.poll_asleep = False

    # ------------------------------------------------------------------ the select's side

    def offer(self, tid: Any, token: Chan, poke: Chan, cases: list[tuple]) -> None:
        """Register a select's token and poke channel and offer its cases ``(home, oid, case,
        is_send, value)`` at their homes (no answer)."""
        net = self.net
        self.tokens[tid] = (token, poke, frozenset(c[0] for c in cases))
        for home, oid, case, is_send, value in cases:
            if home not in net.lost:
                net.send(home, ("offer", oid, tid, case, is_send, value))
            else:  # lost since the select tried it: trying again raises ProcessLost
                select((poke.send, None), default)

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
        got = self.tokens.get(tid)
        if got is None:
            return "gone"
        if select((got[0].send, (case, payload)), default)[0] == 0:
            return "ok"
        return "busy"

    def poke(self, tid: Any) -> None:
        """(dispatcher) A home saw a case of token ``tid``'s select become possible: have it
        try its cases again (a poke already waiting there covers this one)."""
        got = self.tokens.get(tid)
        if got is not None:
            select((got[1].send, None), default)

    # ------------------------------------------------------------------ the home's side

    def add(self, node: int, oid: int, offer: tuple) -> None:
        """(dispatcher) A select of ``node`` offers ``(token id, case, is_send, value)`` on
        channel ``oid``."""
        self.offers.setdefault(oid, []).append((node, *offer))
        self.check(oid)
        if not self.polling:
            self.polling = True
            net = self.net
            net.infra += 1
            net.hub.spawn_local(self._poll, (), {})

    def remove(self, node: int, oid: int, tid: Any) -> None:
        """(dispatcher) The select of ``node`` with token ``tid`` takes its offer back."""
        kept = [o for o in self.offers.get(oid, ()) if o[:2] != (node, tid)]
        self.poked.discard((node, tid, oid))
        if kept:
            self.offers[oid] = kept
        else:
            self.offers.pop(oid, None)

    def tried(self, node: int, tid: Any, oid: int) -> None:
        """(dispatcher) The select of ``node`` with token ``tid`` tries channel ``oid`` again:
        a later change pokes it again."""
        self.poked.discard((node, tid, oid))

    def node_lost(self, node: int) -> None:
        """``node`` is lost: its selects are gone with it, and this node's selects with a case
        there try again (and raise ``ProcessLost``)."""
        for _token, poke, homes in list(self.tokens.values()):
            if node in homes:
                select((poke.send, None), default)
        for oid, offers in list(self.offers.items()):
            kept = [o for o in offers if o[0] != node]
            if kept:
                self.offers[oid] = kept
            else:
                del self.offers[oid]
        self.poked = {k for k in self.poked if k[0] != node}

    def _ready(self, oid: int) -> list[tuple]:
        """The offers on channel ``oid`` whose case could complete now (module doc)."""
        offers = self.offers.get(oid)
        ch = self.net.homes.exports.get(oid)
        if not offers or ch is None:
            return []
        st = ch.stats()
        buffered, senders, receivers, closed = (st.buffered, st.senders_waiting,
                                                st.receivers_waiting, st.closed)
        out = []
        for off in offers:
            node, tid, _case, is_send, _value = off
            if closed or (is_send and (receivers or buffered < ch.cap)) \
                    or (not is_send and (senders or buffered)) \
                    or any(o[3] != is_send and (o[0], o[1]) > (node, tid) for o in offers):
                out.append(off)
        return out

    def check(self, oid: int) -> bool:
        """Poke the selects whose offers on channel ``oid`` could complete now and were not
        poked since they last tried it; whether any was."""
        sent = False
        poked = self.poked
        net = self.net
        for node, tid, _case, _is_send, _value in self._ready(oid):
            key = (node, tid, oid)
            if key in poked or node in net.lost:
                continue
            poked.add(key)
            net.send(node, ("poke", tid))
            sent = True
        return sent

    def unpoked_ready(self) -> bool:
        """(``Rounds.quiet``) Whether an offer here could complete and waits for its poke."""
        poked = self.poked
        return any((o[0], o[1], oid) not in poked
                   for oid in list(self.offers) for o in self._ready(oid))

    def _poll(self) -> None:
        """(a goroutine, while offers wait here) Check every offered channel on a timer, for
        what this node's own goroutines do to them; sooner again after a poke."""
        from .._time import sleep

        delay = _POLL_MIN
        try:
            while self.offers and not self.net.stopping:
                self.poll_asleep = True
                try:
                    sleep(delay)
                finally:
                    self.poll_asleep = False
                sent = False
                for oid in list(self.offers):
                    sent = self.check(oid) or sent
                delay = _POLL_MIN if sent else min(delay * 2, _POLL_MAX)
        finally:
            self.polling = False
            self.net.infra -= 1

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
        self.check(oid)  # an offer found busy, or the trying select's own, may be due a poke
