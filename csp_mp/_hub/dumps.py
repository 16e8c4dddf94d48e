"""Goroutine dumps: every goroutine of a P with its state and Python stack, in Go's format
(``runtime.stack()``, the deadlock error, a panic across Ps)."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any

from greenlet import getcurrent

from .g import WAITING, G

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def stack_text(gs: Iterable[G], here: FrameType | None) -> str:
    """Each of ``gs`` by id: id, state or wait reason, P, name and stack; the goroutine running
    this call shows its stack from ``here`` (the caller's frame)."""
    parts = []
    for g in sorted(gs, key=lambda x: x.id):
        state = g.reason if g.state == WAITING else g.state
        head = f"goroutine {g.id} [{state}] on P{g.p}: {g.describe()}"
        frame = None
        if g.glet is not None:
            frame = here if g.glet is getcurrent() else g.glet.gr_frame
        if frame is None:
            body = "  (not started)\n"
        else:
            body = "".join(traceback.format_list(_user_frames(frame)))
        parts.append(f"{head}\n{body}")
    return "\n".join(parts)


def _user_frames(frame: Any) -> list[traceback.FrameSummary]:
    """A goroutine's stack for a dump: its own frames and, after each run of them, the csp_mp
    call they made; the runtime's frames around that (worker loop, park, switch) are left out."""
    summary = traceback.extract_stack(frame)
    out = []
    after_user = False
    for fs in summary:
        if not fs.filename.startswith(_PKG):
            out.append(fs)
            after_user = True
        elif after_user:
            out.append(fs)
            after_user = False
    return out or list(summary)


__all__ = ["stack_text"]
