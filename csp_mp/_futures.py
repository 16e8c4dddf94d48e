"""``Executor`` (a ``concurrent.futures.Executor`` over goroutines) and ``as_chan``.

Layer: above ``_run``, beside ``_runtime``.

A task is a goroutine started with ``go()``: it may run on any P. Where it runs in the process
that submitted it (the owner), it sets its future directly; elsewhere it sends ``(key, ok,
payload)`` on the executor's results channel to a collector goroutine in the owner.
``max_workers`` bounds the tasks dispatched and not yet finished; the rest wait in ``queued``,
where ``cancel()`` still works.

A task dispatched while none of the executor's others is unfinished is *pinned* to the owner's P
instead (as are the owner's share of a ``csp_mp.map``): the future's ``_here`` holds the call
until it starts, a local goroutine (the binding's ``slot`` runner, or one of its own) will run it,
and a goroutine of that P waiting on the future without a timeout takes it and runs it itself.
Whoever clears ``_here`` first runs the task; the other does nothing.

Waiting on a future parks the calling goroutine when there is one (the implicit main goroutine
included); waits that csp_mp does not see (``concurrent.futures.wait``, asyncio) leave the hub to
``_hub/drive.py``, which runs P0's goroutines while the main thread waits.

Invariants:
- ``_live`` maps the key of every dispatched, unfinished task of this process to its executor
  and future; a task's outcome is set once, by ``_finish``, on the owner's hub thread.
- ``inflight`` counts dispatched, unfinished tasks; ``inflight <= max_workers``.
- ``_live`` entries say whether the task is pinned; a binding's ``here`` counts its pinned,
  unfinished tasks; ``slot`` is a pinned future whose ``_here`` may still be set, and while
  ``runner`` is true a goroutine that will run ``slot`` is queued on the owner's P.
- ``lock`` protects ``queued``, ``shutdown_called`` and ``binding`` (submit may come from any
  thread); dispatching (``go()``) happens on the hub thread only.
- When the runtime a binding belongs to stops, every unfinished future of that binding gets an
  exception (``ProcessLost`` when a P died) and the next submit binds a new runtime. A P that
  died holding only tasks is replaced instead (``_mp/replace.py``): ``_tasks_lost`` fails the
  futures of the tasks it held, and the binding carries on.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures as cf
from types import FunctionType
from typing import Any

import cloudpickle
from greenlet import getcurrent

from . import _hub
from ._chan import Chan, select
from ._errors import GoroutineExit, ProcessLost, RemoteError
from ._hub import drive, waits
from ._hub.g import WAITING
from ._run import ensure_runtime, go
from ._time import after

_keys = itertools.count(1)
_live: dict[int, tuple[Executor, cf.Future, bool]] = {}  # key -> executor, future, pinned
_inited: dict[str, BaseException | None] = {}  # initializer token -> its error, in this P
_pid = [os.getpid()]  # this process's id (kept current across fork)
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))

_WAIT_REASON = waits.CHAN_RECV  # as the channel the outcome arrives on: durable
_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex, range})
_fn_travels: set[Any] = set()  # plain functions known to pickle
_FN_TRAVELS_MAX = 1024


# ----------------------------------------------------------------- the task, on any P

def _task(key: int, owner: int, results: Chan, init: tuple | None, fn: Callable[..., Any],
          args: tuple, kwargs: dict) -> None:
    """Body of a task goroutine: run ``fn`` and deliver its outcome to the owner."""
    try:
        if init is not None:
            _initialize(init)
        value, ok = fn(*args, **kwargs), True
    except GoroutineExit:
        raise
    except BaseException as exc:
        value, ok = exc, False
    if _pid[0] == owner and key in _live:
        _finish(key, ok, value)
        return
    if not ok:
        value = (value, "".join(traceback.format_exception(value)))
    try:
        results.send((key, ok, value))
    except TypeError as exc:  # the value (or the exception) cannot cross processes
        stand_in = value[0] if not ok else value
        err = RemoteError(type(stand_in).__name__, str(exc) if ok else str(stand_in),
                          value[1] if not ok else "")
        results.send((key, False, (err, err.traceback_text)))
    broker: Any = _hub.current_hub().broker
    if broker is not None and broker.p:  # (a worker P: _mp is loaded)
        sys.modules["csp_mp._mp.replace"].task_done(broker, owner, key)  # outcome on its way


def _initialize(init: tuple) -> None:
    token, initializer, initargs = init
    if token not in _inited:
        try:
            initializer(*initargs)
            _inited[token] = None
        except Exception as exc:
            _inited[token] = exc
    err = _inited[token]
    if err is not None:
        raise cf.BrokenExecutor(f"the executor's initializer failed in this P: {err!r}") from err


def _finish(key: int, ok: bool, value: Any) -> None:
    """Set the outcome of task ``key`` (owner's hub thread)."""
    entry = _live.pop(key, None)
    if entry is None:
        return
    ex, fut, here = entry
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
    ex._task_done(key, here)
    hub = _hub.peek()
    if hub is not None and hub.driven is not None:
        drive.release_if_done(hub)


def _tasks_lost(keys: list[int], err: BaseException) -> None:
    """The tasks ``keys`` died with a P the runtime replaced (owner's hub thread): each future
    of this process's gets a ``ProcessLost`` (unless its outcome arrived first)."""
    for key in keys:
        if key in _live:
            _finish(key, False, _fresh(err))


_task.executor_task = True  # type: ignore[attr-defined]  # what a P may die holding (replace.py)


def _watch_replacements(hub: Any) -> None:
    """Let a multi-P runtime tell this process of its tasks lost with a P it replaced."""
    if hub.nprocs > 1:
        from ._mp import replace  # loaded with the runtime

        if _tasks_lost not in replace.on_tasks_lost:
            replace.on_tasks_lost.append(_tasks_lost)


def _collect(results: Chan) -> None:
    """Owner-side goroutine: outcomes of tasks that ran on other Ps."""
    for key, ok, value in results:
        if not ok:
            exc, tb_text = value
            if not isinstance(exc, RemoteError) and exc.__cause__ is None:
                exc.__cause__ = RemoteError(type(exc).__name__, str(exc), tb_text)
            value = exc
        _finish(key, ok, value)


def _chunk_call(fn: Callable[..., Any], chunk: list) -> list:
    return [fn(*a) for a in chunk]


def _chunk_call1(fn: Callable[..., Any], chunk: Iterable) -> list:
    return [fn(a) for a in chunk]


# ----------------------------------------------------------------- futures and waiting

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


def _run_slot(b: _Binding) -> None:
    """Body of the goroutine that runs a binding's pinned task unless a waiter did."""
    b.runner = False
    fut = b.slot
    if fut is not None:
        b.slot = None
        _task_here(fut)


def _task_here(fut: Future) -> None:
    """Body of a task goroutine pinned to the owner's P: run the task unless a waiter did."""
    task = fut._here
    if task is not None:
        fut._here = None
        _task(*task[:2], *task[3:])


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


# ----------------------------------------------------------------- the executor

def _check_travels(fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """TypeError unless ``fn(*args, **kwargs)`` can be sent to another P."""
    try:
        if fn not in _fn_travels:
            cloudpickle.dumps(fn)
            if type(fn) is FunctionType:
                if len(_fn_travels) >= _FN_TRAVELS_MAX:
                    _fn_travels.clear()
                _fn_travels.add(fn)
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
            f"{os.getpid()}-{id(self)}-{next(_keys)}", initializer, tuple(initargs))
        self._lock = threading.Lock()
        self._queued: deque[tuple[int, cf.Future, Callable, tuple, dict]] = deque()
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
        for key in [k for k, e in _live.items() if e[0] is self]:
            entry = _live.pop(key, None)
            if entry is not None and not entry[1].done():
                entry[1].set_exception(_fresh(err))
        for _key, fut, _fn, _args, _kwargs in queued:
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
        key = next(_keys)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            later = bool(self._queued) or threading.get_ident() != hub.thread_id \
                or self._inflight >= b.limit
            if later:
                self._queued.append((key, fut, fn, args, kwargs))
            else:
                fut.set_running_or_notify_cancel()  # a fresh future: never cancelled yet
                _live[key] = (self, fut, False)
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
                key, fut, fn, args, kwargs = self._queued.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue
                _live[key] = (self, fut, False)
            placed = self._start(b, key, fut, fn, args, kwargs) or placed
        if placed and hub.broker is not None:
            hub.broker.flush_spawns()  # other Ps see them now, not at P0's next poll

    def _start(self, b: _Binding, key: int, fut: cf.Future, fn: Callable[..., Any], args: tuple,
               kwargs: dict, pin: bool | None = None) -> bool:
        """Start a task already in ``_live`` (hub thread); True if it went where other Ps can
        take it."""
        hub = b.hub
        # A task started while none of the executor's others is unfinished runs on the owner's
        # P, with nothing to encode or send: the submitter usually waits for it next. Tasks
        # started beside others go where any P can take them, so a fan-out spreads as before.
        # _submit_all may pin every k-th task instead (the owner's share of a map).
        here = hub.broker is None or (self._inflight == 0 if pin is None else pin)
        _live[key] = (self, fut, here)
        self._inflight += 1
        try:
            if here:
                b.here += 1
                fut._here = (key, _pid[0], hub, b.results,  # type: ignore[attr-defined]
                             self._init, fn, args, kwargs)
                if b.slot is None or b.slot._here is None:  # the slot is free
                    b.slot = fut  # type: ignore[assignment]
                    if not b.runner:
                        b.runner = True
                        hub.spawn_local(_run_slot, (b,), {})
                else:
                    hub.spawn_local(_task_here, (fut,), {})
                return False
            go(_task, key, _pid[0], b.results, self._init, fn, args, kwargs)
            return True
        except BaseException as exc:
            _live.pop(key, None)
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
            pending = [fut for _key, fut, _fn, _args, _kwargs in self._queued]
            pending += [e[1] for e in list(_live.values()) if e[0] is self]
        for _key, fut, _fn, _args, _kwargs in queued:
            fut.cancel()
        if wait:
            for fut in pending:
                _wait_done(fut)


def _fresh(err: BaseException) -> BaseException:
    """A copy of ``err`` for one more future (a traceback is per exception object)."""
    try:
        return type(err)(*err.args) if not isinstance(err, ProcessLost) else ProcessLost(
            str(err), err.p, err.goroutines)
    except Exception:
        return err


def _wait_done(fut: cf.Future) -> None:
    if _park_until_done(fut, None) is None:
        hub = _hub.peek()
        if hub is not None and hub.stopping and threading.get_ident() == hub.thread_id:
            return  # a goroutine unwinding as its run ends: the run's error is the futures'
        cf.wait([fut])


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


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


__all__ = ["Executor", "Future", "as_chan"]
