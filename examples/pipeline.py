"""A pipeline of stages joined by bounded channels.

    numbers -> square (3 workers) -> keep the odd ones -> sum

Each stage owns its output channel and closes it when done, so the next stage's ``for v in ch``
ends. Every channel has a small buffer: a fast stage runs at most that far ahead of a slow one
(back-pressure), so memory stays bounded however many numbers flow through.

    python examples/pipeline.py [N]
"""

from __future__ import annotations

import sys

import csp_mp
from csp_mp import Chan, WaitGroup, go

BUFFER = 4  # the most values waiting between two stages


def generate(n: int, out: Chan) -> None:
    """Stage 1: send 1..n, then close."""
    for i in range(1, n + 1):
        out.send(i)
    out.close()


def square(inp: Chan, out: Chan) -> None:
    """Stage 2 worker: square every value until the input is closed."""
    for v in inp:
        out.send(v * v)


def close_when_done(wg: WaitGroup, ch: Chan) -> None:
    """Close ``ch`` once every worker of the stage has returned (Go's idiom)."""
    wg.wait()
    ch.close()


def keep_odd(inp: Chan, out: Chan) -> None:
    """Stage 3: pass on odd values only."""
    for v in inp:
        if v % 2:
            out.send(v)
    out.close()


def main(n: int = 1000, workers: int = 3) -> int:
    numbers, squares, odd = Chan(BUFFER), Chan(BUFFER), Chan(BUFFER)
    go(generate, n, numbers)

    wg = WaitGroup()
    for _ in range(workers):
        wg.go(square, numbers, squares)
    go(close_when_done, wg, squares)

    go(keep_odd, squares, odd)

    total = count = 0
    most_buffered = 0
    for v in odd:  # the last stage runs in main
        total += v
        count += 1
        most_buffered = max(most_buffered, len(numbers), len(squares), len(odd))

    expected = sum(i * i for i in range(1, n + 1) if i % 2)
    print(f"stages: generate 1..{n} -> square x{workers} -> keep odd -> sum")
    print(f"{count} odd squares, sum = {total} (expected {expected}: "
          f"{'ok' if total == expected else 'WRONG'})")
    print(f"channel buffers held at most {most_buffered} values (capacity {BUFFER} each)")
    return total


if __name__ == "__main__":
    csp_mp.run(main, *[int(a) for a in sys.argv[1:2]])
