"""``Executor`` (a ``concurrent.futures.Executor`` over goroutines) and ``as_chan``.

Layer: above ``_run``, beside ``_runtime``. Three modules, each importing only the ones before:
``task.py`` (the body of a task, on any P, and how its outcome reaches the owner),
``wait.py`` (futures whose waits park a goroutine; ``as_chan``), ``executor.py`` (dispatch).
"""

from .executor import Executor
from .wait import Future, as_chan

__all__ = ["Executor", "Future", "as_chan"]
