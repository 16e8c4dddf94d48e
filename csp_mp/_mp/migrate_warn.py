"""SPEC's ``MigrationWarning``: its text, made where ``go()`` was called, and its emission in P0.

The text travels in the task frame as ``filename NUL lineno NUL message``, so the warning P0
emits names the user's ``go()`` line, whichever P the goroutine migrated to.
"""

from __future__ import annotations

import dis
import types
from typing import Any

from .. import _tb
from .._atomic import Bool, Int64
from .._chan import Chan
from .._context import Context
from .._errgroup import Group
from .._errors import MigrationWarning
from .._sync import Cond, Mutex, Once, RWMutex, Sema, WaitGroup

__all__ = ["RUNTIME_TYPES", "emit", "globals_read", "globals_written", "shared_table", "text"]

_MUTABLE = (list, dict, set, bytearray)
#: the runtime's shared objects: a copy of one is a handle on the same object
RUNTIME_TYPES = (Chan, Int64, Bool, Sema, WaitGroup, Mutex, RWMutex, Once, Cond, Context, Group)


def shared_table(v: Any) -> bool:
    """Whether ``v`` is a non-empty list, tuple, set or dict (its values) of the runtime's
    shared objects only: a table of channels, say, which works the same from any P."""
    items = v.values() if isinstance(v, dict) else v
    if not isinstance(items, (list, tuple, set, frozenset, type({}.values()))) or not items:
        return False
    return all(isinstance(x, RUNTIME_TYPES) or (type(x) in (list, tuple) and shared_table(x))
               for x in items)


def _names(code: types.CodeType, depth: int = 0) -> set[str]:
    names = set(code.co_names)
    if depth < 4:
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                names |= _names(c, depth + 1)
    return names


def globals_read(fn: Any) -> list[str]:
    """Module globals of a ``__main__`` function (which travels by value, with a copy of the
    globals it reads) that hold a list, dict, set or bytearray, other than tables of the
    runtime's shared objects (none, should looking fail)."""
    try:
        return _globals_read(fn)
    except Exception:
        return []


def _globals_read(fn: Any) -> list[str]:
    if getattr(fn, "__module__", None) != "__main__":
        return []
    code = getattr(fn, "__code__", None)
    g = getattr(fn, "__globals__", None)
    if code is None or g is None:
        return []
    return sorted(n for n in _names(code)
                  if isinstance(g.get(n), _MUTABLE) and not shared_table(g[n]))


def globals_written(fn: Any) -> list[str]:
    """Module globals a function (or a function nested in it) assigns or deletes with
    ``global`` (none, should looking fail)."""
    try:
        code = getattr(fn, "__code__", None)
        return sorted(_written(code)) if code is not None else []
    except Exception:
        return []


def _written(code: types.CodeType, depth: int = 0) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code)
             if i.opname in ("STORE_GLOBAL", "DELETE_GLOBAL")}
    if depth < 4:
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                names |= _written(c, depth + 1)
    return names


def text(fn: Any, captured: list[str], read: list[str], written: list[str]) -> str:
    """The warning for ``fn`` (empty if nothing it uses differs across Ps), located at the
    caller's ``go()`` line; empty, never an exception, should describing it fail."""
    if not captured and not read and not written:
        return ""
    try:
        return _text(fn, captured, read, written)
    except Exception:
        return ""  # a diagnostic never fails the go() that would have carried it


def _text(fn: Any, captured: list[str], read: list[str], written: list[str]) -> str:
    fname = getattr(fn, "__qualname__", repr(fn))
    parts = []
    why = []
    if captured:
        parts.append(f"captures mutable state ({', '.join(captured)})")
        why.append("what it captures is a copy taken at its first go(): its writes are not "
                   "seen by its spawner, nor the spawner's later changes by it")
    if read or written:
        if read:
            parts.append(f"reads mutable module globals ({', '.join(read)})")
        if written:
            parts.append(f"writes module globals ({', '.join(written)})")
        why.append("module globals are per process, like a multiprocessing worker's, never "
                   "shared: it sees and changes that P's own")
    message = (f"goroutine function {fname!r} {' and '.join(parts)} and runs on another P, "
               f"where {'; '.join(why)}. Use go_local() to keep it on the spawner's P, or pass "
               "values over a channel (or share them: atomic.Int64, shared_array).")
    filename, lineno, _ = _tb.user_site(2)
    return f"{filename}\0{lineno}\0{message}"


def emit(warn: str) -> None:
    """Emit the warning ``text`` made (in P0, or wherever the caller runs)."""
    try:
        filename, lineno, message = warn.split("\0", 2)
        line = int(lineno)
    except ValueError:
        filename, line, message = "<unknown>", 0, warn
    _tb.warn_quietly(MigrationWarning(message), filename, line)
