"""Transport throughput: csp_mp's shared-memory rings against multiprocessing and faster-fifo.

Small messages (``[i, "chan-7", {"op": "send", "v": i}]``, encoded and decoded on each side)
1 producer -> 1 consumer and 4 producers -> 2 consumers, and a 64 MiB NumPy array between two
processes. Every transport runs in the same invocation; each figure is the median of ``--runs``
runs. Prints a table and writes ``benchmarks/results/transport.json``; the rings run on the path
``CSP_MP_NATIVE`` selects (compiled core or pure Python). In the suite (``run``) the rings are
measured on both paths, each in a child interpreter with ``CSP_MP_NATIVE`` set.

    .venv/bin/python benchmarks/bench_transport.py [--n 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from csp_mp._shm import codec  # noqa: E402
from csp_mp._shm.arena import Arena  # noqa: E402
from csp_mp._shm.doorbell import Doorbell  # noqa: E402
from csp_mp._shm.ring import (  # noqa: E402
    NativeRing,
    NativeSpscRing,
    Ring,
    SpscRing,
    attach_ring,
)

BATCH = 64
ARRAY_BYTES = 64 << 20


def message(i: int) -> list[Any]:
    return [i, "chan-7", {"op": "send", "v": i}]


# ---- children -------------------------------------------------------------------------------


def ring_producer(arena: Arena, off: int, n: int, bell: Doorbell, go: Any) -> None:
    ring = attach_ring(arena, off)
    enc = codec.encode
    go.wait()
    i = 0
    while i < n:
        items = [enc(message(j)) for j in range(i, min(n, i + BATCH))]
        k = 0
        while k < len(items):
            got = ring.put_many(items[k:] if k else items)
            if got:
                k += got
                bell.ring()
            else:
                time.sleep(0)
        i += len(items)


def ring_consumer(arena: Arena, off: int, n: int, bell: Doorbell, go: Any, done: Any) -> None:
    ring = attach_ring(arena, off)
    dec = codec.decode
    go.wait()
    got = 0
    while True:
        batch = ring.get_many(BATCH * 4)
        if not batch:
            bell.wait(0.001)
            continue
        for data in batch:
            if not data:
                give_back_sentinels(ring, batch)
                done.put(time.perf_counter())
                return
            dec(data)
            got += 1


def give_back_sentinels(ring: Ring, batch: list[bytes]) -> None:
    """Put back the sentinels (one per consumer) taken in the same batch as ours."""
    for _ in range(sum(1 for d in batch if not d) - 1):
        while not ring.try_put(b""):
            time.sleep(0)


def q_producer(q: Any, n: int, go: Any) -> None:
    go.wait()
    for i in range(n):
        q.put(message(i))


def q_consumer(q: Any, go: Any, done: Any) -> None:
    go.wait()
    while q.get() is not None:
        pass
    done.put(time.perf_counter())


def pipe_producer(conn: Any, n: int, go: Any) -> None:
    go.wait()
    for i in range(n):
        conn.send(message(i))
    conn.send(None)


def pipe_consumer(conn: Any, go: Any, done: Any) -> None:
    go.wait()
    while conn.recv() is not None:
        pass
    done.put(time.perf_counter())


def ff_producer(q: Any, n: int, go: Any) -> None:
    go.wait()
    for i in range(0, n, BATCH):
        q.put_many([message(j) for j in range(i, min(n, i + BATCH))], timeout=60)


def ff_consumer(q: Any, go: Any, done: Any) -> None:
    go.wait()
    while True:
        batch = q.get_many(max_messages_to_get=BATCH * 4, timeout=60)
        for m in batch:
            if m is None:
                for _ in range(sum(1 for x in batch if x is None) - 1):
                    q.put(None)  # a sentinel meant for another consumer
                done.put(time.perf_counter())
                return


def array_ring_receiver(arena: Arena, off: int, bell: Doorbell, back: Any, reps: int) -> None:
    ring = attach_ring(arena, off)
    for _ in range(reps):
        while (data := ring.try_get()) is None:
            bell.wait(0.01)
        arr = codec.decode(data, arena)
        t = time.perf_counter()
        assert arr[-1] == arr.size - 1
        del arr
        arena.collect()
        back.put(t)


def array_q_receiver(q: Any, back: Any, reps: int) -> None:
    for _ in range(reps):
        arr = q.get()
        t = time.perf_counter()
        assert arr[-1] == arr.size - 1
        back.put(t)


# ---- harness --------------------------------------------------------------------------------


def _run(ctx: Any, prods: list[Any], cons: list[Any], go: Any, done: Any, finish: Any) -> float:
    procs = prods + cons
    for p in procs:
        p.start()
    time.sleep(0.2)  # let every child reach go.wait() so start-up is not timed
    t0 = time.perf_counter()
    go.set()
    for p in prods:
        p.join()
    finish()
    ends = [done.get(timeout=600) for _ in cons]
    for p in cons:
        p.join()
    return max(ends) - t0


def _ring_class(arena: Arena, spsc: bool) -> type:
    """The ring of the arena's path: the compiled core's operations, or the Python ones."""
    if arena.native:
        return NativeSpscRing if spsc else NativeRing
    return SpscRing if spsc else Ring


def small(ctx: Any, kind: str, nprod: int, ncons: int, n: int, arena: Arena) -> float:
    """Messages per second for ``n`` messages, ``nprod`` producers -> ``ncons`` consumers."""
    per = n // nprod
    go, done = ctx.Event(), ctx.Queue()
    if kind in ("ring", "spsc-ring"):
        ring = _ring_class(arena, kind == "spsc-ring").create(arena, 1 << 16)
        bell = arena._bench_bells.pop()
        prods = [ctx.Process(target=ring_producer, args=(arena, ring.offset, per, bell, go))
                 for _ in range(nprod)]
        cons = [ctx.Process(target=ring_consumer, args=(arena, ring.offset, n, bell, go, done))
                for _ in range(ncons)]

        def finish() -> None:
            for _ in range(ncons):
                while not ring.try_put(b""):
                    time.sleep(0)
            for _ in range(ncons):
                bell.ring()

        secs = _run(ctx, prods, cons, go, done, finish)
        ring.destroy()
        arena._bench_bells.append(bell)
    elif kind == "mp.Queue":
        q = ctx.Queue(10000)
        prods = [ctx.Process(target=q_producer, args=(q, per, go)) for _ in range(nprod)]
        cons = [ctx.Process(target=q_consumer, args=(q, go, done)) for _ in range(ncons)]
        secs = _run(ctx, prods, cons, go, done, lambda: [q.put(None) for _ in range(ncons)])
    elif kind == "mp.Pipe":
        r, w = ctx.Pipe(duplex=False)
        prods = [ctx.Process(target=pipe_producer, args=(w, per, go))]
        cons = [ctx.Process(target=pipe_consumer, args=(r, go, done))]
        secs = _run(ctx, prods, cons, go, done, lambda: None)
    elif kind == "faster-fifo":
        from faster_fifo import Queue as FFQueue

        q = FFQueue(max_size_bytes=1 << 22)
        prods = [ctx.Process(target=ff_producer, args=(q, per, go)) for _ in range(nprod)]
        cons = [ctx.Process(target=ff_consumer, args=(q, go, done)) for _ in range(ncons)]
        secs = _run(ctx, prods, cons, go, done, lambda: [q.put(None) for _ in range(ncons)])
    else:
        raise ValueError(kind)
    return per * nprod / secs


def array(ctx: Any, kind: str, reps: int, arena: Arena) -> float:
    """Median GB/s of a 64 MiB array sent ``reps`` times (the first is a warm-up)."""
    arr = np.arange(ARRAY_BYTES // 8, dtype=np.int64)
    back = ctx.Queue()
    times = []
    if kind == "ring":
        ring = _ring_class(arena, False).create(arena, 4096)
        bell = arena._bench_bells.pop()
        p = ctx.Process(target=array_ring_receiver, args=(arena, ring.offset, bell, back, reps))
        p.start()
        time.sleep(0.2)
        for _ in range(reps):
            t0 = time.perf_counter()
            assert ring.try_put(codec.encode(arr, arena))
            bell.ring()
            times.append(back.get(timeout=120) - t0)
        p.join()
        ring.destroy()
        arena._bench_bells.append(bell)
    else:
        q = ctx.Queue()
        p = ctx.Process(target=array_q_receiver, args=(q, back, reps))
        p.start()
        time.sleep(0.2)
        for _ in range(reps):
            t0 = time.perf_counter()
            q.put(arr)
            times.append(back.get(timeout=120) - t0)
        p.join()
    return ARRAY_BYTES / statistics.median(times[1:]) / 1e9


RING_KINDS = ("ring", "spsc-ring")
PEER_KINDS = ("mp.Queue", "mp.Pipe", "faster-fifo")


def measure(n: int, runs: int, reps: int, verbose: bool = True,
            kinds: tuple[str, ...] = RING_KINDS + PEER_KINDS) -> tuple[list[dict], dict]:
    """The transport figures of ``kinds``: ``(rows, ratios)``; each row the median of ``runs``
    runs. The rings run on the path ``CSP_MP_NATIVE`` selects (see ``csp_mp._shm.native``)."""
    ctx = mp.get_context("forkserver")
    arena = Arena.create(1 << 30 if any(k in RING_KINDS for k in kinds) else 1 << 20)
    try:
        arena._bench_bells = [Doorbell.create(arena) for _ in range(2)]  # type: ignore[attr-defined]
        rows: list[dict[str, Any]] = []

        def record(case: str, kind: str, unit: str, fn: Any) -> None:
            vals = [fn() for _ in range(runs)]
            rows.append({"case": case, "transport": kind, "unit": unit,
                         "median": statistics.median(vals), "runs": vals})
            if verbose:
                print(f"  {case:<12} {kind:<12} {statistics.median(vals):>14,.0f} {unit}",
                      flush=True)

        def wanted(*ks: str) -> list[str]:
            return [k for k in ks if k in kinds and (k != "faster-fifo" or _have_faster_fifo())]

        for kind in wanted("ring", "spsc-ring", "mp.Queue", "mp.Pipe", "faster-fifo"):
            record("1->1", kind, "msgs/s", lambda k=kind: small(ctx, k, 1, 1, n, arena))
        for kind in wanted("ring", "mp.Queue", "faster-fifo"):
            record("4->2", kind, "msgs/s", lambda k=kind: small(ctx, k, 4, 2, n, arena))
        for kind in wanted("ring", "mp.Queue"):
            record("64MiB array", kind, "GB/s", lambda k=kind: array(ctx, k, reps, arena) * 1e9)
    finally:
        arena.sems.seal()
        arena.close()
    for r in rows:
        if r["unit"] == "GB/s":
            r["median"] /= 1e9
            r["runs"] = [v / 1e9 for v in r["runs"]]

    def med(case: str, kind: str) -> float:
        return next((r["median"] for r in rows if r["case"] == case and r["transport"] == kind),
                    float("nan"))

    ratios = {
        "1->1 ring / mp.Queue": med("1->1", "ring") / med("1->1", "mp.Queue"),
        "1->1 spsc-ring / mp.Queue": med("1->1", "spsc-ring") / med("1->1", "mp.Queue"),
        "1->1 ring / mp.Pipe": med("1->1", "ring") / med("1->1", "mp.Pipe"),
        "1->1 ring / faster-fifo": med("1->1", "ring") / med("1->1", "faster-fifo"),
        "4->2 ring / mp.Queue": med("4->2", "ring") / med("4->2", "mp.Queue"),
        "4->2 ring / faster-fifo": med("4->2", "ring") / med("4->2", "faster-fifo"),
        "64MiB ring / mp.Queue": med("64MiB array", "ring") / med("64MiB array", "mp.Queue"),
    }
    return rows, ratios


def _have_faster_fifo() -> bool:
    try:
        import faster_fifo  # noqa: F401
    except ImportError:
        return False
    return True


def rings_in_child(path: str, n: int, runs: int, reps: int, timeout: float) -> dict:
    """The ring figures measured in a fresh interpreter run with ``CSP_MP_NATIVE=path``:
    ``{"rows": [...], "native": bool}`` or ``{"error": ...}``."""
    from benchmarks._common import json_child

    cmd = [sys.executable, "-m", "benchmarks.bench_transport", "--rings-child",
           json.dumps({"n": n, "runs": runs, "reps": reps})]
    # SIGTERM first on a timeout: the child removes its semaphore names on it
    return json_child(cmd, timeout, path, term_first=True)


def _rings_child(params: dict) -> None:
    """``--rings-child``: the ring figures on this interpreter's path, as one JSON line."""
    from csp_mp._shm import native

    rows, _ = measure(params["n"], params["runs"], params["reps"], verbose=False,
                      kinds=RING_KINDS)
    print(json.dumps({"rows": rows, "native": native.enabled()}), flush=True)


