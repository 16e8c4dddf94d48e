"""The body of an executor task, on any P, and how its outcome reaches the owner's future.

Layer: above ``_run``, beside ``_runtime``. Part of ``Executor`` (``executor.py``).

A task is a goroutine started with ``go()``: it may run on any P. Where it runs in the process
that submitted it (the owner), it sets its future directly; elsewhere it sends ``(key, ok,
payload)`` on the executor's results channel to a collector goroutine in the owner.

Invariants:
- ``proc.tasks`` maps the key of every dispatched, unfinished task of this process to its
  executor, future, and whether it is pinned; a task's outcome is set once, by ``_finish``, on the
  owner's hub thread.
- A P that died holding only tasks is replaced (``_mp/replace.py``): ``_tasks_lost``, on the
  runtime object's ``on_tasks_lost`` hooks, fails the futures of the tasks it held.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from concurrent import futures as cf
from typing import Any

from .. import _hub
from .._chan import Chan
from .._errors import GoroutineExit, ProcessLost, RemoteError
from .._hub import drive
from .._proc import proc


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
    if proc.pid == owner and key in proc.tasks:
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
    done = proc.task_done  # a worker P's task table (_mp/replace.py)
    if done is not None:
        done(owner, key)  # outcome on its way


def _initialize(init: tuple) -> None:
    token, initializer, initargs = init
    inited = proc.inited
    if token not in inited:
        try:
            initializer(*initargs)
            inited[token] = None
        except Exception as exc:
            inited[token] = exc
    err = inited[token]
    if err is not None:
        raise cf.BrokenExecutor(f"the executor's initializer failed in this P: {err!r}") from err


def _finish(key: int, ok: bool, value: Any) -> None:
    """Set the outcome of task ``key`` (owner's hub thread)."""
    entry = proc.tasks.pop(key, None)
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
        if key in proc.tasks:
            _finish(key, False, _fresh(err))


_task.executor_task = True  # type: ignore[attr-defined]  # what a P may die holding (replace.py)


def _watch_replacements(hub: Any) -> None:
    """Let a multi-P runtime tell this process of its tasks lost with a P it replaced."""
    if hub.nprocs > 1 and _tasks_lost not in proc.on_tasks_lost:
        proc.on_tasks_lost.append(_tasks_lost)


def _collect(results: Chan) -> None:
    """Owner-side goroutine: outcomes of tasks that ran on other Ps."""
    for key, ok, value in results:
        if not ok:
            exc, tb_text = value
            if not isinstance(exc, RemoteError) and exc.__cause__ is None:
                exc.__cause__ = RemoteError(type(exc).__name__, str(exc), tb_text)
            value = exc
        _finish(key, ok, value)


def _run_slot(b: Any) -> None:
    """Body of the goroutine that runs a binding's pinned task unless a waiter did."""
    b.runner = False
    fut = b.slot
    if fut is not None:
        b.slot = None
        _task_here(fut)


def _task_here(fut: Any) -> None:
    """Body of a task goroutine pinned to the owner's P: run the task unless a waiter did; a
    task queued behind others names its submit() call as this goroutine's created-by."""
    task = fut._here
    if task is not None:
        fut._here = None
        if fut._made is not None:
            task[2].current.made = fut._made
        _task(*task[:2], *task[3:])


def _chunk_call(fn: Callable[..., Any], chunk: list) -> list:
    return [fn(*a) for a in chunk]


def _chunk_call1(fn: Callable[..., Any], chunk: Iterable) -> list:
    return [fn(a) for a in chunk]


def _fresh(err: BaseException) -> BaseException:
    """A copy of ``err`` for one more future (a traceback is per exception object)."""
    try:
        return type(err)(*err.args) if not isinstance(err, ProcessLost) else ProcessLost(
            str(err), err.p, err.goroutines)
    except Exception:
        return err
