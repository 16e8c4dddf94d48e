"""csp_mp: Go's goroutines, channels and select for Python, in parallel across processes.

``go(fn)`` starts a goroutine that may run on any P (an OS process); ``Chan`` and ``select`` work
within and across Ps; ``run(main, procs=N)`` runs a program on N Ps. docs/spec.md is the contract.
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import _cluster  # noqa: F401 - run(cluster=...) (loads nothing of Ray)
from . import atomic as atomic
from . import context as context
from . import errgroup as errgroup
from . import runtime as runtime
from . import sync as sync
from . import time as time
from ._array import shared_array as shared_array
from ._chan import Chan as Chan
from ._chan import default as default
from ._chan import nilchan as nilchan
from ._chan import select as select
from ._errors import BlockingWarning as BlockingWarning
from ._errors import ClosedChannelError as ClosedChannelError
from ._errors import DeadlockError as DeadlockError
from ._errors import InternalError as InternalError
from ._errors import MigrationWarning as MigrationWarning
from ._errors import Panic as Panic
from ._errors import ProcessLost as ProcessLost
from ._errors import RemoteError as RemoteError
from ._run import blocking as blocking
from ._run import go as go
from ._run import go_local as go_local
from ._run import run as run
from ._run import shutdown as shutdown
from ._sync import Cond as Cond
from ._sync import Mutex as Mutex
from ._sync import Once as Once
from ._sync import RWMutex as RWMutex
from ._sync import WaitGroup as WaitGroup
from ._time import Ticker as Ticker
from ._time import Timer as Timer
from ._time import after as after
from ._time import after_func as after_func
from ._time import sleep as sleep
from ._time import tick as tick

if TYPE_CHECKING:
    from . import futures as futures
    from ._map import parallel_map as map  # noqa: A004 - csp_mp.map; the builtin is intact
    from ._patch import patch_blocking as patch_blocking

for _f in (blocking, go, go_local, run, shutdown, select, shared_array):
    _f.__module__ = "csp_mp"
for _t in (after, after_func, sleep, tick):
    _t.__module__ = "csp_mp.time"
del _f, _t

__version__ = "0.1.0"

__all__ = [
    "BlockingWarning", "Chan", "ClosedChannelError", "Cond", "DeadlockError", "InternalError",
    "MigrationWarning", "Mutex", "Once", "Panic", "ProcessLost", "RWMutex", "RemoteError",
    "Ticker", "Timer", "WaitGroup", "after", "after_func", "atomic", "blocking", "context",
    "default", "errgroup", "futures", "go", "go_local", "map", "nilchan", "patch_blocking", "run",
    "runtime", "select", "shared_array", "shutdown", "sleep", "sync", "tick", "time",
]


def __getattr__(name: str) -> Any:
    """The names a one-P program rarely needs, imported on first use: the executor
    (``concurrent.futures``, cloudpickle), ``map`` and ``patch_blocking`` (subprocess, socket)."""
    if name == "futures":
        return importlib.import_module("csp_mp.futures")  # binds csp_mp.futures as it loads
    value: Any
    if name == "map":
        from ._map import parallel_map as value
    elif name == "patch_blocking":
        from ._patch import patch_blocking as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value.__module__ = "csp_mp"
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"futures", "map", "patch_blocking"})
