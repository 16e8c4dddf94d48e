"""One-P figures: unbuffered ping-pong, ``go_local`` spawn+finish, 100 k parked goroutines.

Each figure is measured against its peers in the same run, interleaved repeat by repeat. The bars
of ping-pong and spawn are relative to the raw greenlet under them: ping-pong against a bare
greenlet switch (two greenlets switching to each other), spawn+finish against one parked greenlet
that runs each task it is handed. ``asyncio``, gevent (when installed) and, for ping-pong, OS
threads with ``queue.Queue`` are the other peers. The parked-goroutine figure runs every peer in a
fresh interpreter so that its RSS delta is not polluted by what ran before.

``python -m benchmarks.bench_local [--quick]`` prints this family's rows;
``python -m benchmarks.bench_local --parked KIND N`` is the child that measures one peer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import queue
import sys
import threading
import time

from greenlet import getcurrent, greenlet

import csp_mp
from csp_mp import Chan, go_local, runtime

from ._common import at_most, json_child, median, pick, row

FAMILY = "local"
# docs/design.md's one-P bars: csp_mp's time over the raw greenlet peer's, both measured in one run
PINGPONG_VS_SWITCH_BAR = 5.5
PINGPONG_VS_SWITCH_MOONSHOT = 3.0
SPAWN_VS_GREENLET_BAR = 3.0
SPAWN_VS_GREENLET_MOONSHOT = 1.5
PARKED_BAR_S = 1.0
PARKED_BAR_MB = 2048.0

try:
    import gevent
    import gevent.queue
except ImportError:  # gevent is an optional peer
    gevent = None


# ---------------------------------------------------------------------- ping-pong


def csp_pingpong(n: int) -> float:
    """µs per hand-off: two goroutines on one P bounce ``n`` values over unbuffered channels."""

    def main() -> float:
        ping, pong = Chan(), Chan()

        def echo() -> None:
            for _ in range(n):
                pong.send(ping.recv())

        go_local(echo)
        t0 = time.perf_counter()
        for i in range(n):
            ping.send(i)
            pong.recv()
        return time.perf_counter() - t0

    return csp_mp.run(main, procs=1) / (2 * n) * 1e6


def greenlet_switch(n: int) -> float:
    """µs per switch: two bare greenlets switch to each other ``n`` times each (the floor under
    one goroutine hand-off: no channel, no scheduler)."""
    root = getcurrent()

    def other() -> None:
        while True:
            root.switch()

    g = greenlet(other)
    switch = g.switch
    switch()  # started: every switch below is into a running greenlet and back
    t0 = time.perf_counter()
    for _ in range(n):
        switch()
    dt = time.perf_counter() - t0
    g.throw()  # GreenletExit: the loop ends
    return dt / (2 * n) * 1e6


def asyncio_pingpong(n: int) -> float:
    """µs per hand-off between two asyncio tasks over two ``asyncio.Queue``."""

    async def main() -> float:
        ping: asyncio.Queue = asyncio.Queue()
        pong: asyncio.Queue = asyncio.Queue()

        async def echo() -> None:
            for _ in range(n):
                await pong.put(await ping.get())

        task = asyncio.create_task(echo())
        t0 = time.perf_counter()
        for i in range(n):
            await ping.put(i)
            await pong.get()
        dt = time.perf_counter() - t0
        await task
        return dt

    return asyncio.run(main()) / (2 * n) * 1e6


def gevent_pingpong(n: int) -> float | None:
    """µs per hand-off between two greenlets over two ``gevent.queue.Channel`` (unbuffered)."""
    if gevent is None:
        return None
    ping, pong = gevent.queue.Channel(), gevent.queue.Channel()

    def echo() -> None:
        for _ in range(n):
            pong.put(ping.get())

    g = gevent.spawn(echo)
    t0 = time.perf_counter()
    for i in range(n):
        ping.put(i)
        pong.get()
    dt = time.perf_counter() - t0
    g.join()
    return dt / (2 * n) * 1e6


def thread_pingpong(n: int) -> float:
    """µs per hand-off between two OS threads over two ``queue.Queue``."""
    ping: queue.Queue = queue.Queue()
    pong: queue.Queue = queue.Queue()

    def echo() -> None:
        for _ in range(n):
            pong.put(ping.get())

    t = threading.Thread(target=echo)
    t.start()
    t0 = time.perf_counter()
    for i in range(n):
        ping.put(i)
        pong.get()
    dt = time.perf_counter() - t0
    t.join()
    return dt / (2 * n) * 1e6


# ---------------------------------------------------------------------- spawn + finish


def _noop() -> None:
    pass


async def _anoop() -> None:
    pass


def greenlet_tasks(n: int) -> float:
    """µs per task: one parked worker greenlet is handed ``n`` tasks by switches from the root;
    it calls each and switches back (the floor under spawn+finish: no new greenlet, no queue)."""
    root = getcurrent()

    def worker() -> None:
        fn = root.switch()
        while True:
            fn()
            fn = root.switch()

    g = greenlet(worker)
    switch = g.switch
    switch()  # parked, waiting for its first task
    t0 = time.perf_counter()
    for _ in range(n):
        switch(_noop)
    dt = time.perf_counter() - t0
    g.throw()  # GreenletExit: the loop ends
    return dt / n * 1e6


def csp_spawn(n: int, repeats: int) -> list[float]:
    """µs per goroutine: ``n`` ``go_local(noop)`` then wait until all have finished."""

    def main() -> list[float]:
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                go_local(_noop)
            runtime.gosched()
            while runtime.num_goroutine() > 1:
                runtime.gosched()
            out.append((time.perf_counter() - t0) / n * 1e6)
        return out

    return csp_mp.run(main, procs=1)


def asyncio_spawn(n: int, repeats: int) -> list[float]:
    """µs per task: ``n`` ``loop.create_task(noop())`` then wait until all are done."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tasks = [loop.create_task(_anoop()) for _ in range(n)]
            await asyncio.sleep(0)
            while not all(t.done() for t in tasks[-1:]):
                await asyncio.sleep(0)
            out.append((time.perf_counter() - t0) / n * 1e6)
            del tasks
        return out

    return asyncio.run(main())


