"""Several-P figures: CPU-bound speedup, tiny-task throughput, cross-P channels, start-up.

Every csp_mp measurement runs in a fresh child interpreter under a timeout (a runtime that hangs or
crashes becomes an "n/a" row, never a stuck runner), once per runtime path: with
``CSP_MP_NATIVE=1`` (the compiled core) and with ``CSP_MP_NATIVE=0`` (the pure-Python path), each
row's figure saying which (``CSP_MP_BENCH_NATIVE=1`` or ``0`` measures one path only). The peers
(``multiprocessing.Pool``, ``ProcessPoolExecutor``, loky, mpire, ``multiprocessing.Queue`` and
``Pipe``, faster-fifo) run from this process, interleaved with the csp_mp runs of the same repeat;
a peer that is not installed gives an "n/a" baseline.

Goroutines are pinned to P1 by "placers": the main goroutine keeps starting ``go(_placer, ...)``
until one of them observes ``runtime.current_p() == 1`` and wins an atomic flag; that one becomes
the anchor which starts consumers with ``go_local`` (they never leave P1). When no goroutine
reaches P1 within a deadline (a one-process runtime), the figures that need P1 read "n/a".

``python -m benchmarks.bench_parallel [--quick]`` prints this family's rows (``--startup``: only
the start-up rows a user's script pays, import included);
``python -m benchmarks.bench_parallel --child NAME PARAMS_JSON`` is the child.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import (
    all_met,
    at_least,
    at_most,
    burn,
    calibrate_burn,
    child_env,
    csp_paths,
    json_child,
    median,
    on_path,
    pick,
    row,
    spin,
)

FAMILY = "parallel"
SPEEDUP_BAR = 1.85
VS_POOL_BAR = 1.0  # csp_mp procs=2's wall time over multiprocessing.Pool(2)'s and PPE(2)'s
# issue 11's bars, against peers measured in the same run
TINY_VS_P1_BAR = 1.6  # issue 23: 100 k tiny tasks on 2 Ps against 1 P
TINY_VS_MPIRE_BAR = 2.0
TINY_VS_PPE_BAR = 10.0
CROSS_MOONSHOT = 1_000_000.0
CROSS_VS_MPQ_BAR = 3.0
CROSS_VS_PIPE_BAR = 2.0
CROSS_VS_FF_BAR = 2.0
CROSS42_VS_MPQ_BAR = 3.0
CROSS42_VS_FF_BAR = 1.5
FF_BATCH = 256  # faster-fifo items per put_many, as a user batching ints would
ARRAY_GBPS_BAR = 5.0
ARRAY_VS_MPQ_BAR = 5.0
STARTUP_VS_PPE_BAR = 4.0  # run(procs=2) to P1 <= 4x ProcessPoolExecutor(2, fork) to 1st task
# issue 23's start-up bars, as a user's script pays them (fresh interpreter, cached bytecode)
IMPORT_VS_CFP_BAR = 2.0  # import csp_mp <= 2x import concurrent.futures.process
SCRIPT_START_VS_PPE_BAR = 4.0  # script to first goroutine on P1 <= 4x PPE(2, fork) to 1st task
ARRAY_BYTES = 64 * 2**20
ARRAY_WARMUP = 2  # untimed transfers first: a fresh arena block's pages fault in on first touch

# ====================================================================== csp_mp side (children)


def _import_multi_p_layer() -> None:
    """Import what ``run(procs > 1)`` imports on first use, before the clock starts: the peers'
    modules (multiprocessing, concurrent.futures) are imported before theirs starts too, and a
    fresh interpreter with no bytecode cache spends 50-90 ms compiling these here."""
    import csp_mp._mp  # noqa: F401


def _cpu_task(n: int, out: Any) -> None:
    out.send(burn(n))


def child_cpu(procs: int, ntasks: int, n: int) -> dict:
    """Wall time of ``run(main, procs=procs)`` where main fans ``ntasks`` CPU tasks out with go."""
    import csp_mp

    _import_multi_p_layer()

    def main() -> int:
        out = csp_mp.Chan(ntasks)
        for _ in range(ntasks):
            csp_mp.go(_cpu_task, n, out)
        return sum(out.recv() for _ in range(ntasks))

    t0 = time.perf_counter()
    total = csp_mp.run(main, procs=procs)
    dt = time.perf_counter() - t0
    if total != ntasks * burn(n):
        return {"error": "wrong sum of CPU task results"}
    return {"seconds": dt}


def _tiny_task(i: int, out: Any) -> None:
    from csp_mp import runtime

    out.send((i, runtime.current_p()))


def child_tiny(procs: int, n: int, window: int = 0) -> dict:
    """Tasks/s of ``n`` ``go(fn, i)`` whose results come back over one channel.

    ``window == 0``: all ``n`` started at once, results on a ``Chan(n)``; else at most ``window``
    in flight on a ``Chan(window)``, one more started per result received.
    """
    import csp_mp

    def main() -> dict:
        first = n if window <= 0 else min(window, n)
        out = csp_mp.Chan(first)
        t0 = time.perf_counter()
        for i in range(first):
            csp_mp.go(_tiny_task, i, out)
        nxt = first
        total = on_p1 = 0
        for _ in range(n):
            i, p = out.recv()
            total += i
            on_p1 += p != 0
            if nxt < n:
                csp_mp.go(_tiny_task, nxt, out)
                nxt += 1
        dt = time.perf_counter() - t0
        if total != n * (n - 1) // 2:
            return {"error": "tiny tasks: wrong sum of results"}
        return {"rate": n / dt, "off_p0": on_p1}

    return csp_mp.run(main, procs=procs)


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


def child_startup(procs: int, deadline_s: float) -> dict:
    """Seconds from calling ``run(procs=procs)`` to a goroutine running on P1."""
    import csp_mp

    _import_multi_p_layer()

    t0 = time.monotonic()
    got = csp_mp.run(place_on, 1, None, deadline_s, procs=procs)
    if got is None:
        return {"error": f"no goroutine ran on P1 within {deadline_s:g} s"}
    return {"seconds": got - t0}


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


CHILDREN = {"cpu": child_cpu, "tiny": child_tiny, "startup": child_startup, "cross": child_cross}


def in_child(name: str, params: dict, timeout: float, path: str | None = None) -> dict:
    """Run ``CHILDREN[name](**params)`` in a fresh interpreter; its result, or ``{"error"}``.

    ``path``: the ``CSP_MP_NATIVE`` value the child runs with ("1" compiled core, "0" Python
    path); the child says which path its runtime took, and running the other one is an error.
    """
    cmd = [sys.executable, "-m", "benchmarks.bench_parallel", "--child", name, json.dumps(params)]
    return json_child(cmd, timeout, path)


# ================================================ start-up as a script pays it (fresh interpreters)

# Each script prints one JSON line: the seconds from its own first statement (the clock starts
# before the imports, after the interpreter's start-up, which is the same for both sides).
IMPORT_SCRIPT = """\
import json, time
t0 = time.perf_counter()
import {module}
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

