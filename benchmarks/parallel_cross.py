"""The cross-P channel measurements of the ``parallel`` family: csp_mp's side and its peers'.

csp_mp's side runs in one of the family's children (``child_cross``, inside ``run(procs=2)``).
Goroutines are pinned to P1 by "placers": the main goroutine keeps starting ``go(_placer, ...)``
until one of them observes ``runtime.current_p() == 1`` and wins an atomic flag; that one becomes
the anchor which starts consumers with ``go_local`` (they never leave P1). When no goroutine
reaches P1 within a deadline (a one-process runtime), the child answers with an error.

The peers (``multiprocessing.Queue`` and ``Pipe``, faster-fifo) run from the family's process,
each to consumer processes started by the spawn context.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from typing import Any

from ._common import spin

FF_BATCH = 256  # faster-fifo items per put_many, as a user batching ints would
ARRAY_BYTES = 64 * 2**20
ARRAY_WARMUP = 2  # untimed transfers first: a fresh arena block's pages fault in on first touch

# ====================================================================== csp_mp side (a child)


def _placer(claimed: Any, target: int, cmds: Any, placed: Any) -> None:
    """Become the anchor on P ``target`` if this goroutine runs there first; else burn a little.

    The short spin keeps unstarted placers queued long enough for an idle P to steal some.
    """
    from csp_mp import go_local, runtime

    if runtime.current_p() == target and claimed.compare_and_swap(False, True):
        placed.send(time.monotonic())
        if cmds is not None:
            for fn, args in cmds:  # the anchor: start what P0 asks for, pinned here
                go_local(fn, *args)
        return
    spin(0.0002)


def place_on(target: int, cmds: Any, deadline_s: float) -> float | None:
    """From a goroutine on P0: get a goroutine onto P ``target``; the monotonic time it got there.

    None when no goroutine reached that P within ``deadline_s``.
    """
    import csp_mp
    from csp_mp import atomic

    claimed = atomic.Bool(False)
    placed = csp_mp.Chan(1)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for _ in range(4):
            csp_mp.go(_placer, claimed, target, cmds, placed)
        i, v = csp_mp.select(placed.recv, csp_mp.after(0.02).recv)
        if i == 0:
            return v
    return None


def _consume_n(ch: Any, n: int, ready: Any, done: Any) -> None:
    from csp_mp import runtime

    ready.send(runtime.current_p())
    for _ in range(n):
        ch.recv()
    done.send(time.monotonic())


def _drain(ch: Any, ready: Any, done: Any) -> None:
    from csp_mp import runtime

    ready.send(runtime.current_p())
    c = 0
    for _ in ch:
        c += 1
    done.send((c, time.monotonic()))


def _produce(ch: Any, m: int, wg: Any) -> None:
    for i in range(m):
        ch.send(i)
    wg.done()


def _array_sink(ch: Any, ready: Any, done: Any) -> None:
    from csp_mp import runtime

    ready.send(runtime.current_p())
    while True:
        a = ch.recv()
        if a is None:
            return
        done.send((time.monotonic(), int(a[-1])))


def _cross_1to1(cmds: Any, n: int, cap: int = 1024) -> float:
    """msgs/s through a ``Chan(cap)``, P0 -> a goroutine of P1 (``cap`` 0: each send is a
    rendezvous, a hand-off to the parked receiver or a receive from the parked sender)."""
    import csp_mp

    ch, ready, done = csp_mp.Chan(cap), csp_mp.Chan(1), csp_mp.Chan(1)
    cmds.send((_consume_n, (ch, n, ready, done)))
    if ready.recv() != 1:
        raise RuntimeError("consumer did not run on P1")
    t0 = time.monotonic()
    for i in range(n):
        ch.send(i)
    return n / (done.recv() - t0)


def _cross_4to2(cmds: Any, n: int) -> float:
    import csp_mp

    ch, ready, done = csp_mp.Chan(1024), csp_mp.Chan(2), csp_mp.Chan(2)
    for _ in range(2):
        cmds.send((_drain, (ch, ready, done)))
    if [ready.recv(), ready.recv()] != [1, 1]:
        raise RuntimeError("consumers did not run on P1")
    m = n // 4
    wg = csp_mp.WaitGroup()
    t0 = time.monotonic()
    for _ in range(4):
        wg.add(1)
        csp_mp.go_local(_produce, ch, m, wg)
    wg.wait()
    ch.close()
    got = [done.recv(), done.recv()]
    if sum(c for c, _ in got) != 4 * m:
        raise RuntimeError("4->2: messages lost or duplicated")
    return 4 * m / (max(t for _, t in got) - t0)


def _cross_array(cmds: Any, reps: int) -> list[float]:
    import numpy as np

    import csp_mp

    arr = np.arange(ARRAY_BYTES // 8, dtype=np.int64)
    ch, ready, done = csp_mp.Chan(), csp_mp.Chan(1), csp_mp.Chan(1)
    cmds.send((_array_sink, (ch, ready, done)))
    if ready.recv() != 1:
        raise RuntimeError("array sink did not run on P1")
    out = []
    for _ in range(ARRAY_WARMUP + reps):
        t0 = time.monotonic()
        ch.send(arr)
        t1, last = done.recv()
        if last != arr[-1]:
            raise RuntimeError("array arrived altered")
        out.append(arr.nbytes / (t1 - t0) / 1e9)
    ch.send(None)
    return out  # the warm-up transfers first


def child_cross(procs: int, n: int, reps: int, array_reps: int, deadline_s: float) -> dict:
    """Cross-P channel figures in one ``run(procs=procs)``: 1->1, 4->2 (msgs/s), array (GB/s)."""
    import csp_mp

    def main() -> dict:
        cmds = csp_mp.Chan(16)
        if place_on(1, cmds, deadline_s) is None:
            return {"error": f"no goroutine ran on P1 within {deadline_s:g} s"}
        res: dict[str, Any] = {"1to1": [], "4to2": [], "unbuf": [], "array": []}
        errors = []
        for key, fn in (("1to1", lambda: [_cross_1to1(cmds, n) for _ in range(reps)]),
                        ("4to2", lambda: [_cross_4to2(cmds, n) for _ in range(reps)]),
                        ("unbuf", lambda: [_cross_1to1(cmds, n // 8, 0) for _ in range(reps)]),
                        ("array", lambda: _cross_array(cmds, array_reps))):
            try:
                res[key] = fn()
            except Exception as exc:  # one failing figure must not hide the others
                errors.append(f"{key}: {type(exc).__name__}: {exc}")
        cmds.close()
        if errors:
            res["error"] = "; ".join(errors)
        return res

    return csp_mp.run(main, procs=procs)


# ====================================================================== peers (this process)


def _mpq_consume_n(q: Any, n: int, done: Any) -> None:
    done.put("ready")
    for _ in range(n):
        q.get()
    done.put(time.monotonic())


def _mpq_drain(q: Any, done: Any) -> None:
    done.put("ready")
    c = 0
    while q.get() is not None:
        c += 1
    done.put((c, time.monotonic()))


def _mpq_produce(q: Any, m: int, start: Any, done: Any) -> None:
    done.put("ready")
    start.wait()
    for i in range(m):
        q.put(i)


def _mpq_array_sink(q: Any, done: Any) -> None:
    done.put("ready")
    while True:
        a = q.get()
        if a is None:
            return
        done.put((time.monotonic(), int(a[-1])))


def _ctx() -> Any:
    return mp.get_context("spawn")  # no fork of a process that has run greenlets and threads


def mpq_1to1(n: int) -> float:
    """msgs/s of ``multiprocessing.Queue``, this process -> one consumer process."""
    ctx = _ctx()
    q, done = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_mpq_consume_n, args=(q, n, done))
    p.start()
    done.get()
    t0 = time.monotonic()
    for i in range(n):
        q.put(i)
    t1 = done.get()
    p.join()
    return n / (t1 - t0)


def mpq_4to2(n: int) -> float:
    """msgs/s of one ``multiprocessing.Queue``, 4 producer processes -> 2 consumer processes."""
    ctx = _ctx()
    q = ctx.Queue()
    return _four_to_two(ctx, n, q, _mpq_drain, _mpq_produce, q.put, "multiprocessing.Queue")


def _four_to_two(ctx: Any, n: int, q: Any, drain: Any, produce: Any, put_end: Any,
                 name: str) -> float:
    """msgs/s of ``n`` messages through ``q`` from 4 producer processes to 2 consumers, from
    when every one of them is ready until the last consumer has its share; ``put_end(None)``
    ends a consumer."""
    done, start = ctx.Queue(), ctx.Event()
    m = n // 4
    cons = [ctx.Process(target=drain, args=(q, done)) for _ in range(2)]
    prods = [ctx.Process(target=produce, args=(q, m, start, done)) for _ in range(4)]
    for p in cons + prods:
        p.start()
    for _ in range(6):
        done.get()
    t0 = time.monotonic()
    start.set()
    for p in prods:
        p.join()
    put_end(None)
    put_end(None)
    got = [done.get(), done.get()]
    for p in cons:
        p.join()
    if sum(c for c, _ in got) != 4 * m:
        raise RuntimeError(f"{name} 4->2 lost messages")
    return 4 * m / (max(t for _, t in got) - t0)


def mpq_array(reps: int) -> list[float]:
    """GB/s of a 64 MiB NumPy array put on a ``multiprocessing.Queue`` to another process."""
    import numpy as np

    ctx = _ctx()
    arr = np.arange(ARRAY_BYTES // 8, dtype=np.int64)
    q, done = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_mpq_array_sink, args=(q, done))
    p.start()
    done.get()
    out = []
    for _ in range(ARRAY_WARMUP + reps):
        t0 = time.monotonic()
        q.put(arr)
        t1, last = done.get()
        assert last == arr[-1]
        out.append(arr.nbytes / (t1 - t0) / 1e9)
    q.put(None)
    p.join()
    return out[ARRAY_WARMUP:]


def _pipe_consume_n(conn: Any, n: int, done: Any) -> None:
    done.put("ready")
    for _ in range(n):
        conn.recv()
    done.put(time.monotonic())


def pipe_1to1(n: int) -> float:
    """msgs/s of ``multiprocessing.Pipe``, this process -> one consumer process."""
    ctx = _ctx()
    r, w = ctx.Pipe(duplex=False)
    done = ctx.Queue()
    p = ctx.Process(target=_pipe_consume_n, args=(r, n, done))
    p.start()
    done.get()
    t0 = time.monotonic()
    for i in range(n):
        w.send(i)
    t1 = done.get()
    p.join()
    r.close()
    w.close()
    return n / (t1 - t0)


def _pipe_ack_n(conn: Any, n: int, done: Any) -> None:
    done.put("ready")
    for _ in range(n):
        conn.send(conn.recv())


def pipe_rendezvous(n: int) -> float:
    """msgs/s of a duplex ``multiprocessing.Pipe`` used as a rendezvous: each message to one
    consumer process waits for its acknowledgement before the next (an unbuffered send)."""
    ctx = _ctx()
    a, b = ctx.Pipe()
    done = ctx.Queue()
    p = ctx.Process(target=_pipe_ack_n, args=(b, n, done))
    p.start()
    done.get()
    t0 = time.monotonic()
    for i in range(n):
        a.send(i)
        a.recv()
    t1 = time.monotonic()
    p.join()
    a.close()
    b.close()
    return n / (t1 - t0)


def _ff_queue() -> Any:
    try:
        from faster_fifo import Queue
    except ImportError:
        return None
    return Queue(max_size_bytes=1 << 22)


def _ff_put(q: Any, lo: int, hi: int) -> None:
    for i in range(lo, hi, FF_BATCH):
        q.put_many(list(range(i, min(hi, i + FF_BATCH))), timeout=60)


def _ff_consume_n(q: Any, n: int, done: Any) -> None:
    done.put("ready")
    got = 0
    while got < n:
        got += len(q.get_many(max_messages_to_get=4 * FF_BATCH, timeout=60))
    done.put(time.monotonic())


def _ff_drain(q: Any, done: Any) -> None:
    done.put("ready")
    c = 0
    while True:
        batch = q.get_many(max_messages_to_get=4 * FF_BATCH, timeout=60)
        if batch[-1] is None:  # the sentinels come after every message
            ends = batch.count(None)
            c += len(batch) - ends
            for _ in range(ends - 1):
                q.put(None)  # a sentinel meant for the other consumer
            break
        c += len(batch)
    done.put((c, time.monotonic()))


def _ff_produce(q: Any, m: int, start: Any, done: Any) -> None:
    done.put("ready")
    start.wait()
    _ff_put(q, 0, m)


def ff_1to1(n: int) -> float | None:
    """msgs/s of faster-fifo ``put_many``/``get_many`` in batches, this process -> one consumer
    process; None when faster-fifo is not installed."""
    q = _ff_queue()
    if q is None:
        return None
    ctx = _ctx()
    done = ctx.Queue()
    p = ctx.Process(target=_ff_consume_n, args=(q, n, done))
    p.start()
    done.get()
    t0 = time.monotonic()
    _ff_put(q, 0, n)
    t1 = done.get()
    p.join()
    return n / (t1 - t0)


def ff_4to2(n: int) -> float | None:
    """msgs/s of one faster-fifo queue, 4 producer processes -> 2 consumer processes, batched;
    None when faster-fifo is not installed."""
    q = _ff_queue()
    if q is None:
        return None
    return _four_to_two(_ctx(), n, q, _ff_drain, _ff_produce,
                        functools.partial(q.put, timeout=60), "faster-fifo")