def gevent_spawn(n: int, repeats: int) -> list[float]:
    """µs per greenlet: ``n`` ``gevent.spawn(noop)`` then wait until all are dead."""
    if gevent is None:
        return []
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        glets = [gevent.spawn(_noop) for _ in range(n)]
        gevent.sleep(0)
        if not all(g.dead for g in glets[-1:]):
            gevent.joinall(glets)
        out.append((time.perf_counter() - t0) / n * 1e6)
        del glets
    return out


# ---------------------------------------------------------------------- parked goroutines


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _parked_child(kind: str, n: int) -> None:
    """In a fresh interpreter: park ``n`` goroutines/tasks/greenlets on one empty channel."""
    if kind == "csp_mp":
        def main() -> None:
            ch = Chan()
            started = [0]

            def park() -> None:
                started[0] += 1
                ch.recv()

            gc.collect()
            rss0 = _rss()
            t0 = time.perf_counter()
            for _ in range(n):
                go_local(park)
            runtime.gosched()
            while started[0] < n:  # preemption may hand main the P back before all have run
                runtime.gosched()
            dt = time.perf_counter() - t0
            rss1 = _rss()
            _emit({"seconds": dt, "rss_delta": rss1 - rss0,
                   "parked": ch.stats().receivers_waiting})

        csp_mp.run(main, procs=1)
    elif kind == "asyncio":
        async def amain() -> None:
            q: asyncio.Queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            gc.collect()
            rss0 = _rss()
            t0 = time.perf_counter()
            tasks = [loop.create_task(q.get()) for _ in range(n)]
            await asyncio.sleep(0)
            while len(q._getters) < n:  # type: ignore[attr-defined]
                await asyncio.sleep(0)
            dt = time.perf_counter() - t0
            rss1 = _rss()
            parked = len(q._getters)  # type: ignore[attr-defined]
            del tasks
            _emit({"seconds": dt, "rss_delta": rss1 - rss0, "parked": parked})

        asyncio.run(amain())
    elif kind == "greenlet":
        # the floor under every greenlet-based runtime: a bare greenlet switched into once,
        # parking straight back (its first Python frame maps a fresh data-stack chunk)
        from greenlet import getcurrent, greenlet

        root = getcurrent()

        def body() -> None:  # a Python body, as a goroutine has
            root.switch()

        gc.collect()
        rss0 = _rss()
        t0 = time.perf_counter()
        glets = [greenlet(body) for _ in range(n)]
        for g in glets:
            g.switch()
        dt = time.perf_counter() - t0
        rss1 = _rss()
        _emit({"seconds": dt, "rss_delta": rss1 - rss0,
               "parked": sum(1 for g in glets if g and not g.dead)})
    elif kind == "gevent":
        if gevent is None:
            _emit({"seconds": None, "rss_delta": None, "parked": 0})
        ch = gevent.queue.Channel()
        gc.collect()
        rss0 = _rss()
        t0 = time.perf_counter()
        glets = [gevent.spawn(ch.get) for _ in range(n)]
        gevent.sleep(0)
        dt = time.perf_counter() - t0
        rss1 = _rss()
        parked = sum(1 for g in glets if not g.dead)
        _emit({"seconds": dt, "rss_delta": rss1 - rss0, "parked": parked})
    raise ValueError(f"unknown kind {kind!r}")