CSP_START_SCRIPT = """\
import time
t0 = time.monotonic()
import csp_mp
from csp_mp import runtime


def probe(out):
    out.send((runtime.current_p(), time.monotonic()))


def main():
    out = csp_mp.Chan(64)
    end = time.monotonic() + {deadline}
    while time.monotonic() < end:
        for _ in range(4):
            csp_mp.go(probe, out)
        for _ in range(4):
            p, t = out.recv()
            if p == 1:
                return t
    return None


t1 = csp_mp.run(main, procs=2)
import json
if t1 is None:
    print(json.dumps({{"error": "no goroutine ran on P1 within {deadline} s"}}))
else:
    print(json.dumps({{"seconds": t1 - t0, "native": runtime.native()}}))
"""

PPE_START_SCRIPT = """\
import time
t0 = time.monotonic()
import concurrent.futures
import multiprocessing

fork = multiprocessing.get_context("fork")
with concurrent.futures.ProcessPoolExecutor(2, mp_context=fork) as ex:
    t1 = ex.submit(time.monotonic).result()
import json
print(json.dumps({"seconds": t1 - t0}))
"""


def in_script(source: str, timeout: float, path: str | None = None) -> dict:
    """Run ``source`` as a user's plain script in a fresh interpreter, bytecode caches read and
    written (``PYTHONDONTWRITEBYTECODE`` dropped); the JSON object its last line prints, or
    ``{"error"}``. ``path``: the ``CSP_MP_NATIVE`` the script's csp_mp runs with."""
    _, env = child_env(path)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="csp_mp-bench-") as d:
        script = Path(d) / "script.py"
        script.write_text(source)
        return json_child([sys.executable, str(script)], timeout, path, env=env, cwd=d)


