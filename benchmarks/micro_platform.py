"""The platform under the runtime: what greenlets and the codec cost on this machine.

research/primitives.md measured these on the machine docs/design.md's bars come from. Printing them
here, in the same run as nothing else, tells how far this machine is from that one, primitive by
primitive, before any csp_mp code runs (best of several repeats).

    .venv/bin/python -m benchmarks.micro_platform
"""

from __future__ import annotations

import os
import sys
import timeit

from greenlet import getcurrent, greenlet

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_transport import message  # noqa: E402
from csp_mp._shm import codec  # noqa: E402

# research/primitives.md, section 3.2 (greenlet 3.5.6, the same CPython 3.11.7)
REFERENCE = {"switch": 155, "create": 620}


def best(fn, number: int, repeat: int = 5) -> float:
    """Seconds per call of ``fn``, the best of ``repeat`` timings of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def greenlet_switch_ns(n: int = 100_000) -> float:
    """One greenlet switch (half of a ping-pong round trip)."""
    root = getcurrent()

    def other() -> None:
        while True:
            root.switch()

    g = greenlet(other)
    g.switch()
    return best(g.switch, n) / 2 * 1e9


def greenlet_create_ns(n: int = 20_000) -> float:
    """Create, start and finish a greenlet whose body is a Python function."""

    def body() -> None:
        pass

    return best(lambda: greenlet(body).switch(), n) * 1e9


def main() -> None:
    """Print each primitive's cost here and, where there is one, on the reference machine."""
    msg = message(7)
    data = codec.encode(msg)
    rows = [
        ("greenlet switch", greenlet_switch_ns(), "switch"),
        ("greenlet create+start+finish", greenlet_create_ns(), "create"),
        ("codec encode, transport message", best(lambda: codec.encode(msg), 20_000) * 1e9, None),
        ("codec decode, transport message", best(lambda: codec.decode(data), 20_000) * 1e9, None),
    ]
    for name, ns, ref in rows:
        there = f"   (reference machine: {REFERENCE[ref]} ns)" if ref else ""
        print(f"{name:34s} {ns:8.0f} ns{there}")


if __name__ == "__main__":
    main()
