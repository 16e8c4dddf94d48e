"""Several-P figures: CPU-bound speedup, tiny-task throughput, cross-P channels, start-up.

Every csp_mp measurement runs in a fresh child interpreter under a timeout (a runtime that hangs or
crashes becomes an "n/a" row, never a stuck runner), once per runtime path: with
``CSP_MP_NATIVE=1`` (the compiled core) and with ``CSP_MP_NATIVE=0`` (the pure-Python path), each
row's figure saying which (``CSP_MP_BENCH_NATIVE=1`` or ``0`` measures one path only). The peers
(``multiprocessing.Pool``, ``ProcessPoolExecutor``, loky, mpire, ``multiprocessing.Queue`` and
``Pipe``, faster-fifo) run from this process, interleaved with the csp_mp runs of the same repeat;
a peer that is not installed gives an "n/a" baseline.

This module holds the CPU fan-out and the tiny tasks, the children's entry point and the rows;
``parallel_cross`` measures the cross-P channels (goroutines pinned to P1, and their peers),
``parallel_startup`` the start-up, as a program and as a user's script pay it.

``python -m benchmarks.bench_parallel [--quick]`` prints this family's rows (``--startup``: only
the start-up rows a user's script pays, import included);
``python -m benchmarks.bench_parallel --child NAME PARAMS_JSON`` is the child.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import time
from typing import Any

from ._common import (
    all_met,
    answer_child,
    at_least,
    at_most,
    burn,
    calibrate_burn,
    csp_paths,
    family_child,
    median,
    on_path,
    pick,
    row,
)
from .parallel_cross import (
    ARRAY_WARMUP,
    FF_BATCH,
    child_cross,
    ff_1to1,
    ff_4to2,
    mpq_1to1,
    mpq_4to2,
    mpq_array,
    pipe_1to1,
    pipe_rendezvous,
)
from .parallel_startup import (
    STARTUP_VS_PPE_BAR,
    child_startup,
    import_multi_p_layer,
    ppe_startup,
    script_startup_rows,
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
ARRAY_GBPS_BAR = 5.0
ARRAY_VS_MPQ_BAR = 5.0

# ====================================================================== csp_mp side (children)


def _cpu_task(n: int, out: Any) -> None:
    out.send(burn(n))


def child_cpu(procs: int, ntasks: int, n: int) -> dict:
    """Wall time of ``run(main, procs=procs)`` where main fans ``ntasks`` CPU tasks out with go."""
    import csp_mp

    import_multi_p_layer()

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

CHILDREN = {"cpu": child_cpu, "tiny": child_tiny, "startup": child_startup, "cross": child_cross}


def in_child(name: str, params: dict, timeout: float, path: str | None = None) -> dict:
    """Run ``CHILDREN[name](**params)`` in a fresh interpreter; its result, or ``{"error"}``.

    ``path``: the ``CSP_MP_NATIVE`` value the child runs with ("1" compiled core, "0" Python
    path); the child says which path its runtime took, and running the other one is an error.
    """
    return family_child("bench_parallel", name, params, timeout, path)


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



# ====================================================================== the family


def _vs(r: dict, bar: float | None) -> dict:
    """``r`` with ``met`` set from its ratio against ``bar`` (None: a reference row)."""
    if bar is not None:
        r["met"] = at_least(r["ratio"], bar)
    return r


def _peer_note(values: list[float], label: str, what: str = "not installed") -> str:
    return "" if values else f"{label} {what}"


def _on(path: str, r: dict) -> dict:
    """``r``, marked as measured on runtime path ``path``."""
    r["path"] = path
    return r


def _measured(key: tuple, res: dict, got: dict, failed: dict, field: str) -> None:
    """File a child's answer ``res`` under ``key``: in ``got`` when it holds ``field``, else its
    error in ``failed`` (a failure repeats: the caller does not wait it out again)."""
    if field in res:
        got.setdefault(key, []).append(res)
    else:
        failed[key] = res.get("error", f"no {field!r} in the child's answer")


def _cpu_rows(paths: list[str], reps: int, ntasks: int, task_s: float,
              timeout: float) -> list[dict]:
    """CPU-bound speedup: ``procs=2`` against ``procs=1`` and against the pools."""
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
                    _measured((path, procs), res, cpu, cpu_failed, "seconds")
        for key in cpu_peers:
            v = pool_cpu(key, ntasks, n)
            if v is not None:
                cpu_peers[key].append(v)
    c = {k: median(v) for k, v in cpu_peers.items()}
    rows = []
    for path in paths:
        p1 = median([r["seconds"] for r in cpu.get((path, 1), [])])
        p2 = median([r["seconds"] for r in cpu.get((path, 2), [])])
        note = "; ".join(e for e in dict.fromkeys(cpu_failed.get((path, p), "") for p in (1, 2))
                         if e)
        fig = on_path(f"{ntasks} CPU tasks of ~{task_s * 1e3:.0f} ms, procs=2", path)
        r = row(FAMILY, "cpu_speedup", fig, "s", p2, baseline="csp_mp procs=1 (same path)",
                baseline_value=p1, higher_is_better=False, bar=f"ratio >= {SPEEDUP_BAR}x",
                note=note, repeats=reps)
        rows.append(_on(path, _vs(r, SPEEDUP_BAR)))
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
            rows.append(_on(path, r))
    return rows


def _tiny_rows(paths: list[str], reps: int, n_tiny: int, n_tiny_ppe: int, window: int,
               timeout: float) -> list[dict]:
    """Tiny tasks: the issue-11 row (all at once) on 2 Ps and 1 P, and the windowed form."""
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
                    _measured((path, procs, w), res, tiny, tiny_failed, "rate")
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

    rows = []
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
            rows.append(_on(path, _vs(r, bar)))
        rate, err, share = tiny_rate((path, 2, window))
        r = row(FAMILY, "tiny_tasks_window",
                on_path(f"{label_n} tiny tasks: go + result chan, procs=2, <= {window} in flight",
                        path),
                "tasks/s", rate, baseline="ProcessPoolExecutor(2).submit",
                baseline_value=ppe_rate, higher_is_better=True, bar=f">= {TINY_VS_PPE_BAR:g}x",
                note=err or share, repeats=reps)
        rows.append(_on(path, _vs(r, TINY_VS_PPE_BAR)))
    return rows


def _cross_rows(paths: list[str], reps: int, n_msgs: int, n_msgs_peer: int, array_reps: int,
                deadline: float, timeout: float) -> list[dict]:
    """Cross-P channels (1 -> 1, 4 -> 2, unbuffered) and the 64 MiB array, against the peers."""
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
    rows = []
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
            rows.append(_on(path, _vs(r, bar)))
        v42 = median(res.get("4to2", []))
        fig = on_path("cross-P channel, small msgs, 4 -> 2", path)
        for label, vals, bar, extra in (
                ("multiprocessing.Queue (4 -> 2 procs)", mq42, CROSS42_VS_MPQ_BAR, ""),
                ("faster-fifo put_many/get_many (4 -> 2 procs)", ff42, CROSS42_VS_FF_BAR,
                 ff_missing)):
            r = row(FAMILY, "cross_4to2", fig, "msgs/s", v42, baseline=label,
                    baseline_value=median(vals), higher_is_better=True, bar=f">= {bar:g}x",
                    note="; ".join(x for x in (note, extra) if x), repeats=reps)
            rows.append(_on(path, _vs(r, bar)))
        vu = median(res.get("unbuf", []))
        rows.append(_on(path, row(
            FAMILY, "cross_unbuffered",
            on_path("cross-P unbuffered channel, 1 -> 1 (each send a rendezvous)", path),
            "msgs/s", vu, baseline="multiprocessing.Pipe, each message acknowledged",
            baseline_value=median(pipe_rv), higher_is_better=True, note=note, repeats=reps)))
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
        rows.append(_on(path, r))
    return rows


def _startup_rows(paths: list[str], reps: int, deadline: float, timeout: float) -> list[dict]:
    """``run(procs=2)`` to a goroutine on P1 against ``ProcessPoolExecutor(2)`` to its first
    task, modules imported beforehand."""
    st: dict[tuple, list[dict]] = {}
    st_failed: dict[tuple, str] = {}
    ppe_st = []
    for _ in range(reps):
        for path in paths:
            if (path,) not in st_failed:  # the same answer every time: do not wait it out again
                res = in_child("startup", {"procs": 2, "deadline_s": deadline}, timeout, path)
                _measured((path,), res, st, st_failed, "seconds")
        ppe_st.append(ppe_startup())
    base = median(ppe_st)
    rows = []
    for path in paths:
        vst = median([r["seconds"] for r in st.get((path,), [])])
        rows.append(_on(path, row(
            FAMILY, "startup", on_path("run(procs=2) to first goroutine on P1", path), "s",
            vst, baseline="ProcessPoolExecutor(2, fork) to first task", baseline_value=base,
            higher_is_better=False, bar=f"<= {STARTUP_VS_PPE_BAR:g}x the peer",
            met=at_most(vst / base, STARTUP_VS_PPE_BAR) if vst and base else None,
            note=st_failed.get((path,), ""), repeats=len(st.get((path,), [])))))
    return rows


def _script_sizes(quick: bool) -> tuple[int, float, float]:
    """Repeats, P1 deadline and child timeout of the script start-up rows."""
    return pick(quick, 9, 7, 1), pick(quick, 3.0, 2.0, 0.3), pick(quick, 120.0, 90.0, 30.0)


def run(quick: bool) -> list[dict]:
    """Measure this family and return its rows (see ``_common.row``).

    Every csp_mp figure is measured once per runtime path (``_common.csp_paths``: the compiled
    core and the pure-Python path by default), each in children run with ``CSP_MP_NATIVE`` set;
    the peers run once per repeat, between them.
    """
    paths = csp_paths()
    reps = pick(quick, 5, 2, 1)  # medians of 5: the 2-vCPU VM's neighbours move single runs
    deadline = pick(quick, 3.0, 2.0, 0.3)
    timeout = pick(quick, 120.0, 90.0, 30.0)  # per child; the cross-P child gets twice this
    return (_cpu_rows(paths, reps, pick(quick, 64, 64, 4), pick(quick, 0.020, 0.010, 0.002),
                      timeout)
            + _tiny_rows(paths, reps, pick(quick, 100_000, 30_000, 300),
                         pick(quick, 20_000, 5_000, 100), pick(quick, 4096, 4096, 64), timeout)
            + _cross_rows(paths, reps, pick(quick, 400_000, 100_000, 2_000),
                          pick(quick, 200_000, 50_000, 2_000), pick(quick, 5, 3, 1), deadline,
                          timeout)
            + _startup_rows(paths, reps, deadline, timeout)
            + script_startup_rows(paths, *_script_sizes(quick)))


def main(argv: list[str] | None = None) -> None:
    """Command line: print this family's rows, or act as a csp_mp child."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_parallel")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("NAME", "PARAMS_JSON"))
    ap.add_argument("--startup", action="store_true",
                    help="only the start-up rows a script pays (import, run to P1)")
    args = ap.parse_args(argv)
    if args.child:
        answer_child("bench_parallel", *args.child)
        return
    from .run import print_table

    if args.startup:
        print_table(script_startup_rows(csp_paths(), *_script_sizes(args.quick)))
        return
    print_table(run(args.quick))


if __name__ == "__main__":
    main()
