"""Groups of goroutines working on subtasks of one task: mirrors ``golang.org/x/sync/errgroup``.

The first error is kept in a one-slot channel, so the first one wins in every P. A function
"returns an error" by raising it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._chan import Chan, default, select
from ._context import Context, with_cancel
from ._hub import spawn
from ._hub.interrupt import register_body_call
from ._sync import WaitGroup


def _body(group: Group, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        group._fail(exc)
    finally:
        group._release()


register_body_call(_body)


class Group:
    """Runs goroutines, waits for them, and reports the first error."""

    __slots__ = ("_wg", "_err", "_sem", "_cancel", "_first")
    __module__ = "csp_mp.errgroup"

    def __init__(self) -> None:
        self._wg = WaitGroup()
        self._err: Chan = Chan(1)
        self._sem: Chan | None = None
        self._cancel: Callable[[], None] | None = None
        self._first: BaseException | None = None

    def _fail(self, exc: BaseException) -> None:
        i, _ = select((self._err.send, exc), default)
        if i == 0 and self._cancel is not None:
            self._cancel()

    def _release(self) -> None:
        if self._sem is not None:
            self._sem.recv()
        self._wg.done()

    def _start(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self._wg.add(1)
        try:
            spawn(_body, (self, fn, args, kwargs), local=False)
        except BaseException:
            self._release()
            raise

    def go(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` in a new goroutine; blocks while the limit is reached."""
        if not callable(fn):
            raise TypeError(f"Group.go needs a callable, got {type(fn).__name__}")
        if self._sem is not None:
            self._sem.send(None)
        self._start(fn, args, kwargs)

    def try_go(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Like ``go`` but returns False instead of waiting when the limit is reached."""
        if not callable(fn):
            raise TypeError(f"Group.try_go needs a callable, got {type(fn).__name__}")
        if self._sem is not None:
            i, _ = select((self._sem.send, None), default)
            if i == 1:
                return False
        self._start(fn, args, kwargs)
        return True

    def set_limit(self, n: int) -> None:
        """At most ``n`` goroutines active at once; a negative ``n`` removes the limit."""
        if self._sem is not None and len(self._sem):
            raise RuntimeError(
                f"errgroup: modify limit while {len(self._sem)} goroutines in the group are "
                "still active")
        self._sem = None if n < 0 else Chan(n)

    def wait(self) -> None:
        """Wait for every goroutine; raise the first error any raised."""
        self._wg.wait()
        if self._cancel is not None:
            self._cancel()
        if self._first is None:
            i, v = select(self._err.recv, default)
            if i == 0:
                self._first = v
        if self._first is not None:
            raise self._first


def with_context(ctx: Context) -> tuple[Group, Context]:
    """A Group and a derived context cancelled at the first error or when ``wait`` returns."""
    child, cancel = with_cancel(ctx)
    g = Group()
    g._cancel = cancel
    return g, child

with_context.__module__ = "csp_mp.errgroup"  # its public home (pickling finds it there)
