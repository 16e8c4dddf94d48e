"""Futures whose waits park a goroutine, not its P; ``as_chan``.

Layer: above ``_run``, beside ``_runtime``. Part of ``Executor`` (``executor.py``).

Waiting on a future parks the calling goroutine when there is one (the implicit main goroutine
included); waits that csp_mp does not see (``concurrent.futures.wait``, asyncio) leave the hub to
``_hub/drive.py``, which runs P0's goroutines while the main thread waits.

A task pinned to the owner's P waits unstarted in its future's ``_here``; a goroutine of that P
waiting on the future without a timeout takes it and runs it itself (``_help``). Whoever clears
``_here`` first runs the task; the other does nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures as cf
from typing import Any

from greenlet import getcurrent

from .. import _hub
from .._chan import Chan, select
from .._errors import ProcessLost
from .._hub import waits
from .._hub.g import WAITING
from .._run import ensure_runtime
from .._time import after
from .task import _task

_WAIT_REASON = waits.CHAN_RECV  # as the channel the outcome arrives on: durable


def _on_hub(hub: Any, fn: Callable[[], None]) -> None:
    """Run ``fn`` on ``hub``'s thread: now if this is it, else at the hub's next pass."""
    if threading.get_ident() == hub.thread_id:
        fn()
        return
    hub.post(fn)


def _can_park(hub: Any) -> bool:
    if hub is None or hub.stopping or threading.get_ident() != hub.thread_id:
        return False
    g = hub.current
    return g is not None and g.glet is not None and g.glet is getcurrent()


def _park_until_done(fut: cf.Future, timeout: float | None) -> bool | None:
    """Park the calling goroutine until ``fut`` is done: True; False on timeout; None when the
    caller is not a goroutine (it must wait as plain code)."""
    if fut.done():
        return True
    hub = _hub.peek()
    if hub is None or not _can_park(hub):
        return None
    if timeout is None:
        return _park_plain(hub, fut)
    ch: Chan = Chan(1)

    def wake(_f: cf.Future) -> None:
        def close() -> None:
            if not hub.stopping and not ch.closed:
                ch.close()

        _on_hub(hub, close)

    fut.add_done_callback(wake)
    try:
        select(ch.recv, after(max(0.0, timeout)).recv)
    except ProcessLost:
        pass  # the runtime ended; the future carries the error
    return fut.done()


def _park_plain(hub: Any, fut: cf.Future) -> bool:
    """Park the calling goroutine (on ``hub``) until ``fut`` is done, with no timeout."""
    g = hub.current
    waiting = [True]

    def ready() -> None:
        if waiting[0] and not hub.stopping and g.state == WAITING:
            waiting[0] = False
            hub.ready(g)

    def wake(_f: cf.Future) -> None:
        _on_hub(hub, ready)

    fut.add_done_callback(wake)
    try:
        while not fut.done():
            hub.park(_WAIT_REASON)
    except ProcessLost:
        pass  # the runtime ended; the future carries the error
    finally:
        waiting[0] = False
    return fut.done()


class Future(cf.Future):
    """A ``concurrent.futures.Future`` whose waits park a calling goroutine, not its P."""

    _here: tuple | None = None  # the task, while it waits unstarted on the owner's P
    _made: tuple | None = None  # where a task queued behind others was submitted (G.made)

    def result(self, timeout: float | None = None) -> Any:
        """The task's return value, waiting up to ``timeout`` seconds; raises its exception."""
        if self._here is not None and timeout is None and _help(self):
            return super().result(0)
        if _park_until_done(self, timeout) is False:
            raise cf.TimeoutError()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (None if it returned), waiting up to ``timeout`` seconds."""
        if self._here is not None and timeout is None and _help(self):
            return super().exception(0)
        if _park_until_done(self, timeout) is False:
            raise cf.TimeoutError()
        return super().exception(timeout)


def _help(fut: Future) -> bool:
    """Run ``fut``'s unstarted task in the goroutine about to wait for it without a timeout, if
    that goroutine is on the task's P; True if it ran (``fut`` is then done)."""
    hub = _hub.peek()
    task = fut._here
    if task is None or task[2] is not hub or hub.stopping or not _can_park(hub):
        return False
    fut._here = None
    _task(*task[:2], *task[3:])
    return fut.done()


Future.__module__ = "csp_mp.futures"


def as_chan(future: cf.Future) -> Chan:
    """A channel that delivers ``(result, None)`` or ``(None, exception)`` once ``future`` is
    done, then is closed. A cancelled future delivers ``(None, CancelledError())``."""
    hub = ensure_runtime()
    ch: Chan = Chan(1)

    def deliver(f: cf.Future) -> None:
        if f.cancelled():
            pair: tuple = (None, cf.CancelledError())
        elif f.exception(0) is not None:
            pair = (None, f.exception(0))
        else:
            pair = (f.result(0), None)

        def put() -> None:
            if hub.stopping:
                return
            ch.send(pair)  # buffered, never blocks
            ch.close()

        _on_hub(hub, put)

    future.add_done_callback(deliver)
    return ch


def _wait_done(fut: cf.Future) -> None:
    if _park_until_done(fut, None) is None:
        hub = _hub.peek()
        if hub is not None and hub.stopping and threading.get_ident() == hub.thread_id:
            return  # a goroutine unwinding as its run ends: the run's error is the futures'
        cf.wait([fut])


def _results(fs: list[cf.Future], end: float | None, chunked: bool) -> Iterator:
    def gen() -> Iterator:
        pending = fs[::-1]
        try:
            while pending:
                fut = pending[-1]
                if end is None:
                    value = fut.result()
                else:
                    value = fut.result(end - time.monotonic())
                pending.pop()
                if chunked:
                    yield from value
                else:
                    yield value
        finally:
            for fut in pending:
                fut.cancel()

    return gen()
