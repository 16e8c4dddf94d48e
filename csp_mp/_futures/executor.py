"""``Executor``: a ``concurrent.futures.Executor`` over goroutines.

Layer: above ``_run``, beside ``_runtime``. The task body is ``task.py``, the futures and waiting
``wait.py``.

``max_workers`` bounds the tasks dispatched and not yet finished; the rest wait in ``queued``,
where ``cancel()`` still works.

A task dispatched while none of the executor's others is unfinished is *pinned* to the owner's P
instead (as are the owner's share of a ``csp_mp.map``): the future's ``_here`` holds the call
until it starts, a local goroutine (the binding's ``slot`` runner, or one of its own) will run it,
and a goroutine of that P waiting on the future without a timeout takes it and runs it itself.

Invariants:
- ``inflight`` counts dispatched, unfinished tasks; ``inflight <= max_workers``.
- ``proc.tasks`` entries say whether the task is pinned; a binding's ``here`` counts its pinned,
  unfinished tasks; ``slot`` is a pinned future whose ``_here`` may still be set, and while
  ``runner`` is true a goroutine that will run ``slot`` is queued on the owner's P.
- ``lock`` protects ``queued``, ``shutdown_called`` and ``binding`` (submit may come from any
  thread); dispatching (``go()``) happens on the hub thread only.
- When the runtime a binding belongs to stops, every unfinished future of that binding gets an
  exception (``ProcessLost`` when a P died) and the next submit binds a new runtime. A P that
  died holding only tasks is replaced instead (``_mp/replace.py``): ``task._tasks_lost`` fails the
  futures of the tasks it held, and the binding carries on.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures as cf
from types import FunctionType
from typing import Any

import cloudpickle

from .. import _hub
from .._chan import Chan
from .._errors import ProcessLost
from .._hub.g import queued_here
from .._proc import TRAVELS_MAX, proc
from .._run import ensure_runtime, go
from .task import _chunk_call, _collect, _fresh, _run_slot, _task, _task_here, _watch_replacements
from .wait import Future, _can_park, _on_hub, _results, _wait_done

_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex, range})


def _check_travels(fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """TypeError unless ``fn(*args, **kwargs)`` can be sent to another P."""
    try:
        travels = proc.travels
        if fn not in travels:
            cloudpickle.dumps(fn)
            if type(fn) is FunctionType:
                if len(travels) >= TRAVELS_MAX:
                    travels.clear()
                travels.add(fn)
        scalars = _SCALARS
        for a in args:
            if type(a) not in scalars:
                cloudpickle.dumps((args, kwargs))
                return
        for a in kwargs.values():
            if type(a) not in scalars:
                cloudpickle.dumps((args, kwargs))
                return
    except Exception as exc:
        raise TypeError(f"submit(): the task {getattr(fn, '__qualname__', fn)!r} cannot "
                        f"be sent to another P: {exc}") from exc


class _Binding:
    """What an executor holds in one runtime: its hub and results channel; ``here``: how many
    of its unfinished tasks are pinned to the owner's P; ``slot``: a pinned task that the queued
    runner goroutine (``runner`` is true while it is queued) will run unless a waiter did; other
    pinned tasks get a goroutine each."""

    __slots__ = ("hub", "results", "here", "limit", "slot", "runner")

    def __init__(self, hub: Any, results: Chan) -> None:
        self.hub = hub
        self.results = results
        self.here = 0
        self.limit = 0  # max_workers, resolved
        self.slot: Future | None = None
        self.runner = False



class Executor(cf.Executor):
    """A ``concurrent.futures.Executor`` whose tasks are goroutines that may run on any P."""

    def __init__(self, max_workers: int | None = None, *, procs: int | None = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> None:
        if max_workers is not None and (isinstance(max_workers, bool)
                                        or not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self.procs = procs
        self._max_workers = max_workers
        self._init = None if initializer is None else (
            f"{os.getpid()}-{id(self)}-{next(proc.task_keys)}", initializer, tuple(initargs))
        self._lock = threading.Lock()
        #: tasks not started yet: (key, future, fn, args, kwargs, where submit was called,
        #: as go() records it for a goroutine queued for any P: G.created_by)
        self._queued: deque[tuple[int, cf.Future, Callable, tuple, dict, tuple]] = deque()
        self._inflight = 0
        self._shutdown = False
        self._binding: _Binding | None = None
        self._batch = 0  # the thread inside _submit_all: its submits leave flushing to its end
        self._pin_every = 0
        self._batch_i = 0
        self._unflushed = False

    # the runtime --------------------------------------------------------------------------

    def _bind(self) -> _Binding:
        b = self._binding
        hub = _hub.peek()
        if b is not None and hub is b.hub and not hub.stopping:
            return b
        hub = ensure_runtime(self.procs)
        _watch_replacements(hub)
        results: Chan = Chan(1024)
        b = _Binding(hub, results)
        b.limit = self._limit(hub)
        self._binding = b
        go_collect = hub.spawn_local
        go_collect(_collect, (results,), {})
        hub.hooks_on_stop.append(lambda: self._runtime_stopped(b))
        if not hub.hub_glet and _can_park(hub):
            hub.gosched()  # start the loop (and sysmon) now: tasks run while plain code waits
        return b

    def _runtime_stopped(self, b: _Binding) -> None:
        out = b.hub.outcome
        if out is not None and isinstance(out.error, ProcessLost):
            err: BaseException = out.error
        else:
            kind = out.kind if out is not None else "stop"
            err = RuntimeError(f"the csp_mp runtime ended ({kind}) before the task finished")
        with self._lock:
            if self._binding is b:
                self._binding = None
            queued = list(self._queued)
            self._queued.clear()
        for key in [k for k, e in proc.tasks.items() if e[0] is self]:
            entry = proc.tasks.pop(key, None)
            if entry is not None and not entry[1].done():
                entry[1].set_exception(_fresh(err))
        for _key, fut, *_call in queued:
            if not fut.done() and fut.set_running_or_notify_cancel():
                fut.set_exception(_fresh(err))
        self._inflight = 0

    def _limit(self, hub: Any) -> int:
        return self._max_workers or 2 * max(1, hub.nprocs)

    # submitting ---------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Schedule ``fn(*args, **kwargs)``; return its future. TypeError at once if the task
        cannot be sent to another P."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {type(fn).__name__}")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        b = self._bind()
        hub = b.hub
        if hub.broker is not None:
            _check_travels(fn, args, kwargs)
        fut = Future()
        key = next(proc.task_keys)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            later = bool(self._queued) or threading.get_ident() != hub.thread_id \
                or self._inflight >= b.limit
            if later:  # started later by the hub: its goroutine is made where submit was called
                made = queued_here(sys._getframe(1), hub.current
                                   if threading.get_ident() == hub.thread_id else None)
                self._queued.append((key, fut, fn, args, kwargs, made))
            else:
                fut.set_running_or_notify_cancel()  # a fresh future: never cancelled yet
                proc.tasks[key] = (self, fut, False)
        if later:
            _on_hub(hub, self._dispatch)
            return fut
        pin = None
        if self._batch == threading.get_ident() and self._pin_every:
            pin = self._batch_i % self._pin_every == 0
            self._batch_i += 1
        if self._start(b, key, fut, fn, args, kwargs, pin) and hub.broker is not None:
            if self._batch == threading.get_ident():
                self._unflushed = True
            else:
                hub.broker.flush_spawns()  # other Ps see it now, not at P0's next poll
        return fut

    def _submit_all(self, fn: Callable[..., Any], calls: Iterable[tuple],
                    pin_every: int = 0) -> list[cf.Future]:
        """``[submit(fn, *args) for args in calls]``, made visible to other Ps at once at the
        end (one wake-up rather than one per task); with ``pin_every``, the tasks started at
        once whose index is a multiple of it run on this P (its share), the others on any."""
        self._batch, self._pin_every, self._batch_i = threading.get_ident(), pin_every, 0
        try:
            return [self.submit(fn, *args) for args in calls]
        finally:
            self._batch, self._pin_every = 0, 0
            b = self._binding
            if self._unflushed and b is not None and b.hub.broker is not None \
                    and threading.get_ident() == b.hub.thread_id:
                self._unflushed = False
                b.hub.broker.flush_spawns()

    def _dispatch(self) -> None:
        """Start queued tasks while fewer than ``max_workers`` run (hub thread)."""
        b = self._binding
        if b is None or b.hub.stopping:
            return
        hub = b.hub
        limit = self._limit(hub)
        placed = False
        while self._inflight < limit:
            with self._lock:
                if not self._queued:
                    break
                key, fut, fn, args, kwargs, made = self._queued.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue
                proc.tasks[key] = (self, fut, False)
            placed = self._start(b, key, fut, fn, args, kwargs, made=made) or placed
        if placed and hub.broker is not None:
            hub.broker.flush_spawns()  # other Ps see them now, not at P0's next poll

    def _start(self, b: _Binding, key: int, fut: cf.Future, fn: Callable[..., Any], args: tuple,
               kwargs: dict, pin: bool | None = None, made: tuple | None = None) -> bool:
        """Start a task already in ``proc.tasks`` (hub thread); True if it went where other Ps can
        take it. ``made``: where a queued task was submitted (its goroutine's created-by)."""
        hub = b.hub
        # A task started while none of the executor's others is unfinished runs on the owner's
        # P, with nothing to encode or send: the submitter usually waits for it next. Tasks
        # started beside others go where any P can take them, so a fan-out spreads as before.
        # _submit_all may pin every k-th task instead (the owner's share of a map).
        here = hub.broker is None or (self._inflight == 0 if pin is None else pin)
        proc.tasks[key] = (self, fut, here)
        self._inflight += 1
        try:
            if here:
                b.here += 1
                fut._here = (key, proc.pid, hub, b.results,  # type: ignore[attr-defined]
                             self._init, fn, args, kwargs)
                fut._made = made  # type: ignore[attr-defined]
                if b.slot is None or b.slot._here is None:  # the slot is free
                    b.slot = fut  # type: ignore[assignment]
                    if not b.runner:
                        b.runner = True
                        hub.spawn_local(_run_slot, (b,), {})
                else:
                    hub.spawn_local(_task_here, (fut,), {})
                return False
            call = (key, proc.pid, b.results, self._init, fn, args, kwargs)
            if made is not None and hub.broker is not None:
                hub.broker.place(_task, call, {}, made)  # go(), created where it was submitted
            else:
                go(_task, *call)
            return True
        except BaseException as exc:
            proc.tasks.pop(key, None)
            self._inflight -= 1
            if here:
                b.here -= 1
            fut.set_exception(exc)
            return False

    def _task_done(self, key: int, here: bool) -> None:
        self._inflight -= 1
        b = self._binding
        if here and b is not None:
            b.here -= 1
        if self._queued:
            self._dispatch()

    def map(self, fn: Callable[..., Any], *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """``map(fn, *iterables)`` in parallel, results in order; ``chunksize`` items per task.
        The iterator raises ``TimeoutError`` if a result is not ready ``timeout`` seconds after
        the call."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            fs = self._submit_all(fn, zip(*iterables, strict=False))
            return _results(fs, end, chunked=False)
        rows = zip(*iterables, strict=False)
        fs = self._submit_all(_chunk_call, ((fn, chunk) for chunk in _chunks(rows, chunksize)))
        return _results(fs, end, chunked=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; ``cancel_futures`` cancels those not started; ``wait`` waits for the
        others to finish."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                queued = list(self._queued)
                self._queued.clear()
            else:
                queued = []
            pending = [fut for _key, fut, *_call in self._queued]
            pending += [e[1] for e in list(proc.tasks.values()) if e[0] is self]
        for _key, fut, *_call in queued:
            fut.cancel()
        if wait:
            for fut in pending:
                _wait_done(fut)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk
