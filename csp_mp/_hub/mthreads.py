"""M threads: a pool of OS threads of one P that run blocking calls.

A goroutine hands ``(fn, args)`` to the pool and parks; the thread runs the call and reports the
outcome through ``on_done``, which must be thread-safe (the hub's: it posts the completion,
``Hub.post``).
Threads never touch greenlets.

Invariants:
- ``idle`` counts threads blocked on the job queue; a job is only ever taken by one thread.
- The pool grows when no thread is idle, up to ``max_threads``; beyond that jobs wait in the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class MThreadPool:
    """Threads for blocking calls, grown on demand. Owner P only (``submit``)."""

    def __init__(self, max_threads: int = 64, name: str = "csp_mp-M") -> None:
        self.max_threads = max_threads
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # protects idle and _threads
        self.idle = 0
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict,
               on_done: Callable[[bool, Any], None]) -> None:
        """Run ``fn(*args, **kwargs)`` on a thread; ``on_done(ok, value_or_exc)`` follows."""
        with self._lock:
            grow = self.idle == 0 and len(self._threads) < self.max_threads
            if grow:
                t = threading.Thread(target=self._worker, name=f"{self.name}{len(self._threads)}",
                                     daemon=True)
                self._threads.append(t)
        self._jobs.put((fn, args, kwargs, on_done))
        if grow:
            t.start()

    def _worker(self) -> None:
        jobs = self._jobs
        while True:
            with self._lock:
                self.idle += 1
            job = jobs.get()
            with self._lock:
                self.idle -= 1
            if job is _STOP:
                return
            fn, args, kwargs, on_done = job
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # delivered to the goroutine, re-raised there
                on_done(False, exc)
            else:
                on_done(True, value)
            del job, fn, args, kwargs, on_done

    def shutdown(self, wait: float = 1.0) -> None:
        """Stop idle threads; a thread stuck in a call is left to finish (it is a daemon)."""
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
        for _ in threads:
            self._jobs.put(_STOP)
        for t in threads:
            t.join(wait / max(1, len(threads)))