def _seconds(results: list[dict]) -> list[float]:
    return [r["seconds"] for r in results if "seconds" in r]


def _errors(results: list[dict]) -> str:
    return "; ".join(dict.fromkeys(r["error"] for r in results if "error" in r))


def _script_startup_rows(paths: list[str], reps: int, deadline: float,
                         timeout: float) -> list[dict]:
    """``import csp_mp`` against ``import concurrent.futures.process``, and a script's
    ``import csp_mp; run(main, procs=2)`` to a goroutine on P1 against ``ProcessPoolExecutor(2)``
    (fork) to its first task; each run a fresh interpreter, the two sides interleaved."""
    imp_csp = IMPORT_SCRIPT.format(module="csp_mp")
    imp_cfp = IMPORT_SCRIPT.format(module="concurrent.futures.process")
    start_csp = CSP_START_SCRIPT.format(deadline=deadline)
    for source in (imp_csp, imp_cfp, PPE_START_SCRIPT):  # untimed: the bytecode caches written
        in_script(source, timeout)
    for path in paths:
        in_script(start_csp, timeout, path)
    got: dict[tuple, list[dict]] = {}
    for _ in range(reps):
        for path in paths:
            got.setdefault(("import", path), []).append(in_script(imp_csp, timeout, path))
        got.setdefault(("import", "peer"), []).append(in_script(imp_cfp, timeout))
        for path in paths:
            got.setdefault(("start", path), []).append(in_script(start_csp, timeout, path))
        got.setdefault(("start", "peer"), []).append(in_script(PPE_START_SCRIPT, timeout))
    out = []
    for key, figure, baseline, bar in (
            ("import", "import csp_mp (fresh interpreter, cached bytecode)",
             "import concurrent.futures.process", IMPORT_VS_CFP_BAR),
            ("start", "script: import csp_mp + run(procs=2) to first goroutine on P1",
             "script: import + ProcessPoolExecutor(2, fork) to first task",
             SCRIPT_START_VS_PPE_BAR)):
        peer = got[(key, "peer")]
        base = median(_seconds(peer))
        for path in paths:
            mine = got[(key, path)]
            v = median(_seconds(mine))
            r = row(FAMILY, "import" if key == "import" else "script_startup",
                    on_path(figure, path), "s", v, baseline=baseline, baseline_value=base,
                    higher_is_better=False, bar=f"<= {bar:g}x the peer",
                    met=at_most(v / base, bar) if v and base else None,
                    note=_errors(mine + peer), repeats=len(_seconds(mine)))
            r["path"] = path
            out.append(r)
    return out


# ====================================================================== peers (this process)


def _square(i: int) -> int:
    return i * i


def pool_cpu(kind: str, ntasks: int, n: int) -> float | None:
    """Wall time of ``ntasks`` ``burn(n)`` on a 2-worker pool, start and shutdown included."""
    args = [n] * ntasks
    t0 = time.perf_counter()
    if kind == "pool":
        with mp.Pool(2) as p:
            p.map(burn, args)
    elif kind == "ppe":
        with cf.ProcessPoolExecutor(2) as ex:
            list(ex.map(burn, args))
    elif kind == "loky":
        try:
            import loky
        except ImportError:
            return None
        ex = loky.ProcessPoolExecutor(max_workers=2)
        list(ex.map(burn, args))
        ex.shutdown(wait=True)
    elif kind == "mpire":
        try:
            from mpire import WorkerPool
        except ImportError:
            return None
        with WorkerPool(n_jobs=2) as pool:
            pool.map(burn, args, progress_bar=False)
    else:
        raise ValueError(kind)
    return time.perf_counter() - t0


