"""Fan out, fan in: start one goroutine per job, collect the results in job order.

Each job counts the primes in one block of numbers. The jobs run in parallel (``go`` may place
them on any P); their results arrive in whatever order they finish, tagged with the job's index,
and are put back in order before printing.

    python examples/fan_out_fan_in.py [JOBS] [BLOCK]
"""

from __future__ import annotations

import sys

import csp_mp
from csp_mp import Chan, go


def count_primes(lo: int, hi: int) -> int:
    """How many primes p with lo <= p < hi (trial division: deliberately CPU-bound)."""
    n = 0
    for k in range(max(lo, 2), hi):
        if all(k % d for d in range(2, int(k**0.5) + 1)):
            n += 1
    return n


def job(index: int, lo: int, hi: int, results: Chan) -> None:
    """One worker: do the job, send ``(index, answer)``."""
    results.send((index, count_primes(lo, hi)))


def main(jobs: int = 8, block: int = 20_000) -> list[int]:
    results: Chan = Chan(jobs)  # buffered: a worker never waits for the collector
    for i in range(jobs):
        go(job, i, i * block, (i + 1) * block, results)   # fan out

    counts = [0] * jobs
    arrival = []
    for _ in range(jobs):                                 # fan in
        i, n = results.recv()
        counts[i] = n
        arrival.append(i)

    print(f"{jobs} jobs, finished in the order {arrival}")
    for i, n in enumerate(counts):                        # report in job order
        print(f"job {i}: {n:5d} primes in [{i * block}, {(i + 1) * block})")
    print(f"total: {sum(counts)} primes below {jobs * block}")
    return counts


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    csp_mp.run(main, *args)
