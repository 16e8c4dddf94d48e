"""Hook points of the scheduler: tools watch or steer a P's hub without replacing its methods.

A tool (the trace recorder, P replacement, the seeded scheduler) subclasses ``Instrument``,
overrides the events it needs and registers with ``install(hub, inst)``. Several may be
installed at once: every event goes to each of them in the order they were installed (``first``
puts one ahead of the others), and the ``blocking_call`` wrappers nest in that order (the first
installed is the outermost).

Events, on the hub thread unless said:

- ``spawning(fn, local)``: a goroutine is about to be started from this P (``go``,
  ``go_local``, ``spawn``), before anything of it exists;
- ``spawned(g)``: a goroutine record was made on this P (a new goroutine, or a frame taken
  from a run queue);
- ``queued(fn, seq)``: the broker framed a ``go()`` where other Ps can take it, as its frame
  ``seq``;
- ``parked(g, reason)``: ``g`` is about to park; ``readied(g)``: it was made runnable (its wait
  reason still set); ``yielded(g, preempted)``: it gives up the P (``gosched``);
- ``started_inline(g)``: a fresh ``g`` starts on the worker greenlet that ran the goroutine that
  just ended, with no greenlet switch (a switch trace function does not see it);
- ``exited(g)``: ``g`` ended;
- ``blocking_call(g, fn) -> fn``: what ``fn`` an M thread runs for ``g`` (a wrapper runs on the
  M thread).

A scheduler that decides the order (``Instrument.pick`` not None) is asked for every pick: the
hub then never switches straight from one goroutine to the next, and ``ready`` never uses the
``runnext`` slot. At most one such instrument is installed.

Design notes: with no instrument, a hub is a plain ``Hub`` and its hot paths carry no check at
all; ``install`` makes it an ``InstrumentedHub`` (the same object, its class changed by the hub's
own module), whose methods send the events and then run the plain ones, and the last
``uninstall`` makes it plain again. A flag tested in ``park``/``ready``/``go`` was rejected: they
are the scheduler's hottest lines.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from .g import DEAD, G
from .hub import Hub

__all__ = ["Instrument", "InstrumentedHub", "Seeded", "install", "installed", "uninstall"]


class Instrument:
    """A watcher of one P's scheduler: override the events you need (see the module doc)."""

    #: a scheduler that decides the order: ``pick(runq)`` removes and returns the next
    #: goroutine of the non-empty ``runq``
    pick: Callable[[deque], G] | None = None

    def spawning(self, fn: Callable[..., Any], local: bool) -> None:
        """A goroutine running ``fn`` is about to be started from this P."""

    def spawned(self, g: G) -> None:
        """A goroutine record was made on this P."""

    def queued(self, fn: Callable[..., Any], seq: int) -> None:
        """The broker framed a ``go(fn)`` as its frame ``seq``."""

    def parked(self, g: G, reason: str) -> None:
        """``g`` is about to park with wait reason ``reason``."""

    def readied(self, g: G) -> None:
        """``g`` was made runnable (its wait reason is still set)."""

    def yielded(self, g: G, preempted: bool) -> None:
        """``g`` gives up the P (``gosched``; ``preempted``: a time slice ended)."""

    def started_inline(self, g: G) -> None:
        """Fresh ``g`` starts on the worker greenlet of the goroutine that just ended."""

    def exited(self, g: G) -> None:
        """``g`` ended."""

    def blocking_call(self, g: G | None, fn: Callable[..., Any]) -> Callable[..., Any]:
        """The callable an M thread runs for ``g``'s blocking call of ``fn``."""
        return fn


