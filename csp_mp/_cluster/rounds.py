"""Deadlock detection across nodes: node 0's rounds asking every node whether its program is
durably blocked, and the counters that make the answers one consistent cut.

Every node keeps one goroutine in a blocking call (a message from another node may wake its
goroutines, so its own checkdead never reports a deadlock), and counts the messages it sends to
and handles from each node (``sent``, ``handled``: the heartbeat, the probe and the fence
aside). Node 0 asks every node at each heartbeat, ``("dq", round)``; a node answers ``("dr",
round, state)``: its counters and its Ps' epochs when every program goroutine there is durably
blocked and nothing is queued (Go's checkdead, on its Ps), else None (``quiet``). Node 0
declares a deadlock when every node, itself included, says so in two rounds in a row with
nothing changed, and every message sent has been handled: counters frozen from the last answer
of the first round to the first of the second make one consistent cut of the cluster, at which
nothing runs, nothing can wake and nothing is in flight.

Invariants:
- ``sent[k]`` and ``handled[k]`` only grow; node i's ``sent[j]`` equals node j's
  ``handled[i]`` exactly when nothing sent from i to j is in flight or waiting to be handled.
- Answers to a round other than the current one are ignored; a deadlock is declared once.
"""

from __future__ import annotations

from typing import Any

from .._errors import DeadlockError, ProcessLost
from .._hub import Outcome
from .._mp import ctx as C


class Rounds:
    """This node's counters and, on node 0, the rounds (P0's hub only). ``net``: the node's
    ``Net``."""

    def __init__(self, net: Any) -> None:
        n = net.n
        self.net = net
        self.hub = net.hub
        #: messages sent to and handled from each node (module doc)
        self.sent = [0] * n
        self.handled = [0] * n
        #: (node 0) the round, the answers to it and the last round's states (all quiet)
        self.round = 0
        self.states: dict[int, Any] = {}
        self.last_quiet: tuple | None = None
        self.deadlocked = False

    def quiet(self) -> tuple | None:
        """(hub thread) None unless every program goroutine on this node is durably blocked
        and nothing is queued here; else what must not change for that to last: the messages
        sent to and handled from each node, and each P's epoch and wake-up counts."""
        hub = self.hub
        offers = self.net.offers
        # a timer is a wake-up to come, but for the home's check of offered channels, which
        # wakes nobody unless a select's case could complete (offers.py)
        if (hub.runq or hub.runnext is not None or hub.fresh
                or hub.pending_blocking != self.net.blocking_infra
                or hub.timers.next_delay() is not None
                and hub.timers.active > offers.poll_asleep
                or offers.unpoked_ready()):
            return None
        ps: list[tuple[int, int, int]] = []
        broker: Any = hub.broker
        if broker is not None:
            if broker.work_waiting():
                return None
            ctx = broker.ctx
            for q in range(ctx.nprocs):
                if q != ctx.p and (ctx.pload(q, C.P_STATUS) not in (C.STUCK, C.EXITED)
                                   or len(ctx.runq[q]) or len(ctx.inbox[q])):
                    return None
                # this P's epoch moves with every message handled here: its counts stand in
                ps.append((ctx.pload(q, C.P_EPOCH) if q != ctx.p else 0,
                           ctx.pload(q, C.P_SENT), ctx.pload(q, C.P_HANDLED)))
            if sum(p[1] for p in ps) != sum(p[2] for p in ps):
                return None  # a wake-up between this node's Ps is in flight
        return tuple(self.sent), tuple(self.handled), tuple(ps)

    def ask(self, node: int, rnd: int) -> None:
        """(dispatcher) Node 0 asks about round ``rnd``: answer it."""
        self.net.put_probe(node, ("dr", rnd, self.quiet()))

    def probe(self) -> None:
        """(node 0, hub thread, each heartbeat) Ask every node whether it is durably blocked."""
        net = self.net
        if net.stopping or self.deadlocked:
            return
        self.round += 1
        self.states = {}
        nodes = [k for k in range(1, net.n) if k not in net.lost]
        for k in nodes:
            net.put_probe(k, ("dq", self.round))
        if not nodes:
            self.answer(0, self.round, None)

    def answer(self, node: int, rnd: int, state: tuple | None) -> None:
        """(node 0, hub thread) A node's answer to round ``rnd``; the verdict once all are in."""
        if rnd != self.round or self.deadlocked:
            return  # an answer to a round given up
        net = self.net
        if node:
            self.states[node] = state
        live = [k for k in range(1, net.n) if k not in net.lost]
        if any(k not in self.states for k in live):
            return
        states = {0: self.quiet(), **{k: self.states[k] for k in live}}
        snap = tuple(sorted(states.items()))
        if (any(st is None for st in states.values())
                or any(states[i][0][j] != states[j][1][i]
                       for i in states for j in states if i != j)):
            self.last_quiet = None
            return
        if snap != self.last_quiet:
            self.last_quiet = snap
            return
        self.deadlocked = True
        self.hub.spawn_local(self._declare, (), {})

    def _declare(self) -> None:
        """(a goroutine on node 0) End the run with a DeadlockError whose stack covers every
        node."""
        hub = self.hub
        try:
            text = self.net.views.stack()
        except ProcessLost:  # a node went away meanwhile: its loss is what the program sees
            self.deadlocked = False
            return

        def end() -> None:
            if hub.outcome is None:
                hub.outcome = Outcome("deadlock", error=DeadlockError(stack=text))

        hub.post(end)
