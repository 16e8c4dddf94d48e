"""A worker pool with ``errgroup``: at most LIMIT jobs at once, the first error wins.

Part 1 processes 12 jobs with ``set_limit(3)`` and shows that never more than 3 ran at once.
Part 2 runs the same jobs under ``errgroup.with_context``: one job fails, the group's context is
cancelled, the jobs still waiting give up, and ``wait()`` raises the first error.

    python examples/worker_pool.py
"""

from __future__ import annotations

import csp_mp
from csp_mp import atomic, errgroup, select, sleep
from csp_mp.context import Context

LIMIT = 3


def process(job: int, active: atomic.Int64, peak: atomic.Int64) -> None:
    """A job that takes a little while; records how many jobs are active at once."""
    now = active.add(1)
    while True:  # peak = max(peak, now), lock-free
        seen = peak.load()
        if now <= seen or peak.compare_and_swap(seen, now):
            break
    sleep(0.01 * (1 + job % 3))
    active.add(-1)


def fragile(job: int, ctx: Context, done: atomic.Int64, gave_up: atomic.Int64) -> None:
    """Job 5 fails; the others finish their work unless the group is cancelled first."""
    if job == 5:
        raise ValueError(f"job {job}: bad input")
    i, _ = select(ctx.done().recv, csp_mp.after(0.05 * (1 + job % 4)).recv)
    if i == 0:
        gave_up.add(1)
    else:
        done.add(1)


def main(jobs: int = 12) -> None:
    active, peak = atomic.Int64(), atomic.Int64()
    g = errgroup.Group()
    g.set_limit(LIMIT)
    for j in range(jobs):
        g.go(process, j, active, peak)  # blocks while LIMIT jobs are running
    g.wait()
    print(f"part 1: {jobs} jobs done, at most {peak.load()} at once (limit {LIMIT})")

    done, gave_up = atomic.Int64(), atomic.Int64()
    g, ctx = errgroup.with_context(csp_mp.context.background())
    g.set_limit(LIMIT)
    for j in range(jobs):
        g.go(fragile, j, ctx, done, gave_up)
    try:
        g.wait()
    except ValueError as exc:
        print(f"part 2: wait() raised the first error: {exc}")
    print(f"part 2: {done.load()} jobs finished, {gave_up.load()} gave up when the group's "
          f"context was cancelled ({ctx.err()})")


if __name__ == "__main__":
    csp_mp.run(main)
