"""Shared arrays across Ps: their arena blocks, their names in pickles and their lifetime.

A shared array (``csp_mp.shared_array``, ``_array.py``) is a NumPy array whose memory is an
arena block: ``[references, nbytes, pad to 64 bytes | data]``, the data 64-aligned. Each process
maps the block through one *holder* (a ctypes byte array over the arena's mapping, with the
attribute ``block``: ``(arena, offset)``); every array of that process over the block, views
included, has the holder at the end of its ``base`` chain. Pickling an array writes its block's
name, the byte offset of its first element and its shape, strides and dtype; unpickling makes an
array over the same memory, so nothing is copied.

The reference word counts as an atomic's does (``_mp/promote.py``'s protocol): 1 for each
process's holder (registered weakly in ``broker.objs`` as an ``ObjRef``; its death queues the ref
on ``broker.dead``) and 1 for each name in flight (``_count_name`` when pickled, consumed by
``_rebuild_shared_array``; ``codec.discard`` decodes dropped bytes naming one, found by the
marker registered at import). At 0 the block is freed. An array captured by a function that
``go()`` ships is pinned until the run ends, as a channel is.

Invariants:
- At most one live holder per block per process (``broker.objs``).
- A holder's memory stays mapped while any array over it lives, even after its runtime ended
  (the arena's mapping goes with the last export); such an array can no longer be shared.
"""

from __future__ import annotations

import ctypes
from typing import Any

from .._shm import codec
from .._shm.atomics import LINE
from . import ctx as C
from . import promote

__all__ = ["array_class", "local_holder", "new_holder"]

_REFS, _NBYTES = 0, 1  # words of the block header
_ARRAY_CLASS: list[Any] = []  # SharedArray, made on first use (NumPy is imported then)


def array_class() -> Any:
    """``SharedArray``: the ndarray subclass of shared arrays (imports NumPy)."""
    if not _ARRAY_CLASS:
        _ARRAY_CLASS.append(_make_class())
    return _ARRAY_CLASS[0]


def _make_class() -> Any:
    import numpy as np

    class SharedArray(np.ndarray):
        """A NumPy array in shared memory (``csp_mp.shared_array``): pickled, it names its
        memory instead of copying it, so every P works on the same elements. An array made
        from it with memory of its own (``a + 1``, ``a.copy()``) travels as a plain copy."""

        def __reduce_ex__(self, protocol: Any) -> Any:
            h = find_holder(self)
            if h is None:
                return np.asarray(self).__reduce_ex__(protocol)
            return _reduce_array(self, h)

        def __reduce__(self) -> Any:
            return self.__reduce_ex__(2)

    SharedArray.__module__ = "csp_mp"
    return SharedArray


def _free_block(arena: Any, off: int) -> None:
    arena.decref(off)


def _holder(broker: Any, off: int, nbytes: int) -> Any:
    """A new holder of this process on block ``off``, registered (its count already held)."""
    arena = broker.ctx.arena
    h: Any = (ctypes.c_ubyte * max(nbytes, 1)).from_buffer(arena.map, off + LINE)
    h.block = (arena, off)
    broker.objs[off] = promote.ObjRef(h, broker.dead, off, off, _free_block, C.P_LIVE_ARRAY)
    return h


def new_holder(nbytes: int) -> Any:
    """Zeroed shared memory of ``nbytes`` in the running runtime's arena, as a holder with the
    reference of this process; MemoryError naming the size and the setting when it is full."""
    broker = promote._broker()
    arena = broker.ctx.arena
    try:
        off = arena.alloc(LINE + nbytes)
    except MemoryError as exc:
        mib = arena.size >> 20
        raise MemoryError(
            f"shared_array of {nbytes} bytes does not fit in the shared-memory arena "
            f"({mib} MiB, shared by every channel and shared object of the run): free other "
            "shared arrays first, or set CSP_MP_ARENA_MB higher") from exc
    words = arena.words
    words.store(off // 8 + _NBYTES, nbytes)
    words.store(off // 8 + _REFS, 1)
    h = _holder(broker, off, nbytes)
    ctypes.memset(h, 0, nbytes)  # a reused block holds old bytes; Go's make() zeroes
    broker.ctx.live_add(C.P_LIVE_ARRAY, 1)
    return h


def local_holder(nbytes: int) -> Any:
    """Zeroed memory of this process only, for a shared array made where no runtime of several
    Ps runs (it cannot be shared with another P later)."""
    h: Any = (ctypes.c_ubyte * max(nbytes, 1))()
    h.block = ()
    return h


def find_holder(arr: Any) -> Any:
    """The holder at the end of ``arr``'s ``base`` chain, or None (memory of its own)."""
    b = arr.base
    while b is not None:
        if isinstance(b, ctypes.Array) and hasattr(b, "block"):
            return b
        b = getattr(b, "base", None)
    return None


def _reduce_array(arr: Any, holder: Any) -> tuple:
    """The pickle reduction of a shared array over ``holder``: counts the name it writes."""
    if not holder.block:
        raise TypeError("cannot send a shared_array made outside a runtime of several Ps to "
                        "another P; make it with csp_mp.shared_array() inside run(procs=N)")
    broker = promote._broker()
    arena, off = holder.block
    if arena is not broker.ctx.arena:
        raise TypeError("cannot send a shared_array to another P: it was made by a runtime "
                        "that has ended; make it with csp_mp.shared_array() inside this run")
    start = arr.__array_interface__["data"][0] - ctypes.addressof(holder)
    promote._count_name(broker, off + _REFS * 8, "array")
    return (_rebuild_shared_array, (off, start, arr.shape, arr.strides, arr.dtype))


def _rebuild_shared_array(off: int, start: int, shape: tuple, strides: tuple,
                          dtype: Any) -> Any:
    """This process's array over the shared block ``off``, from a name it consumes."""
    broker = promote._broker()
    ref = broker.objs.get(off)
    h = ref() if ref is not None else None
    if h is not None:
        broker.ctx.arena.add_word(off + _REFS * 8, -1)  # its holder keeps one
    else:  # the name becomes the new holder's count
        h = _holder(broker, off, broker.ctx.arena.words.load(off // 8 + _NBYTES))
    cls = array_class()
    return cls.__new__(cls, shape, dtype, buffer=h, offset=start, strides=strides)


codec.set_ref_markers(_rebuild_shared_array.__name__.encode())