def ppe_tiny(m: int) -> float:
    """Tasks/s of ``m`` ``ProcessPoolExecutor(2).submit`` + ``result`` (workers already up)."""
    with cf.ProcessPoolExecutor(2) as ex:
        ex.submit(_square, 0).result()
        t0 = time.perf_counter()
        futs = [ex.submit(_square, i) for i in range(m)]
        total = sum(f.result() for f in futs)
        dt = time.perf_counter() - t0
    assert total == sum(i * i for i in range(m))
    return m / dt


def ppe_startup() -> float:
    """Seconds from creating ``ProcessPoolExecutor(2)`` (fork) to its first task running."""
    fork = mp.get_context("fork")
    t0 = time.monotonic()
    with cf.ProcessPoolExecutor(2, mp_context=fork) as ex:
        t1 = ex.submit(time.monotonic).result()
    return t1 - t0


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
    q, done, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    m = n // 4
    cons = [ctx.Process(target=_mpq_drain, args=(q, done)) for _ in range(2)]
    prods = [ctx.Process(target=_mpq_produce, args=(q, m, start, done)) for _ in range(4)]
    for p in cons + prods:
        p.start()
    for _ in range(6):
        done.get()
    t0 = time.monotonic()
    start.set()
    for p in prods:
        p.join()
    q.put(None)
    q.put(None)
    got = [done.get(), done.get()]
    for p in cons:
        p.join()
    if sum(c for c, _ in got) != 4 * m:
        raise RuntimeError("multiprocessing.Queue 4->2 lost messages")
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


def mpire_tiny(n: int) -> float | None:
    """Tasks/s of mpire's ``WorkerPool(2).map(fn, range(n))``, chunked as it chooses (workers
    already up, as for ``ProcessPoolExecutor``); None when mpire is not installed."""
    try:
        from mpire import WorkerPool
    except ImportError:
        return None
    with WorkerPool(n_jobs=2, keep_alive=True) as pool:
        pool.map(_square, range(64), progress_bar=False)  # start the workers
        t0 = time.perf_counter()
        total = sum(pool.map(_square, range(n), progress_bar=False))
        dt = time.perf_counter() - t0
    if total != sum(i * i for i in range(n)):
        raise RuntimeError("mpire tiny tasks: wrong sum of results")
    return n / dt


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
    ctx = _ctx()
    done, start = ctx.Queue(), ctx.Event()
    m = n // 4
    cons = [ctx.Process(target=_ff_drain, args=(q, done)) for _ in range(2)]
    prods = [ctx.Process(target=_ff_produce, args=(q, m, start, done)) for _ in range(4)]
    for p in cons + prods:
        p.start()
    for _ in range(6):
        done.get()
    t0 = time.monotonic()
    start.set()
    for p in prods:
        p.join()
    q.put(None, timeout=60)
    q.put(None, timeout=60)
    got = [done.get(), done.get()]
    for p in cons:
        p.join()
    if sum(c for c, _ in got) != 4 * m:
        raise RuntimeError("faster-fifo 4->2 lost messages")
    return 4 * m / (max(t for _, t in got) - t0)


# ====================================================================== the family


def _vs(r: dict, bar: float | None) -> dict:
    """``r`` with ``met`` set from its ratio against ``bar`` (None: a reference row)."""
    if bar is not None:
        r["met"] = at_least(r["ratio"], bar)
    return r


def _peer_note(values: list[float], label: str, what: str = "not installed") -> str:
    return "" if values else f"{label} {what}"


