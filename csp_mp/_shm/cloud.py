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
- it gives the functions of each pickle a fresh globals dict holding copies of the globals they
  read: goroutines of one function each saw a counter of their own, and an executor's
  initializer set a global that its tasks never saw. Module globals are per process instead, as
  in a process of ``multiprocessing``: a function sent by value is rebuilt, in the process
  that unpickles it, over its module's namespace there (``module_namespace``):

  - a module that can be imported there: that module's own dict, never written to;
  - ``__main__`` (a script, ``python -c``, a notebook's cells): the ``__main__`` module's
    dict. A P forked from P0 starts with a copy of the script's globals, a P from the fork
    server with none. The globals a function brings fill the names the process lacks, so state
    its goroutines built (a counter, a cache, what an initializer set) is kept; in a process
    other than the program's own (P0), the functions and classes it brings replace the ones
    there (the program's code: a notebook cell run again redefines a function on every P).
    P0's namespace is only filled, never overwritten.
  - a module that cannot be imported there: a fresh dict, as cloudpickle gives.
"""

from __future__ import annotations

import _thread
import importlib
import io
import socket
import sys
import types
from collections import ChainMap
from typing import Any

import cloudpickle

from csp_mp._proc import proc

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


class _Namespace:
    """Stands for a module's namespace in a pickle: unpickled, it is the namespace that module
    has in the receiving process (``module_namespace``)."""

    __slots__ = ("modname",)

    def __init__(self, modname: str) -> None:
        self.modname = modname

    def __reduce__(self) -> tuple:
        return module_namespace, (self.modname,)


def module_namespace(modname: str) -> dict[str, Any]:
    """The namespace module ``modname`` has in this process (see the module doc)."""
    if modname not in ("__main__", "__mp_main__"):
        mod = sys.modules.get(modname)
        if mod is None:
            try:
                mod = importlib.import_module(modname)
            except Exception:
                mod = None
        return mod.__dict__ if mod is not None else {"__name__": modname}
    main = sys.modules.get("__main__")
    return main.__dict__ if main is not None else {"__name__": modname}


def begin_worker() -> None:
    """This process is a worker P (called once as it starts): what its ``__main__`` holds now is
    a fork's copy of P0's, not its own (see ``merge_main``)."""
    main = sys.modules.get("__main__")
    ns = main.__dict__ if main is not None else {}
    proc.worker = True
    proc.brought = {k: id(v) for k, v in ns.items()}
    proc.forked = set(ns)


def merge_main(ns: dict[str, Any], values: dict[str, Any]) -> None:
    """Merge ``values``, the globals a function sent by value brought, into ``ns``, this
    process's ``__main__`` namespace.

    ``proc.brought`` maps a name to the id of the value a function last brought for it, or that
    the name had when this worker P began (``proc.forked``: a fork's copy of P0's value). A name
    still bound to that value was not rebound here, and a newer value brought for it replaces it
    (a channel P0 rebound, a forked copy of a channel), except a list, dict, set or bytearray a
    function brought, which this process's goroutines may have changed in place (a cache). A
    name rebound here (a counter, what an initializer set) is this process's and stays, except
    the program's code (functions and classes), which a newer definition replaces. In P0
    (``proc.worker`` False) nothing is replaced: missing names are filled.
    """
    brought, forked, worker = proc.brought, proc.forked, proc.worker
    for k, v in values.items():
        if k in ns:
            if not worker:
                continue
            cur = ns[k]
            if not isinstance(v, (types.FunctionType, type)):  # code: the newest wins
                if cur is v or id(cur) != brought.get(k):
                    continue  # the same, or rebound here: this process's own
                if isinstance(cur, _CONTAINERS) and k not in forked:
                    continue  # brought before and maybe filled here since
        ns[k] = v
        brought[k] = id(v)
        forked.discard(k)


_CONTAINERS = (list, dict, set, bytearray)


def _shared(ns: dict[str, Any]) -> bool:
    """Whether the globals a function brings are merged into ``ns``: ``__main__``'s namespace."""
    main = sys.modules.get("__main__")
    return main is not None and ns is main.__dict__


def _make_function(code: types.CodeType, globals_: dict[str, Any], name: str, argdefs: Any,
                   closure: Any) -> types.FunctionType:
    """A function sent by value, over ``globals_`` (its module's namespace here)."""
    globals_.setdefault("__builtins__", __builtins__)
    return types.FunctionType(code, globals_, name, argdefs, closure)


def _function_setstate(fn: types.FunctionType, state: tuple) -> None:
    """The rest of a function sent by value: its globals merged into its module's namespace
    (filled; in a process other than P0 its code replaced), its closure, its attributes."""
    state, slotstate = state
    fn.__dict__.update(state)
    brought = slotstate.pop("__globals__")
    closure = slotstate.pop("__closure__")
    slotstate.pop("_cloudpickle_submodules", None)
    ns = fn.__globals__
    if _shared(ns):
        merge_main(ns, brought)
    elif not ns.get("__spec__") and "__file__" not in ns:  # a fresh dict (module not found)
        ns.update(brought)
    if closure is not None:
        for i, cell in enumerate(closure):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            fn.__closure__[i].cell_contents = value  # type: ignore[index]
    for k, v in slotstate.items():
        setattr(fn, k, v)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap(_table, cloudpickle.Pickler.dispatch_table)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple:
        """A function sent by value, rebuilt over its module's namespace where it arrives."""
        code, _base, argdefs, _closure_names, closure = self._function_getnewargs(func)
        ns = self.globals_ref.get(("ns", id(func.__globals__)))
        if ns is None:  # one marker per globals dict: memoized, so they stay one there too
            name = func.__globals__.get("__name__") or func.__module__ or "__main__"
            ns = self.globals_ref[("ns", id(func.__globals__))] = _Namespace(str(name))
        state = cloudpickle.cloudpickle._function_getstate(func)
        return (_make_function, (code, ns, None, argdefs, closure), state, None, None,
                _function_setstate)


def dumps(obj: Any, buffer_callback: Any = None) -> bytes:
    """``obj`` pickled (protocol 5) by cloudpickle; :class:`Uncrossable` for values that cannot
    cross a process."""
    with io.BytesIO() as f:
        _Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


class _Probe(_Pickler):
    def __init__(self, f: Any, opaque: tuple[type, ...]) -> None:
        super().__init__(f, protocol=5)
        self.opaque = opaque

    def persistent_id(self, obj: Any) -> Any:
        return 1 if isinstance(obj, self.opaque) else None


def check(obj: Any, opaque: tuple[type, ...]) -> None:
    """Raise what ``dumps(obj)`` would, without pickling objects of the ``opaque`` types (whose
    pickling has effects: a channel's names): a diagnosis, the bytes are thrown away."""
    with io.BytesIO() as f:
        _Probe(f, opaque).dump(obj)


del _t
