"""A worker P's panic as bytes for P0, and back: the exception with its frames, and the goroutine.

``panic_report`` runs in the P where the goroutine panicked (its P and pid travel with it),
``panic_from_report`` in P0; the exception arrives with a traceback showing the frames it had
where it was raised (see ``csp_mp._tb``), or, when it cannot be pickled, as a
:class:`RemoteError` carrying the same frames.
"""

from __future__ import annotations

import pickle
import traceback

from .. import _tb
from .._errors import Panic, RemoteError

__all__ = ["panic_from_report", "panic_report"]


def panic_report(err: BaseException) -> tuple[bytes, str, str]:
    """``(blob, text, traceback text)`` describing a goroutine's panic ``err``."""
    cause = err.__cause__ if isinstance(err, Panic) and err.__cause__ is not None else err
    tb = getattr(err, "traceback_text", "") or "".join(traceback.format_exception(cause))
    who = (getattr(err, "goroutine", ""), getattr(err, "p", -1), getattr(err, "pid", 0))
    _tb.mark(cause)
    try:
        blob = pickle.dumps((cause, who), protocol=5)
        pickle.loads(blob)
    except Exception:
        stand_in = RemoteError(type(cause).__name__, str(cause), tb)
        frames = getattr(cause, "_csp_mp_frames", None)
        if frames:
            stand_in._csp_mp_frames = frames  # type: ignore[attr-defined]
        blob = pickle.dumps((stand_in, who), protocol=5)
    return blob, str(err), tb


def panic_from_report(blob: bytes, text: str, tb: str) -> BaseException:
    """The ``Panic`` (or the ``KeyboardInterrupt``/``SystemExit``) a report stands for."""
    try:
        cause, (goroutine, p, pid) = pickle.loads(blob)
    except Exception as exc:
        cause, goroutine, p, pid = RemoteError("UnpicklingError", str(exc), tb), "", -1, 0
    _tb.restore(cause)
    if isinstance(cause, (KeyboardInterrupt, SystemExit)):
        return cause
    err = Panic(text, goroutine=goroutine or text, traceback_text=tb, p=p, pid=pid)
    err.__cause__ = cause
    return err
