"""``runtime.stack()`` text cut into one entry per goroutine."""

from __future__ import annotations

import re
from dataclasses import dataclass

# "goroutine 7 [chan receive] on P1: mod.fn", or for a group of goroutines at the same place
# "4 goroutines [chan receive] on P1: mod.fn (7, 8, 9, 10)"; in a cluster run "... on node 1 P0:"
_HEAD = re.compile(r"^(?:goroutine (\d+)|(\d+) goroutines) \[([^\]]*)\] on (?:node (\d+) )?"
                   r"P(\d+): (.*?)(?: \((\d+)[\d, .]*\))?$")


@dataclass(frozen=True)
class StackEntry:
    """One entry of a stack dump: a goroutine, or ``count`` goroutines at the same place (``gid``
    the first one's id): state or wait reason, P, function, full text, and the node in a
    cluster run (0 otherwise)."""

    gid: int
    state: str
    p: int
    function: str
    text: str
    count: int = 1
    node: int = 0

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
            text = "\n".join(lines).rstrip() + "\n"
            node = int(head[4]) if head[4] is not None else 0
            if head[1] is not None:
                entries.append(StackEntry(int(head[1]), head[3], int(head[5]), head[6], text,
                                          node=node))
            else:
                entries.append(StackEntry(int(head[7]), head[3], int(head[5]), head[6], text,
                                          int(head[2]), node))

    for line in text.splitlines():
        m = _HEAD.match(line)
        if m is not None:
            flush()
            head, lines = m, [line]
        elif head is not None:
            lines.append(line)
    flush()
    return entries
