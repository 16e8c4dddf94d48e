"""Executor and map figures: csp_mp.futures.Executor and csp_mp.map against ProcessPoolExecutor,
multiprocessing.Pool and mpire, in the same run.

- submit: ``Executor.submit(f).result()`` one task at a time (2 Ps) vs ``ProcessPoolExecutor``;
- map: ``csp_mp.map`` of 100 k tiny calls on 2 Ps vs mpire's auto-chunked map and ``Pool.imap``
  with its best chunksize (each side the median of ``MAP_RUNS`` timed runs; the pool's at each
  chunksize, the best of those);
- cpu: 64 tasks of ~20 ms through ``Executor.map`` vs ``ProcessPoolExecutor(2).map``.

Every csp_mp measurement runs in a fresh child interpreter under a timeout; the peers run here.
``python -m benchmarks.bench_futures [--quick]`` prints this family's rows.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import time

from ._common import (
    all_met,
    answer_child,
    at_least,
    at_most,
    burn,
    calibrate_burn,
    family_child,
    median,
    pick,
    row,
)

FAMILY = "futures"
SUBMIT_VS_PPE_BAR = 10.0
MAP_VS_PEERS_BAR = 1.0
CPU_VS_PPE_BAR = 1.0  # docs/design.md's bar for this workload against ProcessPoolExecutor(2)
POOL_CHUNKS = (10_000, 1000, 100, 1)  # largest first: the slow small ones run once
MAP_RUNS = 5  # timed runs per measurement of the map row (each side: their median)


def _tiny(x: int) -> int:
    return x + 1


# ====================================================================== csp_mp side (children)

def _child_submit(n: int) -> dict:
    from csp_mp.futures import Executor

    with Executor(procs=2) as ex:
        ex.submit(_tiny, 0).result()
        t0 = time.perf_counter()
        for i in range(n):
            ex.submit(_tiny, i).result()
        dt = time.perf_counter() - t0
    return {"rate": n / dt}


def _child_map(n: int, runs: int = MAP_RUNS) -> dict:
    import csp_mp

    csp_mp.map(_tiny, range(100), procs=2)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = csp_mp.map(_tiny, range(n), procs=2)
        times.append(time.perf_counter() - t0)
        assert len(out) == n
    return {"seconds": median(times)}


def _child_cpu(ntasks: int, n: int) -> dict:
    from csp_mp.futures import Executor

    with Executor(procs=2) as ex:
        list(ex.map(burn, [1000] * 4))
        t0 = time.perf_counter()
        list(ex.map(burn, [n] * ntasks))
        dt = time.perf_counter() - t0
    return {"seconds": dt}


CHILDREN = {"submit": _child_submit, "map": _child_map, "cpu": _child_cpu}


def in_child(name: str, params: dict, timeout: float) -> dict:
    """Run ``CHILDREN[name](**params)`` in a fresh interpreter; its result, or ``{"error"}``."""
    return family_child("bench_futures", name, params, timeout)


# ====================================================================== peers (this process)

def _ppe_submit(n: int) -> float:
    with cf.ProcessPoolExecutor(2) as ex:
        ex.submit(_tiny, 0).result()
        t0 = time.perf_counter()
        for i in range(n):
            ex.submit(_tiny, i).result()
        return n / (time.perf_counter() - t0)


def _mpire_map(n: int) -> float | None:
    try:
        from mpire import WorkerPool
    except ImportError:
        return None
    with WorkerPool(n_jobs=2) as pool:
        t0 = time.perf_counter()
        pool.map(_tiny, range(n))
        return time.perf_counter() - t0


def _pool_imap_best(n: int, runs: int = MAP_RUNS) -> tuple[float, int]:
    """The median time of ``Pool(2).imap`` over ``runs`` runs at its best chunksize."""
    best = (float("inf"), 0)
    with mp.get_context("fork").Pool(2) as pool:
        for cs in POOL_CHUNKS:
            if cs > n:
                continue
            times: list[float] = []
            for _ in range(runs):
                t0 = time.perf_counter()
                for _ in pool.imap(_tiny, range(n), chunksize=cs):
                    pass
                times.append(time.perf_counter() - t0)
                if times[0] > 2 * best[0]:
                    break  # far off the best so far: one run says enough
            best = min(best, (median(times) or 0.0, cs))
    return best


def _ppe_cpu(ntasks: int, n: int) -> float:
    with cf.ProcessPoolExecutor(2) as ex:
        list(ex.map(burn, [1000] * 4))
        t0 = time.perf_counter()
        list(ex.map(burn, [n] * ntasks))
        return time.perf_counter() - t0


def run(quick: bool) -> list[dict]:
    """Measure this family and return its rows (see ``_common.row``)."""
    reps = pick(quick, 3, 2, 1)
    n_submit = pick(quick, 5_000, 2_000, 50)
    n_submit_ppe = pick(quick, 2_000, 1_000, 50)
    n_map = pick(quick, 100_000, 100_000, 500)
    ntasks = pick(quick, 64, 64, 4)
    task_s = pick(quick, 0.020, 0.020, 0.002)
    timeout = pick(quick, 120.0, 90.0, 30.0)
    rows: list[dict] = []

    sub: list[float] = []
    ppe_sub: list[float] = []
    err = ""
    for _ in range(reps):
        r = in_child("submit", {"n": n_submit}, timeout)
        err = r.get("error", err)
        if "rate" in r:
            sub.append(r["rate"])
        ppe_sub.append(_ppe_submit(n_submit_ppe))
    v, base = median(sub), median(ppe_sub)
    x = v / base if v and base else None
    rows.append(row(FAMILY, "executor_submit_result", "submit+result() per task, 2 Ps",
                    "tasks/s", v, baseline="ProcessPoolExecutor(2)", baseline_value=base,
                    higher_is_better=True, bar=f">= {SUBMIT_VS_PPE_BAR:g}x PPE",
                    met=at_least(x, SUBMIT_VS_PPE_BAR), note=err if v is None else "",
                    repeats=len(sub)))

    cs_map: list[float] = []
    mpire: list[float] = []
    pool: list[float] = []
    best_cs = 0
    err = ""
    for _ in range(reps):
        r = in_child("map", {"n": n_map}, timeout)
        err = r.get("error", err)
        if "seconds" in r:
            cs_map.append(r["seconds"])
        m = _mpire_map(n_map)
        if m is not None:
            mpire.append(m)
        p, best_cs = _pool_imap_best(n_map)
        pool.append(p)
    v, m, p = median(cs_map), median(mpire), median(pool)
    rate = (lambda s: n_map / s if s else None)
    rows.append(row(FAMILY, "map_tiny_vs_mpire", f"csp_mp.map of {n_map} tiny calls, 2 Ps",
                    "calls/s", rate(v), baseline="mpire WorkerPool(2).map (auto chunks)",
                    baseline_value=rate(m), higher_is_better=True, bar=">= mpire",
                    met=all_met(at_most(v, m) if m is not None else None),
                    note=err if v is None else ("" if m is not None else "mpire not installed"),
                    repeats=len(cs_map)))
    rows.append(row(FAMILY, "map_tiny_vs_pool_imap", f"csp_mp.map of {n_map} tiny calls, 2 Ps",
                    "calls/s", rate(v), baseline=f"Pool(2).imap, best chunksize ({best_cs})",
                    baseline_value=rate(p), higher_is_better=True, bar=">= Pool.imap",
                    met=at_most(v, p), note=err if v is None else "", repeats=len(cs_map)))

    n = calibrate_burn(task_s)
    cpu: list[float] = []
    ppe_cpu: list[float] = []
    err = ""
    for _ in range(reps):
        r = in_child("cpu", {"ntasks": ntasks, "n": n}, timeout)
        err = r.get("error", err)
        if "seconds" in r:
            cpu.append(r["seconds"])
        ppe_cpu.append(_ppe_cpu(ntasks, n))
    v, base = median(cpu), median(ppe_cpu)
    x = v / base if v and base else None
    rows.append(row(FAMILY, "executor_map_cpu", f"{ntasks} CPU tasks of ~{task_s * 1000:g} ms, "
                    "Executor.map, 2 Ps", "s", v, baseline="ProcessPoolExecutor(2).map",
                    baseline_value=base, higher_is_better=False,
                    bar=f"<= {CPU_VS_PPE_BAR}x PPE", met=at_most(x, CPU_VS_PPE_BAR),
                    note=err if v is None else "", repeats=len(cpu)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "PARAMS"))
    args = parser.parse_args()
    if args.child:
        answer_child("bench_futures", *args.child)
        return
    from .run import print_table

    print_table(run(args.quick))


if __name__ == "__main__":
    main()