class Seeded(Instrument):
    """The seeded scheduler (``CSP_MP_SCHED_SEED``): any runnable goroutine may go next."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pick = self._pick

    def _pick(self, runq: deque) -> G:
        i = self.rng.randrange(len(runq))
        runq.rotate(-i)
        g = runq.popleft()
        runq.rotate(i)
        return g


def installed(hub: Hub) -> tuple[Instrument, ...]:
    """The instruments of ``hub``, in the order their events are sent."""
    return hub.instruments


def install(hub: Hub, inst: Instrument, first: bool = False) -> None:
    """Send ``hub``'s events to ``inst`` too (owner thread)."""
    if inst in hub.instruments:
        raise ValueError(f"{inst!r} is already installed on this hub")
    if inst.pick is not None and hub.picker is not None:
        raise ValueError("a scheduler that decides the order is already installed")
    hub.instruments = (inst, *hub.instruments) if first else (*hub.instruments, inst)
    _rebind(hub)


def uninstall(hub: Hub, inst: Instrument) -> None:
    """Stop sending ``hub``'s events to ``inst``; nothing if it was not installed."""
    if inst not in hub.instruments:
        return
    hub.instruments = tuple(i for i in hub.instruments if i is not inst)
    _rebind(hub)


def _rebind(hub: Hub) -> None:
    pickers = [i.pick for i in hub.instruments if i.pick is not None]
    hub.picker = pickers[0] if pickers else None
    if hub.picker is not None and hub.runnext is not None:
        hub.runq.append(hub.runnext)  # the picker sees only the run queue
        hub.runnext = None
    hub.__class__ = InstrumentedHub if hub.instruments else Hub
    hub.bind_go()


class InstrumentedHub(Hub):
    """A hub with instruments: each scheduling method sends its event, then runs ``Hub``'s."""

    def spawn(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
              local: bool = True) -> G | None:
        if not self.stopping:
            for i in self.instruments:
                i.spawning(fn, local)
        return Hub.spawn(self, fn, args, kwargs, local)

    def spawn_local(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.spawn(fn, args, kwargs, True)  # through new_g: its record is announced

    def new_g(self, fn: Callable[..., Any], args: tuple, kwargs: dict, local: bool) -> G:
        g = Hub.new_g(self, fn, args, kwargs, local)
        for i in self.instruments:
            i.spawned(g)
        return g

    def new_gs(self, made: list[tuple[Callable[..., Any], tuple, Any]]) -> list[G]:
        gs = Hub.new_gs(self, made)
        for g in gs:
            for i in self.instruments:
                i.spawned(g)
        return gs

    def go_hooked(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """``go`` while instruments are installed: ``spawning``, the placer, then ``queued``."""
        if self.stopping:
            return None
        for i in self.instruments:
            i.spawning(fn, False)
        broker = self.broker
        seq = broker.seq if broker is not None else 0
        self.placer(fn, args, kwargs)
        if broker is not None and broker.seq != seq:
            for i in self.instruments:
                i.queued(fn, broker.seq)
        return None

    def park(self, reason: str) -> Any:
        g = self.current
        if g is not None:
            for i in self.instruments:
                i.parked(g, reason)
        return Hub.park(self, reason)

    def ready(self, g: G, value: Any = None, next_: bool = True) -> None:
        for i in self.instruments:
            i.readied(g)
        Hub.ready(self, g, value, next_ and self.picker is None)

    def gosched(self, preempted: bool = False) -> None:
        g = self.current
        if g is not None:
            for i in self.instruments:
                i.yielded(g, preempted)
        Hub.gosched(self, preempted)

    def blocking(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        g = self.current
        for i in reversed(self.instruments):
            fn = i.blocking_call(g, fn)
        return Hub.blocking(self, fn, args, kwargs)

    def _goexit(self, g: G) -> None:
        Hub._goexit(self, g)
        for i in self.instruments:
            i.exited(g)

    def runqget(self) -> G | None:
        if self.picker is not None:
            # nothing for a direct switch: every pick goes through the hub's pass, which asks
            # the picker (and never gets here)
            return None
        nxt = Hub.runqget(self)
        cur = self.current
        if nxt is not None and nxt.glet is None and cur is not None and cur.state == DEAD:
            for i in self.instruments:  # _worker runs it on this very greenlet
                i.started_inline(nxt)
        return nxt
