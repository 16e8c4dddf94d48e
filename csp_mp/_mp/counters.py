"""``runtime.metrics()``: counters of every P, gathered on the asking P.

Each hub counts with plain ints on its own thread (``Hub.n_*``, the sysmon's preemptions); a P
copies them to its per-P words of the control block (``ctx.P_CREATED`` on) when it goes idle
(at most every ``PUBLISH_EVERY``) and when asked for its stack, so the asker refreshes them
with one stack round trip.

Invariants:
- The per-P metric words are stored only by their P (a snapshot for anyone else).
"""

from __future__ import annotations

import os
from typing import Any

from .._hub import Hub
from . import ctx as C

PUBLISH_EVERY = 0.02  # seconds between two publications of an idling P (metrics() asks anyway)
_WORDS = (C.P_CREATED, C.P_PREEMPT, C.P_BLOCKING, C.P_XOPS, C.P_XBYTES, C.P_MTHREADS, C.P_MBUSY)


def _local(hub: Hub) -> tuple[int, ...]:
    """This P's counters, in the order of ``_WORDS``."""
    sm = hub.sysmon
    pool = hub.mpool
    started = len(pool._threads)
    broker: Any = hub.broker
    queued = getattr(broker, "seq", 0)  # go() calls the broker framed (hub.go: its place)
    xops, xbytes = hub.n_xops, hub.n_xbytes
    peers = getattr(broker, "peers", None)  # the compiled core's fast paths count there
    if peers is not None:
        xops += peers.ops
        xbytes += peers.bytes
    return (hub.n_created + queued, sm.preempted if sm is not None else 0, hub.n_blocking,
            xops, xbytes, started, max(0, started - pool.idle))


def publish(ctx: C.Ctx, hub: Hub) -> None:
    """Copy this P's counters to its words (owner P only)."""
    for i, v in zip(_WORDS, _local(hub), strict=True):
        ctx.pstore(i, v)


def live_objects(ctx: C.Ctx, pinned: bool = True) -> dict[str, int]:
    """The runtime's live shared objects by kind: what every P made live minus what it ended
    (words each P writes at once, so the count is exact whenever no P is mid-operation);
    without the pinned ones (kept until the run ends) if ``pinned`` is false."""
    live = {kind: ctx.live(word) for kind, word in C.LIVE_KINDS.items()}
    if not pinned:
        for kind, word in C.PINNED_KINDS.items():
            live[kind] -= ctx.live(word)
    return live


def metrics(hub: Hub) -> dict[str, Any]:
    """The figures ``runtime.metrics()`` documents, for every P of ``hub``'s runtime."""
    broker: Any = hub.broker  # the _mp Broker, more than the hub's Protocol says
    ctx = C.current()
    if broker is None or ctx is None:
        rows = {hub.p: _local(hub)}
        goroutines = {hub.p: hub.num_goroutine()}
        steals = 0
        arena: dict[str, Any] = {"size": 0, "in_use": 0}
        shared: dict[str, int] = {}
        pids = [os.getpid()]
    else:
        broker.gather_stacks(hub, 1.0)  # every live P publishes its counters as it answers
        publish(ctx, hub)
        n = ctx.nprocs
        rows = {q: tuple(ctx.pload(q, i) for i in _WORDS) for q in range(n)}
        rows[hub.p] = _local(hub)
        goroutines = {q: (hub.num_goroutine() if q == hub.p else
                          0 if ctx.pload(q, C.P_STATUS) == C.EXITED else ctx.pload(q, C.P_NGOR))
                      for q in range(n)}
        steals = sum(ctx.pload(q, C.P_STOLEN) for q in range(n))
        a = ctx.arena
        arena = {"size": a.size, "in_use": a.size - a.free_bytes()}
        shared = live_objects(ctx)
        pids = [ctx.pload(q, C.P_PID) for q in range(n)]  # a lost P's: the dead process's
    col = {name: sum(r[k] for r in rows.values()) for k, name in enumerate(
        ("created", "preempt", "blocking", "xops", "xbytes", "mthreads", "mbusy"))}
    return {
        "procs": len(rows),
        "goroutines": sum(goroutines.values()),
        "goroutines_per_p": [goroutines.get(q, 0) for q in range(len(rows))],
        "goroutines_created": col["created"],
        "steals": steals,
        "preemptions": col["preempt"],
        "shared_chan_ops": col["xops"],
        "shared_chan_bytes": col["xbytes"],
        "blocking_calls": col["blocking"],
        "m_threads": col["mthreads"],
        "m_threads_busy": col["mbusy"],
        "arena_bytes": arena["size"],
        "arena_bytes_in_use": arena["in_use"],
        "shared_objects": shared,
        "pids": pids,
    }
