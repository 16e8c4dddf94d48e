"""Execution traces across Ps: start and stop every P's recorder, merge their events at P0.

``start`` installs this P's recorder (``_hub/tracing.py``) and sends ``M_TRACE_REQ`` to the
other Ps, which install theirs; every P stamps its events with CLOCK_MONOTONIC, which all
processes share, relative to the ``t0`` P0 sent. A wake-up sent to another P starts a "wake"
flow whose id travels in the WAKE message (``_wrap_wakes``, ``wake_arrived``); while a trace runs
the compiled core's hand-offs go through the broker for that (``Peers.divert``). ``stop`` asks
the others to stop: each writes
its events to ``PATH.P<q>`` (msgpack) and answers ``M_TRACE_REP``; P0 reads and deletes those
files and writes the merged Chrome trace-event JSON to ``PATH``.

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

_msg = msgspec.msgpack.Encoder().encode
_unmsg = msgspec.msgpack.Decoder(tuple).decode
REPLY_TIMEOUT = 30.0  # how long P0 waits for another P's part of the trace

def env_path() -> str | None:
    """The trace output ``CSP_MP_TRACE`` names, or None."""
    return os.environ.get("CSP_MP_TRACE") or None


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
        _wrap_runq(rec, b)
        _wrap_wakes(rec, b)
    return rec


def _wrap_wakes(rec: rec_mod.Recorder, b: Any) -> None:
    """Traced wake-ups to other Ps: each starts a flow, and its message carries the flow's id
    to the P of the goroutine it wakes (``wake_arrived``). The compiled core's hand-off sends
    its wake-ups through the broker meanwhile (``Peers.divert``), so that every one is seen."""
    orig = b._queue_wake
    ev = rec.events
    me = b.p
    sent = [0]

    def queue_wake(p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                   data: bytes | None, off: int, flow: int = 0) -> None:
        sent[0] += 1
        fid = rec_mod.wake_flow_id(me, sent[0])
        ev.append(("s", time.monotonic_ns(), fid))
        orig(p, gid, slot, gen, case, kind, data, off, fid)

    b._queue_wake = queue_wake
    if b.peers is not None:
        b.peers.divert = True

    def undo() -> None:
        b.__dict__.pop("_queue_wake", None)
        if b.peers is not None:
            b.peers.divert = False

    rec.on_uninstall(undo)


def wake_arrived(gid: int, fid: int) -> None:
    """A wake-up sent while a trace runs reached this P: its flow ends where goroutine ``gid``
    next starts running (nothing when this P records no trace)."""
    rec = rec_mod.active()
    if rec is not None:
        rec.flows[gid] = fid


def _wrap_runq(rec: rec_mod.Recorder, b: Any) -> None:
    """Traced run-queue reads: each frame taken names the flow its G continues; a take from
    another P's queue is a steal."""
    incoming = rec.incoming
    rings = list(b.ctx.runq)
    me = b.p
    for q, ring in enumerate(rings):
        if q == me:
            continue  # this P's own frames: own_entry below names them

        def get_many(n: int, _orig: Any = ring.get_many, _q: int = q) -> list[bytes]:
            frames = _orig(n)
            for frame in frames:
                incoming.append(frame_flow(frame))
            if frames:
                rec.instant("steal", 0, f"{len(frames)} from P{_q}")
            return frames

        ring.get_many = get_many
    orig_own = b.own_entry

    def own_entry(entry: tuple) -> tuple:
        incoming.append(rec_mod.flow_id(me, entry[0]))  # the next G made runs frame entry[0]
        return orig_own(entry)

    b.own_entry = own_entry

    def undo() -> None:
        for ring in rings:
            ring.__dict__.pop("get_many", None)
        b.__dict__.pop("own_entry", None)

    rec.on_uninstall(undo)


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
