"""Tracebacks that survive a trip to another process, and diagnostics that never fail a program.

An exception pickled in one P loses its ``__traceback__``. Before it leaves, :func:`mark` stores
its frames as plain ``(filename, lineno, name)`` triples in an attribute, which travels with the
exception's ``__dict__``; on arrival :func:`restore` turns them back into a real traceback object
whose frames carry the remote file names, line numbers and function names, so
``traceback.print_exception`` and the default excepthook print them (with the source line where
the file exists on this machine) like any local frame.

Leaf module: imports nothing of ours.

Rejected: a ``RemoteTraceback`` exception chained as ``__cause__`` with the formatted text
(``concurrent.futures``): it replaces the user's own ``__cause__`` and prints the frames as a
message, not as frames; a pickler hook on every exception (``reducer_override``): it costs every
pickled object a Python call on the channel send path.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import Any

__all__ = ["debug", "install_excepthook", "mark", "restore", "synthesize", "trim", "user_site",
           "warn_quietly"]

_ATTR = "_csp_mp_frames"
_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MAX_CHAIN = 8
_stubs: dict[tuple[str, str], types.CodeType] = {}
_TEMPLATE = compile("__frame__ = _getframe()", "<csp_mp>", "exec")
try:  # no location for the stub's instructions: printers fall back to the entry's own line
    _units = len(_TEMPLATE.co_code) // 2
    _TEMPLATE = _TEMPLATE.replace(co_linetable=bytes(
        0xF8 | (min(8, _units - i) - 1) for i in range(0, _units, 8)))
    _LASTI = 0
except (AttributeError, TypeError, ValueError):  # pragma: no cover - other code layouts
    _LASTI = -1


def _ours(filename: str) -> bool:
    return filename.startswith(_PKG)


def _frames(tb: types.TracebackType | None) -> list[tuple[str, int, str]]:
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, tb.tb_lineno or 0, code.co_name))
        tb = tb.tb_next
    # the runtime's own outer frames (the goroutine trampoline) say nothing to the user
    i = 0
    while i < len(out) - 1 and _ours(out[i][0]):
        i += 1
    return out[i:]


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and len(seen) < _MAX_CHAIN and all(e is not exc for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def mark(exc: BaseException) -> None:
    """Store the frames of ``exc`` (and of its causes) so that they cross a process with it."""
    for e in _chain(exc):
        try:
            if e.__traceback__ is not None:
                setattr(e, _ATTR, _frames(e.__traceback__))
        except Exception:
            pass  # an exception type without a __dict__: it crosses without its frames


def restore(exc: BaseException) -> None:
    """Give ``exc`` (and its causes) back the traceback :func:`mark` stored, if it has none."""
    for e in _chain(exc):
        try:
            frames = e.__dict__.pop(_ATTR, None)
            if frames and e.__traceback__ is None:
                e.__traceback__ = synthesize(frames)
        except Exception:
            pass  # a diagnostic: the exception itself still arrives


def synthesize(frames: list[tuple[str, int, str]]) -> types.TracebackType | None:
    """A traceback whose entries show ``frames`` (outermost first)."""
    tb = None
    for filename, lineno, name in reversed(frames):
        tb = types.TracebackType(tb, _stub_frame(str(filename), str(name)), _LASTI, int(lineno))
    return tb


def _stub_frame(filename: str, name: str) -> types.FrameType:
    code = _stubs.get((filename, name))
    if code is None:
        code = _TEMPLATE.replace(co_filename=filename, co_name=name, co_qualname=name)
        if len(_stubs) > 256:
            _stubs.clear()
        _stubs[(filename, name)] = code
    ns: dict[str, Any] = {"_getframe": sys._getframe, "__name__": "csp_mp.remote"}
    exec(code, ns)
    return ns["__frame__"]


def debug() -> bool:
    """Whether ``CSP_MP_DEBUG=1`` asks for the runtime's own frames in tracebacks."""
    return os.environ.get("CSP_MP_DEBUG") == "1"


def _user_tb(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the entries of csp_mp's own frames (``tb`` itself if it has only those)."""
    kept = []
    t = tb
    while t is not None:
        if not _ours(t.tb_frame.f_code.co_filename):
            kept.append(t)
        t = t.tb_next
    if not kept or len(kept) == _tb_len(tb):
        return tb
    out = None
    for t in reversed(kept):
        out = types.TracebackType(out, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return out


def _tb_len(tb: types.TracebackType | None) -> int:
    n = 0
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


def trim(exc: BaseException) -> None:
    """Leave out csp_mp's own frames (the goroutine trampoline, ``run()``, ``park``, the
    Ctrl-C handler) from the tracebacks of ``exc`` and of its causes: a user reads only
    their own frames. Nothing with ``CSP_MP_DEBUG=1``."""
    if debug():
        return
    for e in _chain(exc):
        try:
            e.__traceback__ = _user_tb(e.__traceback__)
        except Exception:
            pass  # a diagnostic: the exception itself is left as it is


def install_excepthook() -> None:
    """Make the interpreter's report of an uncaught exception leave out csp_mp's own frames
    (``trim``): the frames an exception gathers as it leaves ``run()`` or a blocking call of
    the implicit runtime cannot be dropped before it reaches the user. Once per process."""
    prev = sys.excepthook
    if getattr(prev, "_csp_mp", False):
        return

    def excepthook(t: type[BaseException], v: BaseException, tb: Any) -> None:
        try:
            if v.__traceback__ is tb:
                trim(v)
                tb = v.__traceback__
        except Exception:
            pass
        prev(t, v, tb)

    excepthook._csp_mp = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook


def user_site(depth: int = 1) -> tuple[str, int, dict[str, Any] | None]:
    """``(filename, lineno, globals)`` of the innermost caller outside csp_mp."""
    try:
        f: types.FrameType | None = sys._getframe(depth)
        while f is not None and _ours(f.f_code.co_filename):
            f = f.f_back
        if f is not None:
            return f.f_code.co_filename, f.f_lineno or 0, f.f_globals
    except Exception:
        pass
    return "<unknown>", 0, None


def warn_quietly(warning: Warning, filename: str, lineno: int,
                 module_globals: dict[str, Any] | None = None) -> None:
    """Warn ``warning`` as raised at ``filename:lineno``.

    A warnings filter that turns it into an error raises it (the program asked for that); any
    other failure inside the warnings machinery is swallowed: a diagnostic never fails a program.
    """
    category = type(warning)
    module = (module_globals or {}).get("__name__") or os.path.splitext(
        os.path.basename(filename))[0] or "<unknown>"
    try:
        warnings.warn_explicit(warning, category, filename, lineno, module=module,
                               module_globals=module_globals)
        return
    except Warning as exc:
        if exc is warning:
            raise
    except Exception:
        pass  # the source lookup failed (``python -c``, a program read from stdin): try without
    try:
        warnings.warn_explicit(warning, category, filename, lineno, module=module)
    except Warning as exc:
        if exc is warning:
            raise
    except Exception:
        pass
