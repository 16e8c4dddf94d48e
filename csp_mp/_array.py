"""``csp_mp.shared_array``: Go's shared slice, a NumPy array every P works on in place.

The memory and its lifetime across Ps are the process layer's (``_mp/arrays.py``); this module
checks what the caller asked for and picks where the memory comes from. NumPy is imported here
only when an array is made: csp_mp does not depend on it.
"""

from __future__ import annotations

import operator
from typing import Any

from . import _hub

__all__ = ["shared_array"]


def shared_array(shape: int | tuple[int, ...], dtype: Any = float) -> Any:
    """A zeroed NumPy array of ``shape`` and ``dtype`` in shared memory (Go's shared slice).

    Passed to ``go()`` or sent on a channel, it is shared, never copied: goroutines on any P
    write its elements in place, and see each other's writes once a channel operation, a
    ``WaitGroup`` or a ``Mutex`` orders them. Its memory is freed once no process holds an array
    over it and no message names it, and in any case when the runtime ends. Made where no
    runtime of several Ps runs, it works in this process only.

    Raises ImportError without NumPy, TypeError or ValueError for a bad shape or dtype (object
    dtypes are refused: their elements are references, meaningless in another process), and
    MemoryError when the arena has no room for it.
    """
    try:
        import numpy as np
    except ImportError as exc:
        raise ImportError("csp_mp.shared_array needs NumPy (pip install numpy)") from exc
    dims = _shape(shape)
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"shared_array: {dtype!r} is not a NumPy dtype: {exc}") from None
    if dt.hasobject:
        raise TypeError(f"shared_array: dtype {dt} holds Python objects, which cannot be "
                        "shared between processes; use a numeric, bool or fixed-size string "
                        "dtype, or send the objects on a channel")
    if dt.itemsize == 0:
        raise TypeError(f"shared_array: dtype {dt} has no size; give strings and bytes a length "
                        "(e.g. 'U16', 'S8')")
    nbytes = dt.itemsize
    for n in dims:
        nbytes *= n
    from ._mp import arrays

    hub = _hub.peek()
    if hub is not None and hub.broker is not None:
        holder = arrays.new_holder(nbytes)
    else:
        holder = arrays.local_holder(nbytes)
    cls = arrays.array_class()
    return cls.__new__(cls, dims, dt, buffer=holder)


def _shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of sizes; TypeError or ValueError naming what is wrong."""
    dims = (shape,) if not isinstance(shape, (tuple, list)) else tuple(shape)
    out = []
    for n in dims:
        if isinstance(n, bool):
            raise TypeError(f"shared_array: shape must hold ints, not bool ({shape!r})")
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"shared_array: shape must be an int or a tuple of ints, not "
                            f"{shape!r}") from None
        if n < 0:
            raise ValueError(f"shared_array: negative dimension in shape {shape!r}")
        out.append(n)
    return tuple(out)