def _emit(res: dict) -> None:
    """Print the child's result and leave at once: unwinding the parked peers is not measured."""
    print(json.dumps(res), flush=True)
    os._exit(0)


def parked_in_subprocess(kind: str, n: int) -> dict:
    """Run ``_parked_child`` in a fresh interpreter and return what it printed."""
    res = json_child([sys.executable, "-m", "benchmarks.bench_local", "--parked", kind, str(n)],
                     300)
    if "error" in res:
        return {"seconds": None, "rss_delta": None, "parked": 0, "error": res["error"]}
    return res


# ---------------------------------------------------------------------- the family


def _vs_floor(r: dict, bar: float, moonshot: float, floor: str, unit: str) -> dict:
    """``r`` (csp_mp against a raw greenlet ``floor``) with docs/design.md's bar, "csp_mp <= ``bar``
    times the floor", and its moonshot: the bar text, whether it is met, and the multiple in
    the note (the ratio column reads the other way, floor over csp_mp)."""
    times = None if r["ratio"] is None else 1 / r["ratio"]
    r["bar"] = f"<= {bar:g}x {floor} (moonshot {moonshot:g}x)"
    r["met"] = at_most(times, bar)
    if times is None:
        r["note"] = r["note"] or f"{r['baseline']} not measured"
    else:
        r["note"] = (f"csp_mp takes {times:.2f}x {unit}; moonshot <= {moonshot:g}x: "
                     f"{'met' if times <= moonshot else 'not met'}")
    return r


