"""cloudpickle, as csp_mp uses it: code keeps its file name, and values that cannot really cross
a process are refused.

cloudpickle sends functions of ``__main__``, closures and lambdas by value. Two of its choices
do not suit a runtime whose goroutines migrate:

- it renames every code object's file ``<dynamic-code>`` (for deterministic bytes); frames of a
  migrated goroutine would then show no file in tracebacks and warnings. The real file name is
  kept (the bytes stay deterministic for one program).
- it turns an open file into a ``StringIO`` holding the file's contents; the receiver would
  silently write to a copy. Open files, sockets, locks and generators raise ``TypeError``
  naming their type instead.
"""

from __future__ import annotations

import _thread
import io
import socket
import types
from collections import ChainMap
from typing import Any

import cloudpickle

__all__ = ["Uncrossable", "dumps"]


class Uncrossable(TypeError):
    """A value that only makes sense in its own process was about to be serialized."""

    def __init__(self, message: str, offending: type, reason: str) -> None:
        super().__init__(message)
        self.offending = offending
        self.reason = reason


_HINT = {
    "file": "an open file belongs to its process",
    "socket": "a socket belongs to its process",
    "lock": "a threading lock cannot be shared between processes",
    "generator": "a generator's running state cannot be copied",
}


def _refuse(what: str) -> Any:
    def reduce(obj: Any) -> Any:
        reason = (f"{_HINT[what]}. Use go_local() to keep the goroutine on this P, or share it "
                  "through a csp_mp channel or Mutex.")
        raise Uncrossable(f"cannot send a value of type {type(obj).__qualname__} to another P: "
                          f"{reason}", type(obj), reason)
    return reduce


def _std_stream(obj: Any) -> Any:
    import sys

    for name in ("stdout", "stderr"):
        if obj is getattr(sys, name) or obj is getattr(sys, f"__{name}__"):
            return getattr, (sys, name)
    return _refuse("file")(obj)


def _code_reduce(obj: types.CodeType) -> Any:
    rebuild, args = cloudpickle.cloudpickle._code_reduce(obj)
    return _code_with_filename, (rebuild, args, obj.co_filename)


def _code_with_filename(rebuild: Any, args: tuple, filename: str) -> types.CodeType:
    """Rebuild a code object cloudpickle reduced, with its own file name back."""
    return rebuild(*args).replace(co_filename=filename)


_table: dict[type, Any] = {types.CodeType: _code_reduce, io.TextIOWrapper: _std_stream}
_t: Any
for _t in (io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom):
    _table[_t] = _refuse("file")
_table[socket.socket] = _refuse("socket")
for _t in (_thread.LockType, _thread.RLock):
    _table[_t] = _refuse("lock")
for _t in (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType):
    _table[_t] = _refuse("generator")


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap(_table, cloudpickle.Pickler.dispatch_table)


def dumps(obj: Any, buffer_callback: Any = None) -> bytes:
    """``obj`` pickled (protocol 5) by cloudpickle; :class:`Uncrossable` for values that cannot
    cross a process."""
    with io.BytesIO() as f:
        _Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


del _t