def _merge(runs: list[list[dict]]) -> list[dict]:
    """Rows of single runs -> one row per (case, transport) with every run and their median."""
    out: dict[tuple, dict] = {}
    for rows in runs:
        for r in rows:
            m = out.setdefault((r["case"], r["transport"]), {**r, "runs": []})
            m["runs"] += r["runs"]
    for m in out.values():
        m["median"] = statistics.median(m["runs"])
    return list(out.values())


def run(quick: bool) -> list[dict]:
    """The transport family's rows for the suite runner (``benchmarks/run.py``).

    The rings are measured once per runtime path (``_common.csp_paths``), each in a child
    interpreter run with ``CSP_MP_NATIVE`` set, then the peers from this process; each of the
    ``runs`` repeats does all of them once, and a figure is the median over the repeats.
    """
    from benchmarks._common import all_met, at_least, csp_paths, on_path, pick, row

    n, runs, reps = pick(quick, (100_000, 3, 6), (20_000, 2, 2), (2_000, 1, 2))  # rep 1 warms
    timeout = pick(quick, 600.0, 300.0, 120.0)
    paths = csp_paths()
    # one run at a time, rings then peers, so that machine noise hits both alike
    ring_runs: dict[str, list[list[dict]]] = {path: [] for path in paths}
    ring_err: dict[str, str] = {}
    peer_runs: list[list[dict]] = []
    for _ in range(runs):
        for path in paths:
            if path not in ring_err:  # a failure repeats: do not wait it out again
                res = rings_in_child(path, n, 1, reps, timeout)
                if "error" in res:
                    ring_err[path] = res["error"]
                else:
                    ring_runs[path].append(res["rows"])
        peer_runs.append(measure(n, 1, reps, verbose=False, kinds=PEER_KINDS)[0])
    rings = {path: {"rows": _merge(ring_runs[path]), "error": ring_err.get(path, "")}
             for path in paths}
    peers = _merge(peer_runs)

    def med(raw: list[dict], case: str, kind: str) -> float | None:
        return next((r["median"] for r in raw if r["case"] == case and r["transport"] == kind),
                    None)

    fam = "transport"
    out = []
    for path in paths:
        raw = rings[path].get("rows", [])
        err = rings[path].get("error", "")

        def add(name: str, fig: str, case: str, kind: str, label: str, peer: str,
                bar: float | None, extra: str = "", unit: str = "msgs/s",
                raw: list[dict] = raw, err: str = err, path: str = path) -> dict:
            base = med(peers, case, peer)
            note = "; ".join(x for x in (err, "" if base is not None else f"{label} not installed",
                                         extra) if x)
            r = row(fam, name, on_path(fig, path), unit, med(raw, case, kind), baseline=label,
                    baseline_value=base, higher_is_better=True,
                    bar="(reference)" if bar is None else f">= {bar:g}x", note=note,
                    repeats=runs)
            if bar is not None:
                r["met"] = at_least(r["ratio"], bar)
            r["path"] = path
            out.append(r)
            return r

        ff = "faster-fifo put_many/get_many"
        add("ring_1to1", "shm ring, small msgs, 1 -> 1", "1->1", "ring", "multiprocessing.Queue",
            "mp.Queue", 3.0)
        add("ring_1to1", "shm ring, small msgs, 1 -> 1", "1->1", "ring", "multiprocessing.Pipe",
            "mp.Pipe", 2.0)
        add("ring_1to1", "shm ring, small msgs, 1 -> 1", "1->1", "ring", ff, "faster-fifo", 2.0)
        add("spsc_1to1", "shm SPSC ring, small msgs, 1 -> 1", "1->1", "spsc-ring",
            "multiprocessing.Queue", "mp.Queue", None)
        add("ring_4to2", "shm ring, small msgs, 4 -> 2", "4->2", "ring", "multiprocessing.Queue",
            "mp.Queue", 3.0)
        add("ring_4to2", "shm ring, small msgs, 4 -> 2", "4->2", "ring", ff, "faster-fifo", 1.5)
        r = add("ring_array", "64 MiB NumPy array, shm ring", "64MiB array", "ring",
                "multiprocessing.Queue", "mp.Queue", None, unit="GB/s")
        r["bar"] = ">= 5 GB/s and >= 5x"
        r["met"] = all_met(at_least(r["value"], 5.0), at_least(r["ratio"], 5.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="small messages per run")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--reps", type=int, default=6, help="array transfers per run")
    ap.add_argument("--quick", action="store_true", help="--n 20000 --runs 1 --reps 2")
    ap.add_argument("--rings-child", metavar="PARAMS_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.rings_child:
        _rings_child(json.loads(args.rings_child))
        return
    if args.quick:
        args.n, args.runs, args.reps = 20_000, 1, 2
    load, ver = os.getloadavg()[0], platform.python_version()
    print(f"load {load:.2f}, {os.cpu_count()} CPUs, python {ver}")
    rows, ratios = measure(args.n, args.runs, args.reps)
    print()
    print(f"{'case':<12} {'transport':<12} {'median':>14}  unit    runs")
    for r in rows:
        runs = ", ".join(f"{v:,.3g}" for v in r["runs"])
        print(f"{r['case']:<12} {r['transport']:<12} {r['median']:>14,.2f}  {r['unit']:<7} {runs}")
    print()
    for k, v in ratios.items():
        print(f"{k:<28} {v:6.2f}x")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "transport.json"), "w") as f:
        json.dump({"command": " ".join(sys.argv), "n": args.n, "runs": args.runs,
                   "load": os.getloadavg()[0], "cpus": os.cpu_count(),
                   "python": platform.python_version(), "rows": rows, "ratios": ratios}, f,
                  indent=1)


if __name__ == "__main__":
    main()
