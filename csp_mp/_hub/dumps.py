"""Goroutine dumps: every goroutine of a P with its state and Python stack, in Go's format
(``runtime.stack()``, the deadlock error, a panic across Ps)."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any

from greenlet import getcurrent

from .g import PKG, G

SHOWN_IDS = 8  # ids a grouped entry lists


def stack_text(gs: Iterable[G], here: FrameType | None) -> str:
    """Each of ``gs`` by id: id, state or wait reason, P, function, stack and Go's two
    ``created by`` lines (G.created_by); goroutines at the same place (same state, function,
    stack and creator) are one entry
    (``4 goroutines [chan receive] on P1: mod.fn (7, 8, 9, 10)``). The goroutine running this
    call shows its stack from ``here`` (the caller's frame)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for g in sorted(gs, key=lambda x: x.id):
        state = g.waiting()
        frame = None
        if g.glet is not None:
            frame = here if g.glet is getcurrent() else g.glet.gr_frame
        if frame is None:
            body = "  (not started)\n"
        else:
            body = "".join(traceback.format_list(_user_frames(frame)))
        made = g.created_by()
        if made:
            body += made + "\n"
        groups.setdefault((f"[{state}] on P{g.p}: {g.function()}", body), []).append(g.id)
    parts = []
    for (head, body), ids in groups.items():
        if len(ids) == 1:
            parts.append(f"goroutine {ids[0]} {head}\n{body}")
        else:
            shown = ", ".join(map(str, ids[:SHOWN_IDS])) + (", ..." if len(ids) > SHOWN_IDS else "")
            parts.append(f"{len(ids)} goroutines {head} ({shown})\n{body}")
    return "\n".join(parts)


def _user_frames(frame: Any) -> list[traceback.FrameSummary]:
    """A goroutine's stack for a dump: its own frames and, after each run of them, the csp_mp
    call they made; the runtime's frames around that (worker loop, park, switch) are left out."""
    summary = traceback.extract_stack(frame)
    out = []
    after_user = False
    for fs in summary:
        if not fs.filename.startswith(PKG):
            out.append(fs)
            after_user = True
        elif after_user:
            out.append(fs)
            after_user = False
    return out or list(summary)


__all__ = ["stack_text"]
