"""CPU work spread over the Ps: long goroutines, a chain of goroutines, a cold fan-out.

- ``half_second``: N goroutines each burning ~0.5 s of CPU, started by main, ``procs=2``: the
  fan-out's wall time (from main's start to its last result) against ceil(N/2) times one
  goroutine's burn measured in the same child before the runtime starts; bar <= 1.1x, N = 2,
  3, 4, 8.
- ``chain``: fannkuch-redux's Go idiom, each goroutine first starting the goroutine for the next
  chunk and then computing its own (~5 ms), 200 chunks: ``procs=2`` against ``procs=1`` (wall
  time inside main); bar >= 1.7x.
- ``cold_cpu``: 64 goroutines of ~20 ms started by main, measured as a user's script pays it:
  in a fresh interpreter, the clock started before ``import csp_mp`` and stopped when ``run``
  returns; ``procs=2`` against ``procs=1`` (bar >= 1.85x) and against
  ``ProcessPoolExecutor(2).map`` in a fresh interpreter, its import inside the clock too (bar
  <= 1.0x its wall time).

Every csp_mp measurement runs in a fresh child interpreter once per runtime path (the compiled
core and the pure-Python path), interleaved with the peer in each repeat; medians.

``python -m benchmarks.bench_balance [--quick]`` prints this family's rows.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from ._common import (
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

FAMILY = "balance"
HALF_BAR = 1.1
CHAIN_BAR = 1.7
COLD_SPEEDUP_BAR = 1.85
COLD_VS_PPE_BAR = 1.0

# ====================================================================== children


def _burn_send(n: int, out: Any) -> None:
    out.send(burn(n))


def child_half(n_tasks: int, n: int) -> dict:
    """One goroutine's burn alone, then ``n_tasks`` of them on 2 Ps: seconds of each."""
    t0 = time.perf_counter()
    burn(n)
    one = time.perf_counter() - t0
    import csp_mp

    def main() -> float:
        t0 = time.perf_counter()
        out = csp_mp.Chan(n_tasks)
        for _ in range(n_tasks):
            csp_mp.go(_burn_send, n, out)
        for _ in range(n_tasks):
            out.recv()
        return time.perf_counter() - t0

    return {"one": one, "seconds": csp_mp.run(main, procs=2)}


def _chunk(i: int, k: int, n: int, out: Any) -> None:
    import csp_mp

    if i + 1 < k:
        csp_mp.go(_chunk, i + 1, k, n, out)
    burn(n)
    out.send(i)


def child_chain(procs: int, k: int, n: int) -> dict:
    """Seconds of ``k`` chained chunks of ``burn(n)`` inside main."""
    import csp_mp

    def main() -> float:
        t0 = time.perf_counter()
        out = csp_mp.Chan(k)
        csp_mp.go(_chunk, 0, k, n, out)
        got = sorted(out.recv() for _ in range(k))
        if got != list(range(k)):
            raise RuntimeError("chain: chunks lost or repeated")
        return time.perf_counter() - t0

    return {"seconds": csp_mp.run(main, procs=procs)}


def child_cold(kind: str, procs: int, ntasks: int, n: int) -> dict:
    """Seconds from before the import to the sum of ``ntasks`` burns (``kind``: csp or ppe)."""
    t0 = time.perf_counter()
    if kind == "csp":
        import csp_mp

        def main() -> int:
            out = csp_mp.Chan(ntasks)
            for _ in range(ntasks):
                csp_mp.go(_burn_send, n, out)
            return sum(out.recv() for _ in range(ntasks))

        total = csp_mp.run(main, procs=procs)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(procs, mp_context=mp.get_context("fork")) as ex:
            total = sum(ex.map(burn, [n] * ntasks))
    dt = time.perf_counter() - t0
    if total != ntasks * burn(n):
        return {"error": "wrong sum of CPU task results"}
    return {"seconds": dt}


CHILDREN = {"half": child_half, "chain": child_chain, "cold": child_cold}


def in_child(name: str, params: dict, timeout: float, path: str | None) -> dict:
    """``CHILDREN[name](**params)`` in a fresh interpreter (``CSP_MP_NATIVE=path``)."""
    return family_child("bench_balance", name, params, timeout, path)


# ====================================================================== the family


