"""A traced fan-out / fan-in pipeline: see which P ran each stage, when, and why it waited.

A generator stage feeds numbers to several squaring workers (fan out); their results are merged
into one channel and summed (fan in). The whole run is traced with ``csp_mp.trace.tracing``;
the trace opens in Perfetto or ``chrome://tracing``, or as a page of its own:

    python examples/traced_pipeline.py trace.json [JOBS] [SIZE]
    python -m csp_mp trace trace.json -o trace.html
"""

from __future__ import annotations

import sys

import csp_mp
from csp_mp import Chan, WaitGroup, go, trace

WORKERS = 4


def generate(jobs: int, size: int, out: Chan) -> None:
    """Send the jobs ``(lo, hi)``, then close the channel."""
    for i in range(jobs):
        out.send((i * size, (i + 1) * size))
    out.close()


def square_sum(jobs: Chan, results: Chan, wg: WaitGroup) -> None:
    """A worker: the sum of squares of each job's range, until the jobs run out."""
    for lo, hi in jobs:
        results.send(sum(k * k for k in range(lo, hi)))
    wg.done()


def close_when_done(wg: WaitGroup, results: Chan) -> None:
    wg.wait()
    results.close()


def pipeline(jobs: int, size: int) -> int:
    """Run the pipeline; the sum of squares below ``jobs * size``."""
    work: Chan = Chan(jobs)
    results: Chan = Chan(jobs)
    wg = WaitGroup()
    go(generate, jobs, size, work)
    wg.add(WORKERS)
    for _ in range(WORKERS):
        go(square_sum, work, results, wg)     # fan out
    go(close_when_done, wg, results)
    return sum(results)                        # fan in


def expected(jobs: int, size: int) -> int:
    n = jobs * size
    return (n - 1) * n * (2 * n - 1) // 6


def traced(path: str, jobs: int = 8, size: int = 200_000, procs: int | None = None) -> int:
    """Run the pipeline under a trace written to ``path``; its result."""

    def main() -> int:
        with trace.tracing(path):
            return pipeline(jobs, size)

    return csp_mp.run(main, procs=procs)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "trace.json"
    jobs, size = ([int(a) for a in sys.argv[2:4]] + [8, 200_000][len(sys.argv[2:4]):])[:2]
    total = traced(out, jobs, size)
    assert total == expected(jobs, size)
    print(f"sum of squares below {jobs * size}: {total}")
    print(f"trace written to {out}; view it with: python -m csp_mp trace {out}")
