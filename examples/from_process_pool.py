"""Converting a ProcessPoolExecutor program: change the import, keep the code.

The program counts primes in ranges. The same function runs first with
``concurrent.futures.ProcessPoolExecutor`` and then with ``csp_mp.futures.Executor``: only the
line that makes the executor differs. Then ``csp_mp.map`` does the same in one call, and
``as_chan`` lets ``select`` wait on a future and a timer together.

    python examples/from_process_pool.py [LIMIT]
"""

from __future__ import annotations

import concurrent.futures as cf
import sys

import csp_mp
from csp_mp.futures import Executor, as_chan


def count_primes(lo: int, hi: int) -> int:
    """How many primes lie in [lo, hi)."""
    return sum(1 for n in range(max(lo, 2), hi)
               if all(n % d for d in range(2, int(n ** 0.5) + 1)))


def total(ex: cf.Executor, limit: int, step: int) -> int:
    """The code that does not change: submit, then gather with as_completed."""
    futs = [ex.submit(count_primes, lo, lo + step) for lo in range(0, limit, step)]
    return sum(f.result() for f in cf.as_completed(futs))


def main(limit: int) -> None:
    step = max(1, limit // 16)
    with cf.ProcessPoolExecutor(2) as ex:  # before
        print(f"ProcessPoolExecutor: {total(ex, limit, step)} primes below {limit}")
    with Executor(procs=2) as ex:  # after: the only line that changed
        print(f"csp_mp Executor:     {total(ex, limit, step)} primes below {limit}")
        i, (value, err) = csp_mp.select(as_chan(ex.submit(count_primes, 0, step)).recv,
                                        csp_mp.after(60).recv)
        print(f"as_chan in a select: case {i}, {value} primes below {step}, error {err}")
    counts = csp_mp.map(_count_chunk, range(0, limit, step))
    print(f"csp_mp.map:          {sum(counts)} primes below {limit}")


def _count_chunk(lo: int) -> int:
    return count_primes(lo, lo + max(1, LIMIT // 16))


LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000

if __name__ == "__main__":
    main(LIMIT)