def run(quick: bool) -> list[dict]:
    """Measure this family and return its rows (see ``_common.row``)."""
    paths = csp_paths()
    reps = pick(quick, 5, 3, 1)
    half_s = pick(quick, 0.5, 0.25, 0.01)
    ns = pick(quick, (2, 3, 4, 8), (2, 4), (2,))
    chunks = pick(quick, 200, 100, 10)
    chunk_s = pick(quick, 0.005, 0.005, 0.001)
    ntasks = pick(quick, 64, 64, 4)
    task_s = pick(quick, 0.020, 0.020, 0.002)
    timeout = pick(quick, 120.0, 90.0, 30.0)
    rows: list[dict] = []
    n_half, n_chunk, n_task = (calibrate_burn(s) for s in (half_s, chunk_s, task_s))

    def med(xs: list[dict], key: str = "seconds") -> float | None:
        return median([x[key] for x in xs if key in x])

    def errs(xs: list[dict]) -> str:
        return "; ".join(dict.fromkeys(x["error"] for x in xs if "error" in x))

    for path in paths:
        got: dict[Any, list[dict]] = {}
        for _ in range(reps):
            for k in ns:
                got.setdefault(("half", k), []).append(
                    in_child("half", {"n_tasks": k, "n": n_half}, timeout, path))
            for procs in (1, 2):
                got.setdefault(("chain", procs), []).append(
                    in_child("chain", {"procs": procs, "k": chunks, "n": n_chunk}, timeout,
                             path))
                got.setdefault(("cold", procs), []).append(
                    in_child("cold", {"kind": "csp", "procs": procs, "ntasks": ntasks,
                                      "n": n_task}, timeout, path))
            got.setdefault(("ppe",), []).append(
                in_child("cold", {"kind": "ppe", "procs": 2, "ntasks": ntasks, "n": n_task},
                         timeout, None))
        for k in ns:
            res = got[("half", k)]
            wall, one = med(res), med(res, "one")
            ideal = None if one is None else math.ceil(k / 2) * one
            r = row(FAMILY, "half_second",
                    on_path(f"{k} goroutines of ~{half_s:g} s CPU, procs=2", path), "s", wall,
                    baseline=f"ceil({k}/2) x one goroutine's burn", baseline_value=ideal,
                    higher_is_better=False, bar=f"<= {HALF_BAR}x", note=errs(res),
                    repeats=reps)
            r["met"] = None if wall is None or ideal is None else wall <= HALF_BAR * ideal
            rows.append(r)
        c1, c2 = med(got[("chain", 1)]), med(got[("chain", 2)])
        r = row(FAMILY, "chain", on_path(f"chain of {chunks} goroutines of ~{chunk_s * 1e3:g} "
                                         "ms, each starting the next first, procs=2", path),
                "s", c2, baseline="the same, procs=1", baseline_value=c1,
                higher_is_better=False, bar=f">= {CHAIN_BAR}x",
                note=errs(got[("chain", 1)] + got[("chain", 2)]), repeats=reps)
        r["met"] = at_least(r["ratio"], CHAIN_BAR)
        rows.append(r)
        k1, k2, ppe = med(got[("cold", 1)]), med(got[("cold", 2)]), med(got[("ppe",)])
        fig = on_path(f"{ntasks} CPU tasks of ~{task_s * 1e3:g} ms, cold (import and start-up "
                      "inside the clock), procs=2", path)
        note = errs(got[("cold", 1)] + got[("cold", 2)])
        r = row(FAMILY, "cold_cpu", fig, "s", k2, baseline="the same, procs=1",
                baseline_value=k1, higher_is_better=False, bar=f">= {COLD_SPEEDUP_BAR}x",
                note=note, repeats=reps)
        r["met"] = at_least(r["ratio"], COLD_SPEEDUP_BAR)
        rows.append(r)
        r = row(FAMILY, "cold_cpu_vs_ppe", fig, "s", k2,
                baseline="ProcessPoolExecutor(2).map, fork, cold", baseline_value=ppe,
                higher_is_better=False, bar=f"<= {COLD_VS_PPE_BAR}x its wall time",
                note=note or errs(got[("ppe",)]), repeats=reps)
        r["met"] = None if k2 is None or ppe is None else at_most(k2 / ppe, COLD_VS_PPE_BAR)
        rows.append(r)
        for r in rows:
            r.setdefault("path", path)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print this family's rows, or act as a child."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_balance")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("NAME", "PARAMS_JSON"))
    args = ap.parse_args(argv)
    if args.child:
        answer_child("bench_balance", *args.child)
        return
    from .run import print_table

    print_table(run(args.quick))


if __name__ == "__main__":
    main()
