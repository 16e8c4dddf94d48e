"""The runtime object: everything this process knows of the running runtime, in one place.

Leaf module: imports nothing of ours, so every layer may read and write ``proc``'s fields. Each
process has one ``Proc`` for its whole life; its dict and list fields are created once and
cleared in place, never rebound (the compiled core holds ``names`` and ``fns``).

Life of the fields:
- A runtime sets the *runtime* fields when it starts (``_run.py`` the hub, ``_mp/procs.py`` the
  multi-P ones, the promoters included) and ``stop()`` clears them when it stops.
- The *process* fields outlive runtimes.
- The *signal* fields are the hub layer's signal handlers' (``_hub/preempt.py``,
  ``slicer.py``, ``interrupt.py``, ``drive.py``): ``install`` sets them with a hub on the main
  thread (``driving``: sysmon's ``kick`` and the handler), ``uninstall`` clears them as that hub
  stops (``driving``: the drive's end); the handlers read them with one attribute read of
  ``proc``.
- A fork (``os.register_at_fork``) gives the child a fresh ``Proc``: no runtime, its own pid,
  no executor tasks, no trace, no hub behind any signal handler (no CPU-time clock, no Ctrl-C
  deferral, no drive under way, no preemption check running). Kept by a fork: what the child
  inherits from its parent's memory anyway (the blocking calls patched, the ``atexit``
  registration, the implicit runtime's factory, the codec's extension table, the leak checks'
  exemptions, sysmon's settings, and the handler the preemption handler chains and gives back:
  a child inherits the installed handler itself).

Invariants:
- ``promote_chan``, ``promote_int64`` and ``promote_sema`` are set while, and only while, a
  multi-P runtime runs in this process (``_mp/promote.set_broker``): importing ``csp_mp._mp``
  does not change how a ``Chan``, an ``Int64`` or a ``Sema`` pickles.
- ``fns``, ``recent`` and ``closures`` hold at most ``FNS_MAX``, ``RECENT_MAX`` and
  ``CLOSURES_MAX`` entries (docs/tuning.md); ``fn_bytes`` holds entries only while their
  function lives.

Hot paths name a container field at module level (``_mp/promote.py`` ``names``,
``_mp/tasks.py`` ``fns`` and ``_recent``, ``_shm/codec.py`` ``_EXT_TYPES``): the same object as
the field, which is why those are cleared in place. ``_hub/sysmon.py`` ``settings`` names
``sysmon_settings`` the same way, where docs/tuning.md tells tests and benchmarks to find it.

Module-level state that stays outside this object, and why:
- constants: tables and sizes never written after import, and stateless marker objects
  (``nilchan``, ``default``, the background and TODO contexts);
- caches of pure functions of the code, keyed by code objects or types, which a fork or a new
  runtime cannot make wrong: ``_hub/safepoint.py`` ``_code_cache`` and ``_body_calls``,
  ``_hub/drive.py`` ``_sleep_calls``, ``_tb.py`` ``_stubs``, ``_mp/arrays.py`` ``_ARRAY_CLASS``;
- ``_shm/cloud.py`` ``_table``, cloudpickle's reducer table, filled at import.
``tests/test_proc.py`` checks that nothing else is.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Callables unpickled here, by digest (``_mp/tasks.py``): the oldest goes when full.
FNS_MAX = 4096
#: The last callables ``go()`` pickled, held strongly (``_mp/tasks.py``): emptied when full.
RECENT_MAX = 64
#: Pickled closures by code and captured objects (``_mp/tasks.py``): least recently used goes.
CLOSURES_MAX = 1024
#: Plain functions known to pickle (``Executor.submit``): emptied when full.
TRAVELS_MAX = 1024


def _no_extension(body: Any) -> Any:
    raise ValueError("unknown codec extension: none is registered in this process")


class SysmonSettings:
    """Sysmon's process-wide knobs (``_hub/sysmon.py`` ``settings``, docs/tuning.md): tests and
    benchmarks change them; a hub loop reads them as it starts."""

    __slots__ = ("slice", "period", "idle_period", "block_threshold", "preempt",
                 "detect_blocking", "cpu_clock")

    def __init__(self) -> None:
        self.slice = 0.010  # run time after which a goroutine is preempted
        self.period = 0.010  # longest sysmon sleep while goroutines run (each wake takes the GIL)
        self.idle_period = 0.050  # sampling period while the hub is idle
        self.block_threshold = 0.100  # time in one call after which it is reported
        self.preempt: bool | None = None  # None: from CSP_MP_PREEMPT (on unless "0")
        self.detect_blocking = True
        self.cpu_clock = True  # slices measured by the kernel's CPU-time signal too (slicer.py)


class ThreadName(threading.local):
    """This thread's name in an arena lock's owner word: ``tid << 32 | pid`` (``_shm/locks.py``;
    the pid in the low half)."""

    def __init__(self) -> None:
        self.id = threading.get_native_id() << 32 | os.getpid()


class PreemptHandler:
    """The preemption handler's installation (``_hub/preempt.py``): what ``install`` changed,
    so that ``uninstall`` can put it back."""

    __slots__ = ("hub", "saved", "chain", "deciding", "recorder")

    def __init__(self) -> None:
        self.hub: Any = None  # the hub it preempts for, None when not installed
        self.saved: Any = None  # the handler found at install time
        self.chain: Any = None  # the previous Python handler, called first on every trip
        self.deciding = False  # a preemption check is running (a trip landing inside it)
        self.recorder: list | None = None  # the debug recorder's events, or None (off)


class SliceClock:
    """The CPU-time clock's view of its hub (``_hub/slicer.py``; main thread only)."""

    __slots__ = ("hub", "tick", "since", "last")

    def __init__(self) -> None:
        self.hub: Any = None  # the hub the clock runs for, None when stopped
        self.tick = -1  # hub.tick at the previous look
        self.since = 0.0  # the look before the first that saw that tick: the switch came after
        self.last = 0.0  # when the previous look was