def run(quick: bool) -> list[dict]:
    """Measure this family and return its rows (see ``_common.row``)."""
    reps = pick(quick, 5, 3, 1)
    n_pp = pick(quick, 200_000, 30_000, 300)
    n_pp_threads = pick(quick, 20_000, 3_000, 100)
    n_spawn = pick(quick, 100_000, 20_000, 200)
    n_parked = pick(quick, 100_000, 100_000, 500)
    reps_parked = pick(quick, 3, 1, 1)
    rows: list[dict] = []

    # ping-pong, peers interleaved so that machine noise hits all of them alike
    samples: dict[str, list[float]] = {k: [] for k in ("csp", "switch", "asyncio", "gevent",
                                                       "threads")}
    csp_pingpong(min(n_pp, 1000))  # warm-up: imports, first greenlets
    for _ in range(reps):
        samples["csp"].append(csp_pingpong(n_pp))
        samples["switch"].append(greenlet_switch(n_pp))
        samples["asyncio"].append(asyncio_pingpong(n_pp))
        g = gevent_pingpong(n_pp)
        if g is not None:
            samples["gevent"].append(g)
        samples["threads"].append(thread_pingpong(n_pp_threads))
    pp = {k: median(v) for k, v in samples.items()}
    r = row(FAMILY, "pingpong", "unbuffered ping-pong, one P", "µs/hand-off", pp["csp"],
            baseline="raw greenlet switch", baseline_value=pp["switch"], higher_is_better=False,
            repeats=reps)
    rows.append(_vs_floor(r, PINGPONG_VS_SWITCH_BAR, PINGPONG_VS_SWITCH_MOONSHOT,
                          "a raw greenlet switch", "a switch"))
    for key, label, bar in (("asyncio", "asyncio.Queue", "faster than asyncio.Queue"),
                            ("gevent", "gevent.queue.Channel", "faster than gevent's Channel"),
                            ("threads", "threads + queue.Queue", "(reference)")):
        met = None
        if key != "threads" and pp[key] is not None:
            met = pp["csp"] < pp[key]
        note = "" if pp[key] is not None else f"{label} not installed"
        if key == "threads":
            note = f"{n_pp_threads} round trips (threads are slow)"
        rows.append(row(FAMILY, "pingpong", "unbuffered ping-pong, one P", "µs/hand-off",
                        pp["csp"], baseline=label, baseline_value=pp[key],
                        higher_is_better=False, bar=bar, met=met, note=note, repeats=reps))

    # spawn + finish, peers interleaved likewise
    spawned: dict[str, list[float]] = {k: [] for k in ("csp", "greenlet", "asyncio", "gevent")}
    csp_spawn(min(n_spawn, 1000), 1)  # warm-up
    for _ in range(reps):
        spawned["csp"].extend(csp_spawn(n_spawn, 1))
        spawned["greenlet"].append(greenlet_tasks(n_spawn))
        spawned["asyncio"].extend(asyncio_spawn(n_spawn, 1))
        spawned["gevent"].extend(gevent_spawn(n_spawn, 1))
    sp = {k: median(v) for k, v in spawned.items()}
    r = row(FAMILY, "spawn", "go_local spawn+finish", "µs/goroutine", sp["csp"],
            baseline="one parked greenlet running each task", baseline_value=sp["greenlet"],
            higher_is_better=False, repeats=reps)
    rows.append(_vs_floor(r, SPAWN_VS_GREENLET_BAR, SPAWN_VS_GREENLET_MOONSHOT,
                          "one parked greenlet running each task", "a task"))
    for key, label in (("asyncio", "asyncio create_task"), ("gevent", "gevent.spawn")):
        rows.append(row(FAMILY, "spawn", "go_local spawn+finish", "µs/goroutine", sp["csp"],
                        baseline=label, baseline_value=sp[key], higher_is_better=False,
                        bar="(reference)",
                        note="" if sp[key] is not None else f"{label} not installed",
                        repeats=reps))

    # parked goroutines, each peer in a fresh interpreter
    got: dict[str, list[dict]] = {"csp_mp": [], "asyncio": [], "gevent": [], "greenlet": []}
    for _ in range(reps_parked):
        for kind in got:
            if kind == "gevent" and gevent is None:
                continue
            got[kind].append(parked_in_subprocess(kind, n_parked))
    secs = {k: median([r["seconds"] for r in v]) for k, v in got.items()}
    mbs = {k: median([r["rss_delta"] / 2**20 for r in v if r["rss_delta"] is not None])
           for k, v in got.items()}
    errors = [r["error"] for v in got.values() for r in v if "error" in r]
    short = [k for k, v in got.items() for r in v if r.get("parked", n_parked) != n_parked]
    note = "; ".join(errors + [f"{k}: not all parked" for k in short])
    label_n = f"{n_parked // 1000} k" if n_parked >= 1000 else str(n_parked)
    for key, label in (("asyncio", "asyncio tasks on Queue.get"),
                       ("gevent", "gevent greenlets on Channel.get"),
                       ("greenlet", "bare greenlets, switched in once")):
        gated = key != "greenlet"
        rows.append(row(FAMILY, "parked_time", f"{label_n} parked goroutines: create", "s",
                        secs["csp_mp"], baseline=label, baseline_value=secs[key],
                        higher_is_better=False,
                        bar=f"<= {PARKED_BAR_S} s" if gated else "(reference)",
                        met=at_most(secs["csp_mp"], PARKED_BAR_S) if gated else None,
                        note=note if gated else "the floor: no scheduler, no channel",
                        repeats=reps_parked))
        if not gated:
            continue
        rows.append(row(FAMILY, "parked_rss", f"{label_n} parked goroutines: RSS delta", "MB",
                        mbs["csp_mp"], baseline=label, baseline_value=mbs[key],
                        higher_is_better=False, bar=f"<= {PARKED_BAR_MB:.0f} MB",
                        met=at_most(mbs["csp_mp"], PARKED_BAR_MB), note=note,
                        repeats=reps_parked))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print this family's rows, or act as the parked-goroutine child."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_local")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parked", nargs=2, metavar=("KIND", "N"))
    args = ap.parse_args(argv)
    if args.parked:
        _parked_child(args.parked[0], int(args.parked[1]))  # prints and exits
    from .run import print_table

    print_table(run(args.quick))


if __name__ == "__main__":
    main()
