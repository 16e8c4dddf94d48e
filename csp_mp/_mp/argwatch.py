"""SPEC's ``MigrationWarning`` for arguments: a goroutine stolen by another P that changes a plain
``list``, ``dict`` or NumPy array it received changed a copy, which its spawner never sees.

``watch`` is called where a stolen frame becomes a goroutine, only for frames whose arguments
the codec carried (a frame of scalars and channels holds nothing to watch). For each argument of
those types it takes a fingerprint (lengths, the identity of every element, a checksum of an
array's bytes, through nested lists and dicts) and wraps the function so that, when the goroutine
returns, the fingerprints are taken again; a change is reported once per function and argument,
to P0, as the broker reports the capture warning. Goroutines without such arguments run their
own function, untouched.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["watch"]

_msg = msgspec.msgpack.Encoder().encode
_DEPTH = 4  # nested lists and dicts looked into


def _is_ndarray(t: type) -> bool:
    return t.__name__ == "ndarray" and t.__module__ == "numpy"  # exactly: not a shared_array


def _watched(v: Any) -> bool:
    t = type(v)
    return t is list or t is dict or _is_ndarray(t)


def _fingerprint(v: Any, depth: int = 0) -> Any:
    """What changes when ``v`` is changed in place (a replaced element changes its identity)."""
    t = type(v)
    if t is list:
        if depth >= _DEPTH:
            return (len(v), tuple(map(id, v)))
        return (len(v), tuple(_fingerprint(x, depth + 1) if _watched(x) else id(x) for x in v))
    if t is dict:
        if depth >= _DEPTH:
            return (len(v), tuple(map(id, v.items())))
        return (len(v), tuple((id(k), _fingerprint(x, depth + 1) if _watched(x) else id(x))
                              for k, x in v.items()))
    if _is_ndarray(t):
        if v.dtype.hasobject:
            return (v.shape, tuple(map(id, v.ravel().tolist())))
        m = memoryview(v if v.flags.c_contiguous else v.copy()).cast("B")
        return (v.shape, zlib.crc32(m))
    return id(v)


def watch(p: int, warn: Callable[[str, bytes], None], fn: Callable[..., Any], args: tuple,
          kwargs: dict) -> Callable[..., Any]:
    """``fn``, or a stand-in that runs it on P ``p`` and then warns (``warn(text, key)``, once
    per key) if it changed a watched argument."""
    picked = [(i, a) for i, a in enumerate(args) if _watched(a)]
    picked += [(k, a) for k, a in kwargs.items() if _watched(a)]
    if not picked:
        return fn
    try:
        before = [_fingerprint(a) for _, a in picked]
    except Exception:
        return fn  # a diagnostic never stops a goroutine

    def run(*a: Any, **kw: Any) -> Any:
        result = fn(*a, **kw)
        try:
            changed = [key for (key, v), fp in zip(picked, before, strict=True)
                       if _fingerprint(v) != fp]
            if changed:
                _report(p, warn, fn, changed, picked)
        except Exception:  # noqa: S110 - a diagnostic never fails the goroutine
            pass
        return result

    try:
        functools.update_wrapper(run, fn)
    except Exception:  # noqa: S110 - a callable object without the usual attributes
        pass
    return run


def _param(fn: Any, key: int | str) -> str:
    """The name of argument ``key`` (a position or a keyword) of ``fn``."""
    if isinstance(key, str):
        return key
    code = getattr(fn, "__code__", None)
    if code is not None and key < code.co_argcount:
        return str(code.co_varnames[key])
    return f"#{key}"


def _report(p: int, warn: Callable[[str, bytes], None], fn: Any, changed: list,
            picked: list) -> None:
    kinds = dict(picked)
    for key in changed:
        name = _param(fn, key)
        what = getattr(fn, "__qualname__", repr(fn))
        v = kinds[key]
        kind = "a NumPy array" if _is_ndarray(type(v)) else f"a {type(v).__name__}"
        message = (f"goroutine function {what!r} changed its argument {name!r} ({kind}) on P"
                   f"{p}, another P than the one that started it: it received a copy, "
                   "and its spawner does not see the change. Use csp_mp.shared_array() for an "
                   "array every P writes in place, or send the results on a channel.")
        code = getattr(fn, "__code__", None)
        filename = code.co_filename if code is not None else "<unknown>"
        lineno = code.co_firstlineno if code is not None else 0
        warn(f"{filename}\0{lineno}\0{message}", f"{what}\0{name}".encode())
