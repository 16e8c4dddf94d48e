"""The per-P recorder of an execution trace: what ran on this P, when, and why it stopped.

While a trace runs, the recorder is an instrument on the hub's hook points (``hooks.py``: every
goroutine made, queued, parked, readied, yielded, ended, every blocking call) and a greenlet
trace function on the hub thread sees every switch between goroutines; ``uninstall`` takes both
away. Events are appended as tuples to a list and turned into Chrome trace events only at the
end.

Invariants:
- At most one recorder per process (``active()``); it is installed on the hub thread and every
  method it wraps runs there, except the wrapped blocking calls, which run on M threads and
  only append to ``events`` (a list append is atomic).
- ``running`` is the goroutine whose run slice is open (started at ``since``), or None while the
  hub itself runs.
- Owner P only.

Design notes: tracing off costs nothing, since a hub with no instrument runs no hook code
(``hooks.py``); other instruments (P replacement, the seeded scheduler) may run beside it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from time import monotonic_ns
from typing import Any

import greenlet

from .._proc import proc
from . import hooks
from .g import DEAD, G
from .hooks import Instrument

_LOCAL_FLOW = 1 << 48  # flow ids of goroutines made on their own P: above any (P, seq) id
_WAKE_FLOW = 2 << 48  # flow ids of wake-ups sent to another P (a send waking a receiver)

def active() -> Recorder | None:
    """This process's recorder, or None when no trace runs here."""
    return proc.recorder


def fn_name(fn: Any) -> str:
    """``module.qualname`` of a goroutine's function, as the trace names its slices."""
    what = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{what}" if mod and mod != "builtins" else str(what)


def flow_id(p: int, seq: int) -> int:
    """The flow id of the goroutine that P ``p`` queued as frame ``seq`` (unique in a run)."""
    return (p << 32) + seq


def wake_flow_id(p: int, n: int) -> int:
    """The flow id of the ``n``-th wake-up P ``p`` sent to another P (unique in a run)."""
    return _WAKE_FLOW + flow_id(p, n)


