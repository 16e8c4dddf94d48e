"""``runtime.stack()`` text cut into one entry per goroutine."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEAD = re.compile(r"^goroutine (\d+) \[([^\]]*)\] on P(\d+): goroutine \d+ \((.*)\)$")


@dataclass(frozen=True)
class StackEntry:
    """One goroutine of a stack dump: id, state or wait reason, P, function, full text."""

    gid: int
    state: str
    p: int
    function: str
    text: str

    def matches(self, name: str) -> bool:
        """True when ``name`` is the function's qualified name or a dotted tail of it."""
        f = self.function
        return f == name or f.endswith("." + name)


def parse_stack(text: str) -> list[StackEntry]:
    """The goroutine entries of a ``runtime.stack()`` text, in order."""
    entries: list[StackEntry] = []
    head: re.Match[str] | None = None
    lines: list[str] = []

    def flush() -> None:
        if head is not None:
            entries.append(StackEntry(int(head[1]), head[2], int(head[3]), head[4],
                                      "\n".join(lines).rstrip() + "\n"))

    for line in text.splitlines():
        m = _HEAD.match(line)
        if m is not None:
            flush()
            head, lines = m, [line]
        elif head is not None:
            lines.append(line)
    flush()
    return entries
