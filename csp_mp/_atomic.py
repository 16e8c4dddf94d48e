"""Atomic integers and booleans (Go's ``sync/atomic`` ``Int64`` and ``Bool``).

Inside one P every operation runs without a switch in the middle (the hub never preempts
runtime code), so a plain attribute is atomic. When a handle leaves its process it is promoted
to a word in the shared arena, by the promoter a running multi-process runtime registers
(``proc.promote_int64``).

Invariants:
- ``Int64`` values stay in [-2**63, 2**63): arithmetic wraps as Go's int64 does.
"""

from __future__ import annotations

from typing import Any

from ._proc import proc

_MIN = -(1 << 63)
_MAX = (1 << 63) - 1


def _wrap(v: int) -> int:
    if _MIN <= v <= _MAX:
        return v
    return ((v - _MIN) % (1 << 64)) + _MIN


def _check_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"atomic.Int64 needs an int, not {type(v).__name__}")
    return v


class Int64:
    """An atomically updated 64-bit signed integer, usable from every P."""

    __slots__ = ("_v", "__weakref__")
    __module__ = "csp_mp.atomic"

    def __init__(self, v: int = 0) -> None:
        self._v = _wrap(_check_int(v))

    def load(self) -> int:
        """The current value."""
        return self._v

    def store(self, v: int) -> None:
        """Set the value."""
        self._v = _wrap(_check_int(v))

    def add(self, delta: int) -> int:
        """Add ``delta``; return the new value."""
        v = self._v + _check_int(delta)
        if not _MIN <= v <= _MAX:
            v = _wrap(v)
        self._v = v
        return v

    def swap(self, v: int) -> int:
        """Set the value; return the old one."""
        old = self._v
        self._v = _wrap(_check_int(v))
        return old

    def compare_and_swap(self, old: int, new: int) -> bool:
        """Set ``new`` if the value is ``old``; True if it was set. Both are ints (TypeError
        otherwise, whatever the value: Go's CompareAndSwap takes two int64s); an ``old``
        outside the int64 range equals no value."""
        _check_int(old)
        new = _wrap(_check_int(new))
        if self._v == old:
            self._v = new
            return True
        return False

    def __repr__(self) -> str:
        return f"<csp_mp.atomic.Int64 {self.load()}>"

    def __reduce__(self):
        promote = proc.promote_int64  # set while a multi-P runtime runs (_mp/promote.py)
        if promote is None:
            raise TypeError("csp_mp atomics can only be pickled inside a multi-process runtime")
        return promote(self)


class Bool:
    """An atomically updated boolean, usable from every P."""

    __slots__ = ("_i",)
    __module__ = "csp_mp.atomic"

    def __init__(self, v: bool = False) -> None:
        self._i = Int64(1 if v else 0)

    def load(self) -> bool:
        """The current value."""
        return self._i.load() != 0

    def store(self, v: bool) -> None:
        """Set the value."""
        self._i.store(1 if v else 0)

    def swap(self, v: bool) -> bool:
        """Set the value; return the old one."""
        return self._i.swap(1 if v else 0) != 0

    def compare_and_swap(self, old: bool, new: bool) -> bool:
        """Set ``new`` if the value is ``old``; True if it was set."""
        return self._i.compare_and_swap(1 if old else 0, 1 if new else 0)

    def __repr__(self) -> str:
        return f"<csp_mp.atomic.Bool {self.load()}>"
