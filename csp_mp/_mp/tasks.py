"""Goroutines as bytes: what ``go()`` puts in the stealable run queue, and how a thief runs it.

A task frame is ``(seq, owner, digest, fn_bytes, args_bytes, warn)``. The callable pickles by
reference where plain pickle can (an importable module-level function), by value through
cloudpickle otherwise (``__main__`` functions, closures, lambdas); its bytes are cached per
function object and thieves cache the unpickled function by digest. ``warn`` names the mutable
plain state the function captures (SPEC's MigrationWarning), or is empty.

Invariants:
- Serialization happens before anything is queued: an unpicklable callable or argument raises
  ``TypeError`` in ``go()`` and leaves no trace.
"""

from __future__ import annotations

import hashlib
import pickle
import types
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle
import msgspec

from .._shm import decode, encode

_frame = msgspec.msgpack.Encoder().encode
_unframe = msgspec.msgpack.Decoder(tuple).decode

_MUTABLE = (list, dict, set, bytearray)
_fn_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_fn_cache_strong: dict[int, tuple] = {}  # for callables that cannot be weakly referenced
_by_digest: dict[bytes, Callable[..., Any]] = {}


def _is_plain_mutable(v: Any) -> bool:
    if isinstance(v, _MUTABLE):
        return True
    t = type(v)
    if isinstance(v, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                      types.MethodType, staticmethod, classmethod, property)):
        return False
    mod = getattr(t, "__module__", "") or ""
    if mod == "builtins" or mod.startswith("csp_mp"):
        return False
    return hasattr(v, "__dict__") or hasattr(t, "__slots__")


def captured_mutable(fn: Any) -> list[str]:
    """Names of the mutable plain values ``fn`` closes over or holds as defaults."""
    names: list[str] = []
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is not None:
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            if _is_plain_mutable(v):
                names.append(name)
    defaults = getattr(fn, "__defaults__", None) or ()
    if code is not None and defaults:
        argnames = code.co_varnames[: code.co_argcount]
        for name, v in zip(argnames[len(argnames) - len(defaults):], defaults, strict=False):
            if _is_plain_mutable(v):
                names.append(name)
    for name, v in (getattr(fn, "__kwdefaults__", None) or {}).items():
        if _is_plain_mutable(v):
            names.append(name)
    return names


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{type(obj).__name__} {name!r}" if name else repr(type(obj).__name__)


def pickle_fn(fn: Callable[..., Any]) -> tuple[bytes, bytes, str]:
    """``(digest, bytes, warn)`` of a callable, cached per function object."""
    try:
        hit = _fn_cache.get(fn)
    except TypeError:
        hit = _fn_cache_strong.get(id(fn))
    if hit is not None:
        return hit
    data = None
    if getattr(fn, "__module__", None) != "__main__" and "<locals>" not in getattr(
            fn, "__qualname__", "<locals>") and getattr(fn, "__name__", "") != "<lambda>":
        try:
            data = pickle.dumps(fn, protocol=5)
        except Exception:
            data = None
    if data is None:
        try:
            data = cloudpickle.dumps(fn, protocol=5)
        except Exception as exc:
            raise TypeError(f"go(): cannot pickle {_describe(fn)} to run it on another P: "
                            f"{type(exc).__name__}: {exc}") from exc
    names = captured_mutable(fn)
    warn = ""
    if names:
        fname = getattr(fn, "__qualname__", repr(fn))
        warn = (f"goroutine function {fname!r} captures mutable state ({', '.join(names)}) "
                "and runs on another P, where it works on a copy: writes are not seen by its "
                "spawner. Use go_local() to keep it on the spawner's P, or pass results over a "
                "channel.")
    entry = (hashlib.blake2b(data, digest_size=16).digest(), data, warn)
    try:
        _fn_cache[fn] = entry
    except TypeError:
        _fn_cache_strong[id(fn)] = entry
    return entry


def pack(seq: int, owner: int, fn: Callable[..., Any], args: tuple, kwargs: dict,
         arena: Any) -> bytes:
    """The task frame of ``go(fn, *args, **kwargs)``; TypeError if it cannot travel."""
    digest, fn_bytes, warn = pickle_fn(fn)
    try:
        args_bytes = encode((args, kwargs), arena) if (args or kwargs) else b""
    except TypeError as exc:
        raise TypeError(f"go(): an argument of {getattr(fn, '__qualname__', fn)!r} cannot be "
                        f"sent to another P: {exc}") from exc
    return _frame((seq, owner, digest, fn_bytes, args_bytes, warn))


def own_frame(frame: bytes, arena: Any) -> int:
    """The seq of a frame its owner takes back (it runs the live G): frees its out-of-band
    argument blocks, which nobody will decode."""
    t = _unframe(frame)
    args_bytes = t[4]
    if args_bytes[:2] == b"\xc1\x02":
        from .._shm import discard

        discard(args_bytes, arena)
    return t[0]


def unpack(frame: bytes, arena: Any) -> tuple[Callable[..., Any], tuple, dict, str, bytes]:
    """``(fn, args, kwargs, warn, digest)`` of a stolen task."""
    _seq, _owner, digest, fn_bytes, args_bytes, warn = _unframe(frame)
    fn = _by_digest.get(digest)
    if fn is None:
        fn = pickle.loads(fn_bytes)
        _by_digest[digest] = fn
    if args_bytes:
        args, kwargs = decode(args_bytes, arena)
    else:
        args, kwargs = (), {}
    return fn, tuple(args), dict(kwargs), warn, digest
