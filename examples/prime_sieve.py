"""Go's concurrent prime sieve: a daisy chain of filter goroutines.

A generator sends 2, 3, 4, ...; each prime found adds a filter goroutine that drops the multiples
of that prime. The chain talks on every number, so its goroutines are started with ``go_local``:
pinned to one P and sharing memory, hand-offs stay cheap (moving them to other processes would
only add copying).

    python examples/prime_sieve.py [N]
"""

from __future__ import annotations

import sys

import csp_mp
from csp_mp import Chan, go_local


def generate(ch: Chan) -> None:
    """Send 2, 3, 4, ... forever (stopped when main returns)."""
    i = 2
    while True:
        ch.send(i)
        i += 1


def filter_multiples(inp: Chan, out: Chan, prime: int) -> None:
    """Copy values from ``inp`` to ``out``, dropping multiples of ``prime``."""
    for i in inp:
        if i % prime:
            out.send(i)


def main(n: int = 30) -> list[int]:
    ch: Chan = Chan()
    go_local(generate, ch)
    primes = []
    for _ in range(n):
        prime = ch.recv()
        primes.append(prime)
        ch1: Chan = Chan()
        go_local(filter_multiples, ch, ch1, prime)
        ch = ch1
    print(f"the first {n} primes, from a chain of {n} filter goroutines:")
    print(" ".join(map(str, primes)))
    return primes  # returning from main stops the generator and every filter


if __name__ == "__main__":
    csp_mp.run(main, *[int(a) for a in sys.argv[1:2]])
