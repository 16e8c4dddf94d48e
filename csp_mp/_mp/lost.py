"""What a ``ProcessLost`` says about the goroutines that died with their P.

A P publishes one line per goroutine (``goroutine 7 (__main__.spin) [running]``) for the first
``SHOWN``, then one ``... and N more (fn)`` line per function for the rest (the most common
few); P0 reads those lines
back and summarises them by function: ``41 goroutines (__main__.spin), 1 goroutine
(__main__.main2)``.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from typing import Any

__all__ = ["SHOWN", "info_lines", "summary"]

SHOWN = 30  # with the tallies, well inside the P's 4 KiB description
_TALLIES = 8
_LINE = re.compile(r"^goroutine \d+ \((?P<fn>.*)\)(?: \[[^\]]*\])?$")
_NAME_FN = operator.attrgetter("name", "fn")
_MORE = re.compile(r"^\.\.\. and (?P<n>\d+) more(?: \((?P<fn>.*)\))?$")


def _fn_of(describe: str) -> str:
    m = _LINE.match(describe)
    return m.group("fn") if m else describe


def _describe_fn(name: str, fn: Any) -> str:
    """What ``G.describe()`` says of a goroutine named ``name`` running ``fn`` (id 0)."""
    from .._hub.g import PyG

    g = PyG(0, fn, (), {}, 0)
    g.name = name
    return g.describe()


def info_lines(gs: list[Any], reason_of: Any, shown: int = SHOWN) -> list[str]:
    """The published lines for goroutines ``gs`` (``reason_of(g)`` is its ``[state]`` text):
    one each for the first ``shown``, tallies by function for the rest."""
    lines = [f"{g.describe()} [{reason_of(g)}]" for g in gs[:shown]]
    # tallied by function object first (a P may hold thousands: one describe() per function,
    # not per goroutine; this runs at every steal)
    by_fn: Counter[Any] = Counter(map(_NAME_FN, gs[shown:]))
    named: Counter[str] = Counter()
    for key, n in by_fn.items():
        named[_fn_of(_describe_fn(*key))] += n
    rest = named.most_common()
    lines.extend(f"... and {n} more ({fn})" for fn, n in rest[:_TALLIES])
    others = sum(n for _, n in rest[_TALLIES:])
    if others:
        lines.append(f"... and {others} more (other functions)")
    return lines


def summary(lines: tuple[str, ...]) -> str:
    """``41 goroutines (__main__.spin), 1 goroutine (__main__.job)``, most first."""
    counts: Counter[str] = Counter()
    for line in lines:
        m = _MORE.match(line)
        if m:
            counts[m.group("fn") or "?"] += int(m.group("n"))
            continue
        m = _LINE.match(line)
        counts[m.group("fn") if m else line] += 1
    if not counts:
        return "no goroutine it reported"
    return ", ".join(f"{n} goroutine{'s' if n != 1 else ''} ({fn})"
                     for fn, n in counts.most_common())