class Recorder(Instrument):
    """Records one P's scheduling events between ``install`` and ``uninstall``."""

    def __init__(self, hub: Any, t0: int) -> None:
        self.hub = hub
        self.p = hub.p
        self.t0 = t0  # CLOCK_MONOTONIC ns of the trace's start (P0's), shared by every P
        self.events: list[tuple] = []
        self.names: dict[int, str] = {}  # goroutine id -> function name
        self.flows: dict[int, int] = {}  # goroutine id -> flow id, until its first slice
        self.incoming: deque[int] = deque()  # flow ids of frames taken, for the next new G
        self.running: G | None = None
        self.since = 0
        self._local_flows = 0
        self._prev_trace: Any = None
        self._hooks: list[Callable[[], None]] = []  # undo steps of upper layers (on_uninstall)

    # ----------------------------------------------------------------- install / uninstall

    def install(self) -> None:
        """Start recording: this recorder on the hub's hook points, a greenlet trace function
        (hub thread)."""
        hub = self.hub
        hooks.install(hub, self)
        self._prev_trace = greenlet.settrace(self._on_switch)
        cur = hub.current
        if cur is not None:  # the goroutine starting the trace: its slice opens now
            self._begin(cur, monotonic_ns())
        proc.recorder = self

    def on_uninstall(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` at ``uninstall`` (an upper layer's own traced variants)."""
        self._hooks.append(undo)

    def uninstall(self) -> None:
        """Stop recording and leave the hub's hook points (hub thread)."""
        greenlet.settrace(self._prev_trace)
        hooks.uninstall(self.hub, self)
        for undo in self._hooks:
            undo()
        if self.running is not None:
            now = monotonic_ns()
            self.events.append(("X", self.since, now - self.since, self.running.id))
            self.running = None
        proc.recorder = None

    # ----------------------------------------------------------------- the hub's events

    def spawned(self, g: G) -> None:
        self._created(g, g.fn)

    def queued(self, fn: Callable[..., Any], seq: int) -> None:
        now = monotonic_ns()  # a go() framed as seq: its flow starts here
        self.events.append(("i", now, "go", 0, fn_name(fn)))
        self.events.append(("s", now, flow_id(self.p, seq)))

    def parked(self, g: G, reason: str) -> None:
        self.events.append(("i", monotonic_ns(), "park", g.id, reason))

    def readied(self, g: G) -> None:
        self.events.append(("i", monotonic_ns(), "unpark", g.id, g.reason))

    def yielded(self, g: G, preempted: bool) -> None:
        self.events.append(("i", monotonic_ns(), "preempt" if preempted else "gosched", g.id,
                            ""))

    def started_inline(self, g: G) -> None:
        if self.running is None:
            self._begin(g, monotonic_ns())

    def exited(self, g: G) -> None:
        now = monotonic_ns()
        if self.running is g:
            self.events.append(("X", self.since, now - self.since, g.id))
            self.running = None
        self.events.append(("i", now, "end", g.id, ""))

    def blocking_call(self, g: G | None, fn: Callable[..., Any]) -> Callable[..., Any]:
        ev = self.events
        gid = g.id if g is not None else 0
        name = fn_name(fn)

        def call(*a: Any, **k: Any) -> Any:  # runs on an M thread
            t = monotonic_ns()
            try:
                return fn(*a, **k)
            finally:
                ev.append(("M", t, monotonic_ns() - t, threading.get_ident(), name, gid))

        return call

    def _on_switch(self, event: str, args: Any) -> None:
        if event != "switch" and event != "throw":
            return
        now = monotonic_ns()
        run = self.running
        if run is not None:
            self.events.append(("X", self.since, now - self.since, run.id))
            self.running = None
        hub = self.hub
        if args[1] is not hub.hub_glet:
            g = hub.current
            if g is not None and g.state != DEAD:
                self._begin(g, now)

    # ----------------------------------------------------------------- recording

    def _created(self, g: G, fn: Any) -> None:
        now = monotonic_ns()
        self.names[g.id] = g.name or fn_name(fn)
        if self.incoming:
            self.flows[g.id] = self.incoming.popleft()  # a frame of go(): its flow began there
            return
        self._local_flows += 1
        fid = _LOCAL_FLOW + flow_id(self.p, self._local_flows)
        self.flows[g.id] = fid
        self.events.append(("i", now, "go", g.id, self.names[g.id]))
        if self.running is not None:
            self.events.append(("s", now, fid))

    def _begin(self, g: G, now: int) -> None:
        if g.id not in self.names:  # made before the trace started
            self.names[g.id] = g.name or fn_name(g.fn)
        self.running = g
        self.since = now
        fid = self.flows.pop(g.id, None)
        if fid is not None:
            self.events.append(("f", now, fid))

    def instant(self, name: str, gid: int, detail: str) -> None:
        """Record an instant event of an upper layer (a steal, say)."""
        self.events.append(("i", monotonic_ns(), name, gid, detail))

    def chrome_events(self) -> list[dict]:
        """The recorded events as Chrome trace events (timestamps in µs from ``t0``)."""
        p = self.p
        t0 = self.t0
        names = self.names
        out: list[dict] = [
            {"ph": "M", "name": "process_name", "pid": p, "tid": 0, "args": {"name": f"P{p}"}},
            {"ph": "M", "name": "process_sort_index", "pid": p, "tid": 0,
             "args": {"sort_index": p}},
            {"ph": "M", "name": "thread_name", "pid": p, "tid": 0,
             "args": {"name": "goroutines"}}]
        mtids: dict[int, int] = {}
        for e in self.events:
            kind = e[0]
            ts = (e[1] - t0) / 1000
            if kind == "X":
                out.append({"ph": "X", "name": names.get(e[3], "?"), "cat": "run", "pid": p,
                            "tid": 0, "ts": ts, "dur": e[2] / 1000, "args": {"goid": e[3]}})
            elif kind == "i":
                args: dict[str, Any] = {"goid": e[3]}
                if e[4]:
                    args["reason" if e[2] in ("park", "unpark") else "detail"] = e[4]
                out.append({"ph": "i", "s": "t", "name": e[2], "cat": "sched", "pid": p,
                            "tid": 0, "ts": ts, "args": args})
            elif kind == "s" or kind == "f":
                d = {"ph": kind, "name": "wake" if e[2] >= _WAKE_FLOW else "go", "cat": "flow",
                     "id": e[2], "pid": p, "tid": 0, "ts": ts}
                if kind == "f":
                    d["bp"] = "e"
                out.append(d)
            elif kind == "M":
                tid = mtids.get(e[3])
                if tid is None:
                    tid = mtids[e[3]] = len(mtids) + 1
                    out.append({"ph": "M", "name": "thread_name", "pid": p, "tid": tid,
                                "args": {"name": f"M{tid}"}})
                out.append({"ph": "X", "name": e[4], "cat": "blocking", "pid": p, "tid": tid,
                            "ts": ts, "dur": e[2] / 1000, "args": {"goid": e[5]}})
        return out


__all__ = ["Recorder", "active", "flow_id", "fn_name", "wake_flow_id"]
