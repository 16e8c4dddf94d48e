"""Cancellation, deadlines and request-scoped values: mirrors Go package ``context``.

A cancellable context owns a ``done`` channel (closed on cancel) and an error code in an atomic,
so both are visible in every P once the context travels. Children created in the parent's own
process are cancelled by the parent directly; a child whose parent came from another process is
cancelled by a watcher goroutine (Go's ``propagateCancel`` fallback).

Invariants:
- ``_code`` goes 0 -> CANCELED or DEADLINE exactly once; ``done`` is closed right after, by the
  goroutine whose compare-and-swap won.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._atomic import Int64
from ._chan import Chan, nilchan, select
from ._hub import current_hub, spawn
from ._hub.timers import TimerEntry

_NONE, _CANCELED, _DEADLINE = 0, 1, 2


class Canceled(Exception):
    """The error of a context cancelled by its cancel function (or its parent's)."""

    __module__ = "csp_mp.context"

    def __init__(self, msg: str = "context canceled") -> None:
        super().__init__(msg)


class DeadlineExceeded(TimeoutError):
    """The error of a context whose deadline passed."""

    __module__ = "csp_mp.context"

    def __init__(self, msg: str = "context deadline exceeded") -> None:
        super().__init__(msg)


def _err_for(code: int) -> BaseException | None:
    if code == _CANCELED:
        return Canceled()
    if code == _DEADLINE:
        return DeadlineExceeded()
    return None


class Context:
    """A context: ``done()``, ``err()``, ``value(key)``, ``deadline()``."""

    __module__ = "csp_mp.context"
    __slots__ = ()

    def done(self) -> Chan:
        """A channel closed when the context is cancelled (``nilchan`` if it never is)."""
        return nilchan

    def err(self) -> BaseException | None:
        """None, or a ``Canceled`` / ``DeadlineExceeded`` instance (returned, not raised)."""
        return None

    def value(self, key: Any) -> Any:
        """The value stored under ``key`` by ``with_value`` in this context's chain, or None."""
        return None

    def deadline(self) -> tuple[float | None, bool]:
        """``(t, True)`` with ``t`` on the ``time.monotonic()`` clock, or ``(None, False)``."""
        return None, False


class _Empty(Context):
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"context.{self._name}()"

    def __reduce__(self):
        return (background if self._name == "background" else todo, ())


_BACKGROUND = _Empty("background")
_TODO = _Empty("todo")


def background() -> Context:
    """The root context: never cancelled, no values, no deadline."""
    return _BACKGROUND


def todo() -> Context:
    """A placeholder root context, for code not yet given one."""
    return _TODO


class _CancelCtx(Context):
    __slots__ = ("_parent", "_done", "_code", "_children", "_deadline", "_timer", "__weakref__")

    def __init__(self, parent: Context, deadline: float | None = None) -> None:
        self._parent = parent
        self._done: Chan = Chan(0)
        self._code = Int64(_NONE)
        self._children: list[_CancelCtx] | None = []
        self._deadline = deadline
        self._timer: TimerEntry | None = None

    def done(self) -> Chan:
        return self._done

    def err(self) -> BaseException | None:
        return _err_for(self._code.load())

    def value(self, key: Any) -> Any:
        return self._parent.value(key)

    def deadline(self) -> tuple[float | None, bool]:
        if self._deadline is not None:
            return self._deadline, True
        return self._parent.deadline()

    def _cancel(self, code: int) -> None:
        if not self._code.compare_and_swap(_NONE, code):
            return
        self._done.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        children, self._children = self._children, None
        for child in children or ():
            child._cancel(code)

    def _adopt(self, child: _CancelCtx) -> bool:
        """Register a same-process child; False when already cancelled (cancel it now)."""
        code = self._code.load()
        if code != _NONE or self._children is None:
            child._cancel(code or _CANCELED)
            return True
        self._children.append(child)
        return True

    def __getstate__(self):
        # Travelling: a cancel may now come from another P, which only closes the shared done()
        # channel. Children adopted here so far are handed to watcher goroutines that see that
        # close, and later children are watched the same way.
        children, self._children = self._children, None
        for child in children or ():
            spawn(_watch, (self, child), local=True)
        return (self._parent, self._done, self._code, self._deadline)

    def __setstate__(self, state) -> None:
        self._parent, self._done, self._code, self._deadline = state
        self._children = None  # children of a travelled context are watched, not adopted
        self._timer = None

    def __repr__(self) -> str:
        return f"<csp_mp.context {type(self).__name__} err={self.err()!r}>"


def _nearest_cancel(ctx: Context) -> _CancelCtx | None:
    while isinstance(ctx, _ValueCtx):
        ctx = ctx._parent
    return ctx if isinstance(ctx, _CancelCtx) else None


def _watch(parent: Context, child: _CancelCtx) -> None:
    i, _ = select(parent.done().recv, child.done().recv)
    if i == 0:
        err = parent.err()
        child._cancel(_DEADLINE if isinstance(err, DeadlineExceeded) else _CANCELED)


def _propagate(parent: Context, child: _CancelCtx) -> None:
    if parent.done() is nilchan:
        return
    err = parent.err()
    if err is not None:
        child._cancel(_DEADLINE if isinstance(err, DeadlineExceeded) else _CANCELED)
        return
    owner = _nearest_cancel(parent)
    if owner is not None and owner._children is not None:
        owner._adopt(child)
        return
    spawn(_watch, (parent, child), local=True)


def _check_parent(parent: Any) -> None:
    if not isinstance(parent, Context):
        raise TypeError(f"parent must be a csp_mp context, not {type(parent).__name__}")


def with_cancel(parent: Context) -> tuple[Context, Callable[[], None]]:
    """A child of ``parent`` with its own cancel function (idempotent)."""
    _check_parent(parent)
    ctx = _CancelCtx(parent)
    _propagate(parent, ctx)
    return ctx, lambda: ctx._cancel(_CANCELED)


def with_deadline(parent: Context, t: float) -> tuple[Context, Callable[[], None]]:
    """A child cancelled with ``DeadlineExceeded`` at monotonic time ``t`` (or by cancel)."""
    _check_parent(parent)
    pt, ok = parent.deadline()
    if ok and pt is not None and pt <= t:
        return with_cancel(parent)
    ctx = _CancelCtx(parent, deadline=t)
    _propagate(parent, ctx)
    delay = t - current_hub().timers.clock()
    if delay <= 0:
        ctx._cancel(_DEADLINE)
    elif ctx._code.load() == _NONE:
        ctx._timer = current_hub().timers.add(delay, ctx._cancel, _DEADLINE)
    return ctx, lambda: ctx._cancel(_CANCELED)


def with_timeout(parent: Context, d: float) -> tuple[Context, Callable[[], None]]:
    """``with_deadline(parent, time.monotonic() + d)``."""
    return with_deadline(parent, current_hub().timers.clock() + d)


class _ValueCtx(Context):
    __slots__ = ("_parent", "_key", "_val")

    def __init__(self, parent: Context, key: Any, val: Any) -> None:
        self._parent = parent
        self._key = key
        self._val = val

    def done(self) -> Chan:
        return self._parent.done()

    def err(self) -> BaseException | None:
        return self._parent.err()

    def value(self, key: Any) -> Any:
        if key == self._key:
            return self._val
        return self._parent.value(key)

    def deadline(self) -> tuple[float | None, bool]:
        return self._parent.deadline()

    def __reduce__(self):
        return (_ValueCtx, (self._parent, self._key, self._val))


def with_value(parent: Context, key: Any, value: Any) -> Context:
    """A child carrying ``key -> value``; its ``done()`` is its parent's."""
    _check_parent(parent)
    if key is None:
        raise TypeError("context.with_value: nil key")
    return _ValueCtx(parent, key, value)

# Public home of the functions (pickling finds them by module): ``csp_mp.context``.
for _f in (background, todo, with_cancel, with_deadline, with_timeout, with_value):
    _f.__module__ = "csp_mp.context"
del _f
