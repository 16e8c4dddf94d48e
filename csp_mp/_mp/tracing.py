"""Execution traces across Ps: start and stop every P's recorder, merge their events at P0.

``start`` installs this P's recorder (``_hub/tracing.py``) and sends ``M_TRACE_REQ`` to the
other Ps, which install theirs; every P stamps its events with CLOCK_MONOTONIC, which all
processes share, relative to the ``t0`` P0 sent. Beside the recorder, a watcher of the broker
(``_Flows``, ``watch.py``) links work across Ps: a frame taken from a run queue continues the
flow its ``go()`` started, a steal is an instant, and a wake-up sent to another P starts a
"wake" flow whose id travels in the WAKE message to where the woken goroutine runs next.
``stop`` asks the others to stop: each writes its events to ``PATH.P<q>`` (msgpack) and answers
``M_TRACE_REP``; P0 reads and deletes those files and writes the merged Chrome trace-event JSON
to ``PATH``.

Invariants:
- At most one trace runs per runtime; ``proc.trace["path"]`` is its output on P0 (None on the
  other Ps and when none runs), and ``proc.stop_trace`` is ``stop`` while it runs there.
- Owner P only (messages are handled on the hub thread).

Design notes: shipping the events through the inbox rings was rejected: a trace of 100 k
goroutines is tens of MB, far more than an inbox message holds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from .. import _hub
from .._hub import Hub
from .._hub import tracing as rec_mod
from .._proc import proc
from . import ctx as C
from .tasks import _UINT_BYTES
from .watch import Watcher

_msg = msgspec.msgpack.Encoder().encode
_unmsg = msgspec.msgpack.Decoder(tuple).decode
REPLY_TIMEOUT = 30.0  # how long P0 waits for another P's part of the trace



def start(path: str | os.PathLike[str]) -> None:
    """Start tracing every P of the runtime (the implicit one if none runs) into ``path``."""
    hub = _hub.current_hub()
    old = rec_mod.active()
    if old is not None:
        if old.hub is hub:
            raise RuntimeError("csp_mp.trace.start: a trace is already running")
        proc.recorder = None  # left over from a runtime that has ended
    path = os.fspath(path)
    t0 = time.monotonic_ns()
    _begin(hub, t0)
    proc.trace["path"] = path
    proc.trace["procs"] = hub.nprocs
    proc.stop_trace = stop
    b: Any = hub.broker
    if b is not None:
        for q in _others(b):
            b.send(q, _msg((C.M_TRACE_REQ, 1, t0, path)))


def stop() -> str | None:
    """Stop the trace and write it; its path, or None when no trace was running."""
    rec = rec_mod.active()
    path = proc.trace["path"]
    if rec is None or path is None:
        return None
    hub = rec.hub
    rec.uninstall()
    proc.trace["path"] = None
    proc.stop_trace = None
    events = rec.chrome_events()
    b: Any = hub.broker
    missing: list[int] = []
    if b is not None:
        missing = _gather(b, hub, path, events)
    procs = max(proc.trace["procs"], 1)
    doc = {"traceEvents": events, "displayTimeUnit": "ns",
           "otherData": {"generator": "csp_mp", "procs": procs,
                         "missing_ps": missing}}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode(doc))
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def tracing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Trace the body of a ``with`` block into ``path``."""
    start(path)
    try:
        yield
    finally:
        stop()


def on_message(b: Any, m: tuple) -> None:
    """Handle ``M_TRACE_REQ`` (start or stop this P's part) and ``M_TRACE_REP`` (P0)."""
    if m[0] == C.M_TRACE_REP:
        proc.trace["replies"].add(m[1])
        return
    hub = b.hub
    if m[1] == 1:  # start
        old = rec_mod.active()
        if old is not None:
            old.uninstall()
        _begin(hub, m[2])
        return
    rec = rec_mod.active()  # stop: write this P's part next to the trace, then say so
    events = []
    if rec is not None:
        rec.uninstall()
        events = rec.chrome_events()
    part = f"{m[3]}.P{b.p}"
    tmp = f"{part}.tmp"
    with open(tmp, "wb") as f:
        f.write(_msg(events))
    os.replace(tmp, part)
    b.send(0, _msg((C.M_TRACE_REP, b.p)))


def _others(b: Any) -> list[int]:
    ctx = b.ctx
    return [q for q in range(ctx.nprocs) if q != b.p and ctx.pload(q, C.P_STATUS) != C.EXITED]


def _gather(b: Any, hub: Hub, path: str, events: list) -> list[int]:
    """Ask the other Ps for their parts and append them to ``events``; the Ps that never
    answered."""
    ctx = b.ctx
    others = _others(b)
    replies: set[int] = proc.trace["replies"]
    replies.clear()
    for q in others:
        b.send(q, _msg((C.M_TRACE_REQ, 0, 0, path)))
    deadline = time.monotonic() + REPLY_TIMEOUT
    inbox = ctx.inbox[b.p]
    while not replies.issuperset(others) and time.monotonic() < deadline:
        if b.outbox:
            b.flush_outbox()
        for raw in inbox.get_many(256):
            b.handle(raw)
        if not replies.issuperset(others):
            if any(ctx.pload(q, C.P_STATUS) == C.EXITED for q in others if q not in replies):
                break
            ctx.bell.wait(0.01)
    missing = []
    for q in others:
        part = f"{path}.P{q}"
        try:
            with open(part, "rb") as f:
                events.extend(msgspec.msgpack.decode(f.read()))
            os.unlink(part)
        except FileNotFoundError:
            missing.append(q)
    return missing


def _begin(hub: Hub, t0: int) -> rec_mod.Recorder:
    rec = rec_mod.Recorder(hub, t0)
    rec.install()
    b: Any = hub.broker
    if b is not None:
        flows = _Flows(rec, b.p)
        b.watch(flows)
        rec.on_uninstall(lambda: b.unwatch(flows))
    return rec


class _Flows(Watcher):
    """What the trace draws between Ps: each frame taken names the flow its G continues (the
    recorder gives it to the next G made), a take from another P's queue is a steal, and each
    wake-up sent to another P starts a flow that ends where the goroutine it wakes runs next."""

    def __init__(self, rec: rec_mod.Recorder, p: int) -> None:
        self.rec = rec
        self.p = p
        self.sent = 0

    def stolen(self, q: int, frames: list[bytes]) -> None:
        incoming = self.rec.incoming
        for frame in frames:
            incoming.append(frame_flow(frame))
        if frames:
            self.rec.instant("steal", 0, f"{len(frames)} from P{q}")

    def own(self, seq: int) -> None:
        self.rec.incoming.append(rec_mod.flow_id(self.p, seq))

    def wake_sent(self, p: int, gid: int) -> int:
        self.sent += 1
        fid = rec_mod.wake_flow_id(self.p, self.sent)
        self.rec.events.append(("s", time.monotonic_ns(), fid))
        return fid

    def wake_arrived(self, gid: int, flow: int) -> None:
        self.rec.flows[gid] = flow  # its flow ends where gid next starts running


def frame_flow(frame: bytes) -> int:
    """The flow id of a task frame: from its first two items, seq and owner P."""
    vals = []
    i = 1
    for _ in range(2):
        b1 = frame[i]
        if b1 < 0x80:
            vals.append(b1)
            i += 1
        else:
            n = _UINT_BYTES[b1]
            vals.append(int.from_bytes(frame[i + 1 : i + 1 + n], "big"))
            i += 1 + n
    return rec_mod.flow_id(vals[1], vals[0])