def run(quick: bool) -> list[dict]:
    """Measure this family and return its rows (see ``_common.row``).

    Every csp_mp figure is measured once per runtime path (``_common.csp_paths``: the compiled
    core and the pure-Python path by default), each in children run with ``CSP_MP_NATIVE`` set;
    the peers run once per repeat, between them.
    """
    paths = csp_paths()
    reps = pick(quick, 5, 2, 1)  # medians of 5: the 2-vCPU VM's neighbours move single runs
    ntasks = pick(quick, 64, 64, 4)
    task_s = pick(quick, 0.020, 0.010, 0.002)
    n_tiny = pick(quick, 100_000, 30_000, 300)
    n_tiny_ppe = pick(quick, 20_000, 5_000, 100)
    window = pick(quick, 4096, 4096, 64)
    n_msgs = pick(quick, 400_000, 100_000, 2_000)
    n_msgs_peer = pick(quick, 200_000, 50_000, 2_000)
    array_reps = pick(quick, 5, 3, 1)
    deadline = pick(quick, 3.0, 2.0, 0.3)
    timeout = pick(quick, 120.0, 90.0, 30.0)  # per child; the cross-P child gets twice this
    rows: list[dict] = []

    def add(r: dict, path: str) -> None:
        r["path"] = path
        rows.append(r)

    def measured(key: tuple, res: dict, got: dict, failed: dict, field: str) -> None:
        if field in res:
            got.setdefault(key, []).append(res)
        else:  # a failure repeats: do not wait it out again
            failed[key] = res.get("error", f"no {field!r} in the child's answer")

    # ---- CPU-bound speedup
    n = calibrate_burn(task_s)
    cpu: dict[tuple, list[dict]] = {}
    cpu_failed: dict[tuple, str] = {}
    cpu_peers: dict[str, list[float]] = {k: [] for k in ("pool", "ppe", "loky", "mpire")}
    for _ in range(reps):
        for path in paths:
            for procs in (1, 2):
                if (path, procs) not in cpu_failed:
                    res = in_child("cpu", {"procs": procs, "ntasks": ntasks, "n": n}, timeout,
                                   path)
                    measured((path, procs), res, cpu, cpu_failed, "seconds")
        for key in cpu_peers:
            v = pool_cpu(key, ntasks, n)
            if v is not None:
                cpu_peers[key].append(v)
    c = {k: median(v) for k, v in cpu_peers.items()}
    for path in paths:
        p1 = median([r["seconds"] for r in cpu.get((path, 1), [])])
        p2 = median([r["seconds"] for r in cpu.get((path, 2), [])])
        note = "; ".join(e for e in dict.fromkeys(cpu_failed.get((path, p), "") for p in (1, 2))
                         if e)
        fig = on_path(f"{ntasks} CPU tasks of ~{task_s * 1e3:.0f} ms, procs=2", path)
        r = row(FAMILY, "cpu_speedup", fig, "s", p2, baseline="csp_mp procs=1 (same path)",
                baseline_value=p1, higher_is_better=False, bar=f"ratio >= {SPEEDUP_BAR}x",
                note=note, repeats=reps)
        add(_vs(r, SPEEDUP_BAR), path)
        for key, label, gated in (("pool", "multiprocessing.Pool(2)", True),
                                  ("ppe", "ProcessPoolExecutor(2)", True),
                                  ("loky", "loky ProcessPoolExecutor(2)", False),
                                  ("mpire", "mpire WorkerPool(2)", False)):
            r = row(FAMILY, "cpu_vs_pool", fig, "s", p2, baseline=label, baseline_value=c[key],
                    higher_is_better=False,
                    bar=f"<= {VS_POOL_BAR}x its wall time" if gated else "(reference)",
                    note=note if p2 is None else _peer_note(cpu_peers[key], label),
                    repeats=reps)
            if gated and p2 is not None and c[key] is not None:
                r["met"] = p2 <= VS_POOL_BAR * c[key]
            add(r, path)

    # ---- tiny tasks: the issue-11 row (all at once) on 2 Ps and 1 P, and the windowed form
    combos = ((2, 0), (1, 0), (2, window))
    tiny: dict[tuple, list[dict]] = {}
    tiny_failed: dict[tuple, str] = {}
    ppe_rates: list[float] = []
    mpire_rates: list[float] = []
    for _ in range(reps):
        for path in paths:
            for procs, w in combos:
                if (path, procs, w) not in tiny_failed:
                    res = in_child("tiny", {"procs": procs, "n": n_tiny, "window": w}, timeout,
                                   path)
                    measured((path, procs, w), res, tiny, tiny_failed, "rate")
        ppe_rates.append(ppe_tiny(n_tiny_ppe))
        v = mpire_tiny(n_tiny)
        if v is not None:
            mpire_rates.append(v)
    ppe_rate, mpire_rate = median(ppe_rates), median(mpire_rates)
    label_n = f"{n_tiny // 1000} k" if n_tiny >= 1000 else str(n_tiny)

    def tiny_rate(key: tuple) -> tuple[float | None, str, str]:
        """(median rate, why it failed, which share ran off P0)."""
        res = tiny.get(key, [])
        off = [r["off_p0"] for r in res if "off_p0" in r]
        share = f"{median(off) / n_tiny:.0%} ran off P0" if off and key[1] > 1 else ""
        return median([r["rate"] for r in res]), tiny_failed.get(key, ""), share

    for path in paths:
        rate, err, share = tiny_rate((path, 2, 0))
        p1_rate, p1_err, _ = tiny_rate((path, 1, 0))
        fig = on_path(f"{label_n} tiny tasks: go + result chan, procs=2, all at once", path)
        for label, base, bar, extra in (
                ("csp_mp procs=1 (same path)", p1_rate, TINY_VS_P1_BAR,
                 f"procs=1: {p1_err}" if p1_err else share),
                ("mpire WorkerPool(2).map, auto chunks", mpire_rate, TINY_VS_MPIRE_BAR,
                 _peer_note(mpire_rates, "mpire")),
                ("ProcessPoolExecutor(2).submit", ppe_rate, TINY_VS_PPE_BAR,
                 f"ProcessPoolExecutor over {n_tiny_ppe} tasks")):
            r = row(FAMILY, "tiny_tasks", fig, "tasks/s", rate, baseline=label,
                    baseline_value=base, higher_is_better=True, bar=f">= {bar:g}x",
                    note="; ".join(x for x in (err, extra) if x), repeats=reps)
            add(_vs(r, bar), path)
        rate, err, share = tiny_rate((path, 2, window))
        r = row(FAMILY, "tiny_tasks_window",
                on_path(f"{label_n} tiny tasks: go + result chan, procs=2, <= {window} in flight",
                        path),
                "tasks/s", rate, baseline="ProcessPoolExecutor(2).submit",
                baseline_value=ppe_rate, higher_is_better=True, bar=f">= {TINY_VS_PPE_BAR:g}x",
                note=err or share, repeats=reps)
        add(_vs(r, TINY_VS_PPE_BAR), path)

    # ---- cross-P channels and the array
    cross = {path: in_child("cross", {"procs": 2, "n": n_msgs, "reps": reps,
                                      "array_reps": array_reps, "deadline_s": deadline},
                            2 * timeout, path)
             for path in paths}
    mq11: list[float] = []
    mq42: list[float] = []
    pipe11: list[float] = []
    pipe_rv: list[float] = []
    ff11: list[float] = []
    ff42: list[float] = []
    for _ in range(reps):
        mq11.append(mpq_1to1(n_msgs_peer))
        pipe11.append(pipe_1to1(n_msgs_peer))
        pipe_rv.append(pipe_rendezvous(n_msgs_peer // 8))
        if (v := ff_1to1(n_msgs_peer)) is not None:
            ff11.append(v)
        mq42.append(mpq_4to2(n_msgs_peer))
        if (v := ff_4to2(n_msgs_peer)) is not None:
            ff42.append(v)
    mq_arr = mpq_array(array_reps)
    ff_missing = _peer_note(ff11, "faster-fifo")
    for path in paths:
        res = cross[path]
        note = res.get("error", "")
        v11 = median(res.get("1to1", []))
        fig = on_path("cross-P channel, small msgs, 1 -> 1", path)
        moon = "" if v11 is None else (f"moonshot >= {CROSS_MOONSHOT / 1e6:g} M msgs/s: "
                                       f"{'met' if v11 >= CROSS_MOONSHOT else 'not met'}")
        for label, vals, bar, extra in (
                ("multiprocessing.Queue", mq11, CROSS_VS_MPQ_BAR, moon),
                ("multiprocessing.Pipe", pipe11, CROSS_VS_PIPE_BAR, ""),
                (f"faster-fifo put_many/get_many ({FF_BATCH} a batch)", ff11, CROSS_VS_FF_BAR,
                 ff_missing)):
            r = row(FAMILY, "cross_1to1", fig, "msgs/s", v11, baseline=label,
                    baseline_value=median(vals), higher_is_better=True, bar=f">= {bar:g}x",
                    note="; ".join(x for x in (note, extra) if x), repeats=reps)
            add(_vs(r, bar), path)
        v42 = median(res.get("4to2", []))
        fig = on_path("cross-P channel, small msgs, 4 -> 2", path)
        for label, vals, bar, extra in (
                ("multiprocessing.Queue (4 -> 2 procs)", mq42, CROSS42_VS_MPQ_BAR, ""),
                ("faster-fifo put_many/get_many (4 -> 2 procs)", ff42, CROSS42_VS_FF_BAR,
                 ff_missing)):
            r = row(FAMILY, "cross_4to2", fig, "msgs/s", v42, baseline=label,
                    baseline_value=median(vals), higher_is_better=True, bar=f">= {bar:g}x",
                    note="; ".join(x for x in (note, extra) if x), repeats=reps)
            add(_vs(r, bar), path)
        vu = median(res.get("unbuf", []))
        add(row(FAMILY, "cross_unbuffered",
                on_path("cross-P unbuffered channel, 1 -> 1 (each send a rendezvous)", path),
                "msgs/s", vu, baseline="multiprocessing.Pipe, each message acknowledged",
                baseline_value=median(pipe_rv), higher_is_better=True, note=note,
                repeats=reps), path)
        arr_all = res.get("array", [])
        va = median(arr_all[ARRAY_WARMUP:])
        anote = note
        if len(arr_all) > ARRAY_WARMUP and not note:
            anote = (f"after {ARRAY_WARMUP} warm-up transfers on each side; the first, into "
                     f"arena pages not yet mapped, ran at {arr_all[0]:.2g} GB/s")
        r = row(FAMILY, "array", on_path("64 MiB NumPy array between Ps", path), "GB/s", va,
                baseline="multiprocessing.Queue", baseline_value=median(mq_arr),
                higher_is_better=True,
                bar=f">= {ARRAY_GBPS_BAR:.0f} GB/s and >= {ARRAY_VS_MPQ_BAR:.0f}x", note=anote,
                repeats=array_reps)
        r["met"] = all_met(at_least(va, ARRAY_GBPS_BAR), at_least(r["ratio"], ARRAY_VS_MPQ_BAR))
        add(r, path)

    # ---- start-up
    st: dict[tuple, list[dict]] = {}
    st_failed: dict[tuple, str] = {}
    ppe_st = []
    for _ in range(reps):
        for path in paths:
            if (path,) not in st_failed:  # the same answer every time: do not wait it out again
                res = in_child("startup", {"procs": 2, "deadline_s": deadline}, timeout, path)
                measured((path,), res, st, st_failed, "seconds")
        ppe_st.append(ppe_startup())
    base = median(ppe_st)
    for path in paths:
        vst = median([r["seconds"] for r in st.get((path,), [])])
        add(row(FAMILY, "startup", on_path("run(procs=2) to first goroutine on P1", path), "s",
                vst, baseline="ProcessPoolExecutor(2, fork) to first task", baseline_value=base,
                higher_is_better=False, bar=f"<= {STARTUP_VS_PPE_BAR:g}x the peer",
                met=at_most(vst / base, STARTUP_VS_PPE_BAR) if vst and base else None,
                note=st_failed.get((path,), ""), repeats=len(st.get((path,), []))), path)
    rows.extend(_script_startup_rows(paths, pick(quick, 9, 7, 1), deadline, timeout))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print this family's rows, or act as a csp_mp child."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_parallel")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("NAME", "PARAMS_JSON"))
    ap.add_argument("--startup", action="store_true",
                    help="only the start-up rows a script pays (import, run to P1)")
    args = ap.parse_args(argv)
    if args.child:
        # Through the package, not __main__: goroutine functions then pickle by reference.
        from benchmarks import bench_parallel as mod

        name, params = args.child[0], json.loads(args.child[1])
        try:
            res = mod.CHILDREN[name](**params)
            from csp_mp._shm import native

            res["native"] = native.enabled()  # the path this child's runtime took
        except Exception as exc:  # reported as an n/a row by the parent
            res = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(res), flush=True)
        return
    from .run import print_table

    if args.startup:
        print_table(_script_startup_rows(csp_paths(), pick(args.quick, 9, 7, 1),
                                         pick(args.quick, 3.0, 2.0, 0.3),
                                         pick(args.quick, 120.0, 90.0, 30.0)))
        return
    print_table(run(args.quick))


if __name__ == "__main__":
    main()
