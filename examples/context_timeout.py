"""Context timeouts cancelling a tree of goroutines.

The main goroutine gives the whole job a deadline with ``context.with_timeout``. Three branch
goroutines each start two leaves; every goroutine works in rounds until its context is done.
Branch ``w1`` also cancels its own subtree early: that stops ``w1`` and its leaves ("context
canceled") and nobody else. When the deadline passes, everything still running stops ("context
deadline exceeded"). Cancellation flows from parent to children only, in whatever P each runs.

    python examples/context_timeout.py
"""

from __future__ import annotations

import csp_mp
from csp_mp import Chan, WaitGroup, after, after_func, context, select
from csp_mp.context import Context

DEADLINE = 0.4      # the whole job
EARLY_CANCEL = 0.1  # when w1 cancels its own subtree
ROUND = 0.02        # one round of "work"


def node(ctx: Context, name: str, depth: int, wg: WaitGroup, report: Chan) -> None:
    """Start ``depth`` more levels below this one, then work in rounds until ``ctx`` is done."""
    if name == "w1":
        ctx, cancel = context.with_cancel(ctx)
        after_func(EARLY_CANCEL, cancel)
    if depth > 0:
        for k in range(2):
            wg.go(node, ctx, f"{name}.{k}", depth - 1, wg, report)
    rounds = 0
    while True:
        i, _ = select(ctx.done().recv, after(ROUND).recv)
        if i == 0:
            break
        rounds += 1
    report.send((name, rounds, csp_mp.runtime.current_p(), ctx.err()))


def main() -> dict[str, str]:
    ctx, cancel = context.with_timeout(context.background(), DEADLINE)
    report: Chan = Chan(16)
    wg = WaitGroup()
    for b in range(3):
        wg.go(node, ctx, f"w{b}", 1, wg, report)
    wg.wait()
    cancel()  # releases the deadline's timer; a no-op once it has fired (as in Go)
    report.close()

    outcome = {}
    print(f"deadline {DEADLINE} s for the tree; w1 cancels its subtree after {EARLY_CANCEL} s")
    for name, rounds, p, err in sorted(report, key=lambda r: r[0]):
        outcome[name] = str(err)
        print(f"  {name:<5} stopped after {rounds:2d} rounds on P{p}: {err}")
    print(f"{len(outcome)} goroutines stopped; the root context says: {ctx.err()}")
    return outcome


if __name__ == "__main__":
    csp_mp.run(main)