class SigintHandler:
    """The Ctrl-C handler's installation and its deferred interrupt (``_hub/interrupt.py``)."""

    __slots__ = ("hub", "retrier", "trapped", "handling")

    def __init__(self) -> None:
        self.hub: Any = None  # the hub it defers Ctrl-C for, None when not installed
        self.retrier: Any = None  # the thread re-tripping a deferred Ctrl-C
        self.trapped: Any = None  # the user frame armed to raise it, until it fires
        self.handling = False  # the handler is running: a trip landing inside it is dropped


class Driving:
    """Sysmon's request to drive the hub from a plain wait, and the wait taken
    (``_hub/drive.py``)."""

    __slots__ = ("kicked", "waiter", "since")

    def __init__(self) -> None:
        self.kicked = False  # sysmon asked the handler to drive
        self.waiter: Any = None  # the lock the driven thread waits on (None: a selector)
        self.since = 0.0  # when the thread was taken


class Proc:
    """This process's runtime state (see the module doc for the life of each field)."""

    __slots__ = (
        # runtime: set by the runtime that starts, cleared by stop()
        "hub", "implicit", "runtime", "ctx", "broker",
        "promote_chan", "promote_int64", "promote_sema",
        "names", "pinning", "fn_bytes", "recent", "closures", "fns",
        "on_tasks_lost", "task_done", "cluster",
        # process: outlive runtimes
        "pid", "start_implicit", "exit_hook",
        "task_keys", "tasks", "inited", "travels",
        "recorder", "trace", "stop_trace",
        "ext_types", "ext_codes", "xtdec", "xldec", "ref_marks",
        "spin_policy", "load_at", "load",
        "patched", "leak_names", "leak_test_names", "in_test",
        "worker", "brought", "forked", "me", "sysmon_settings",
        "node", "nodes", "run_cluster", "select_remote", "go_entry",
        # signal: set with a hub by the hub layer's signal handlers' install, cleared by uninstall
        "preempt_handler", "slice_clock", "sigint_handler", "driving",
    )

    def __init__(self) -> None:
        # -- runtime ---------------------------------------------------------------------------
        #: this process's hub (``_hub.peek``), None when no runtime runs
        self.hub: Any = None
        #: the implicit runtime's hub (``_run.py``), None when it does not run
        self.implicit: Any = None
        #: P0's ``_mp.procs.Runtime`` while a multi-P runtime runs
        self.runtime: Any = None
        #: this P's view of the control block (``_mp/ctx.py``), None outside a multi-P runtime
        self.ctx: Any = None
        #: this P's broker (``_mp/promote.py``), None outside a multi-P runtime
        self.broker: Any = None
        #: how a Chan, an Int64, a Sema pickle inside a multi-P runtime (``__reduce__``)
        self.promote_chan: Callable[[Any], Any] | None = None
        self.promote_int64: Callable[[Any], Any] | None = None
        self.promote_sema: Callable[[Any], Any] | None = None
        #: this P's channel handles by the 8 bytes naming them in task frames (``promote.py``)
        self.names: dict[bytes, Any] = {}
        #: > 0 while a callable's cached pickle is made (``promote.pinning``)
        self.pinning = 0
        #: pickled callables, per function object (``_mp/tasks.py``)
        self.fn_bytes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: id -> (fn, pickled) of the last callables ``go()`` was given
        self.recent: dict[int, tuple[Any, Any]] = {}
        #: pickled closures, least recently used first
        self.closures: OrderedDict[tuple, tuple] = OrderedDict()
        #: digest -> callable unpickled here, oldest first
        self.fns: dict[bytes, Callable[..., Any]] = {}
        #: called on P0's hub thread with (task keys, error) when a P dies holding them
        self.on_tasks_lost: list[Callable[[list[int], BaseException], None]] = []
        #: called in a worker P with (owner, key) once an executor task's outcome is sent
        self.task_done: Callable[[int, int], None] | None = None
        #: this node's network part on its P0 while a cluster run goes on (``_cluster/net.py``)
        self.cluster: Any = None
        # -- process ---------------------------------------------------------------------------
        self.pid = os.getpid()
        #: starts the implicit runtime (registered by ``_run`` at import)
        self.start_implicit: Callable[[], Any] | None = None
        #: whether ``atexit`` will shut the implicit runtime down
        self.exit_hook = False
        #: the executor's task keys; key -> (executor, future, pinned); initializer token ->
        #: its error; plain functions known to pickle (``_futures/``)
        self.task_keys = itertools.count(1)
        self.tasks: dict[int, tuple[Any, Any, bool]] = {}
        self.inited: dict[str, BaseException | None] = {}
        self.travels: set[Any] = set()
        #: the trace recorder installed on this P's hub (``_hub/tracing.py``)
        self.recorder: Any = None
        #: the multi-P trace under way: its output path on P0, how many Ps, the Ps that
        #: answered (``_mp/tracing.py``); and how to finish it before the runtime stops
        self.trace: dict[str, Any] = {"path": None, "procs": 1, "replies": set()}
        self.stop_trace: Callable[[], Any] | None = None
        #: the codec's extension types and codes, its decoders of tuples and lists carrying
        #: them, and the bytes found in a pickle naming a counted shared object (``codec.py``)
        self.ext_types: dict[type, Any] = {}
        self.ext_codes: dict[int, Any] = {}
        self.xtdec: Callable[[Any], Any] = _no_extension
        self.xldec: Callable[[Any], Any] = _no_extension
        self.ref_marks: tuple[bytes, ...] = ()
        #: the doorbell's spare-core test (None: ``doorbell.spare_core``) and its load sample
        self.spin_policy: Callable[[], bool] | None = None
        self.load_at = 0.0
        self.load = 0.0
        #: (owner, name, original, was in owner.__dict__) of each patched blocking call
        self.patched: list[tuple[Any, str, Any, bool]] = []
        #: goroutine functions exempted from leak checks: for the session, for the test
        self.leak_names: set[str] = set()
        self.leak_test_names: set[str] = set()
        self.in_test = False
        #: this process is a worker P; names of its ``__main__`` and the id of the value last
        #: brought for each by a function sent by value, those still a fork's copy of P0's
        #: (``_shm/cloud.py`` ``merge_main``)
        self.worker = False
        self.brought: dict[str, int] = {}
        self.forked: set[str] = set()
        #: this thread's name in an arena lock's owner word (``_shm/locks.py``)
        self.me = ThreadName()
        #: sysmon's knobs (``_hub/sysmon.py`` ``settings``)
        self.sysmon_settings = SysmonSettings()
        #: this process's node in a cluster run and how many nodes it has (0 and 1 without
        #: one): set by the cluster layer before it starts a node's Ps, which inherit them; a
        #: node runtime's processes also find them in their environment (``_cluster/node.py``)
        self.node = int(os.environ.get("CSP_MP_NODE", "0") or 0)
        self.nodes = int(os.environ.get("CSP_MP_NODES", "1") or 1)
        #: runs a program on a cluster (registered by ``_cluster`` at import): ``run(cluster=)``
        self.run_cluster: Callable[..., Any] | None = None
        #: a select with a case on another node's channel (set by ``_cluster/remote.py`` when
        #: it makes such a channel in this process)
        self.select_remote: Callable[..., Any] | None = None
        #: ``go`` itself on the compiled core (``_run.py``: task.c's ``GoEntry``), else None;
        #: its ``target`` is the Spawner this process's hub hands ``go()`` to
        #: (``Hub.aim_go_entry``), None while no runtime runs
        self.go_entry: Any = None
        # -- signal ----------------------------------------------------------------------------
        self.preempt_handler = PreemptHandler()
        self.slice_clock = SliceClock()
        self.sigint_handler = SigintHandler()
        self.driving = Driving()

    def stop(self) -> None:
        """The runtime stopped: forget it (its hub, its Ps, the bytes naming its arena)."""
        self.hub = self.implicit = self.runtime = self.ctx = self.broker = None
        self.promote_chan = self.promote_int64 = self.promote_sema = None
        self.forget_arena()
        self.on_tasks_lost.clear()
        self.task_done = None
        self.cluster = None
        if self.go_entry is not None:
            self.go_entry.target = None  # no Spawner of a runtime gone (or of a fork's parent)

    def forget_arena(self) -> None:
        """Forget bytes cached for a runtime's arena: they name blocks by offset, which another
        runtime's arena gives to other objects."""
        self.names.clear()
        self.pinning = 0
        self.fn_bytes.clear()
        self.recent.clear()
        self.closures.clear()
        self.fns.clear()

    def after_fork(self) -> None:
        """In a forked child: no runtime, this pid, no executor task, no trace, no hub behind a
        signal handler."""
        self.stop()
        self.pid = os.getpid()
        self.task_keys = itertools.count(1)
        self.tasks.clear()
        self.inited.clear()
        self.travels.clear()
        self.recorder = None
        self.trace = {"path": None, "procs": 1, "replies": set()}
        self.stop_trace = None
        self.load_at = 0.0
        self.worker = False
        self.brought = {}
        self.forked = set()
        self.me.id = threading.get_native_id() << 32 | os.getpid()  # the child's one thread
        # the parent's hub is not this process's: its handlers do nothing until one installs
        self.preempt_handler.hub = None
        self.preempt_handler.deciding = False
        self.slice_clock = SliceClock()
        self.sigint_handler = SigintHandler()
        self.driving = Driving()


proc = Proc()
"""This process's runtime object."""

os.register_at_fork(after_in_child=proc.after_fork)

__all__ = ["CLOSURES_MAX", "FNS_MAX", "RECENT_MAX", "TRAVELS_MAX", "Driving", "PreemptHandler",
           "Proc", "SigintHandler", "SliceClock", "SysmonSettings", "proc"]
