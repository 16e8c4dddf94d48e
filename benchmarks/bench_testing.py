"""Test tools: the wall time of a ``with_timeout(ctx, 30)`` that expires under fake time.

The figure is a whole ``csp_mp.run(..., procs=1)`` with the context made, waited on until its
30 virtual seconds pass, and the runtime stopped; the bar is 50 ms (issue 14).

``python -m benchmarks.bench_testing`` prints this family's rows.
"""

from __future__ import annotations

import time

import csp_mp
from csp_mp import context
from csp_mp.testing import fake_time

from ._common import at_most, median, row

FAMILY = "testing"
BAR_MS = 50.0


def _expire() -> float:
    with fake_time() as clock:
        t0 = clock.now()
        ctx, cancel = context.with_timeout(context.background(), 30)
        ctx.done().recv()
        cancel()
        return clock.now() - t0


def _once() -> float:
    t0 = time.perf_counter()
    virtual = csp_mp.run(_expire, procs=1)
    wall = time.perf_counter() - t0
    assert virtual == 30, virtual
    return wall * 1e3


def run(quick: bool) -> list[dict]:
    """Median over repeated runs; return the result rows."""
    n = 5 if quick else 25
    ms = median([_once() for _ in range(n)])
    return [row(FAMILY, "fake_time_with_timeout_30s", "with_timeout(ctx, 30) expiring, fake time",
                "ms wall", ms, higher_is_better=False, bar=f"<= {BAR_MS:.0f} ms",
                met=at_most(ms, BAR_MS), note="whole run(procs=1); 30 s virtual", repeats=n)]


def main() -> None:
    """Command line: print the rows."""
    for r in run(quick=False):
        print(f"{r['figure']}: {r['value']:.3f} {r['unit']} (bar {r['bar']}, met: {r['met']})")


if __name__ == "__main__":
    main()
