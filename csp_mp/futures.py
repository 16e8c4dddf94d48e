"""Executors and futures over goroutines: mirrors Python's ``concurrent.futures``.

``Executor`` is a ``concurrent.futures.Executor`` whose tasks are goroutines that may run on any
P; its futures are ``concurrent.futures.Future`` objects, so ``wait``, ``as_completed``,
``add_done_callback`` and asyncio's ``wrap_future`` work. Departures from
``ProcessPoolExecutor``:

- (*) a P that dies holding only executor tasks sets ``csp_mp.ProcessLost`` on their futures
  and the runtime replaces it; any other loss ends the runtime, every unfinished future gets
  ``ProcessLost``, and the executor is not broken: its next task runs in a fresh runtime.
- (*) ``as_chan(future)`` turns a future into a channel for ``select``.
"""

from ._futures import Executor as Executor
from ._futures import Future as Future
from ._futures import as_chan as as_chan

for _f in (as_chan,):
    _f.__module__ = "csp_mp.futures"
Executor.__module__ = "csp_mp.futures"
del _f

__all__ = ["Executor", "Future", "as_chan"]
