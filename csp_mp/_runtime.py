"""Runtime queries and knobs: mirrors Go package ``runtime`` (the scheduler parts)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import _hub, _proc


def _multi(name: str) -> Callable:
    from . import _mp

    return getattr(_mp, name)


def num_cpu() -> int:
    """The number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gomaxprocs(n: int = 0) -> int:
    """Return the number of Ps; ``n > 0`` also sets it (resizing a running runtime)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"gomaxprocs needs an int, not {type(n).__name__}")
    hub = _hub.peek()
    if hub is None:
        from ._run import resolve_procs

        prev = resolve_procs(None)
        if n > 0:
            os.environ["GOMAXPROCS"] = str(n)
        return prev
    if hub.broker is not None:
        return _multi("gomaxprocs")(hub, n)
    prev = hub.nprocs
    if n > 0:
        hub.nprocs = n  # (*) a one-P run records the value; it cannot start Ps
    return prev


def native() -> bool:
    """True if the compiled core carries what crosses processes: in the running runtime, or
    (none running) in the next one to start. ``CSP_MP_NATIVE=0`` forces the pure-Python path."""
    hub = _hub.peek()
    broker: Any = hub.broker if hub is not None else None  # the _mp Broker, when several Ps
    if broker is not None:
        return broker.arena.core is not None
    from ._shm import native as _native

    try:
        return _native.enabled()
    except RuntimeError:  # CSP_MP_NATIVE=1 without the core: the next start raises
        return False


def num_goroutine() -> int:
    """Live goroutines in every P (in a cluster run, called on a node's P0: of every node)."""
    hub = _hub.peek()
    if hub is None:
        return 0
    net = _proc.proc.cluster  # a cluster run, on a node's P0: every node's
    if net is not None:
        return int(net.num_goroutine())
    return _multi("num_goroutine")(hub)


def gosched() -> None:
    """Yield the P, letting other goroutines run."""
    _hub.current_hub().gosched()


def goid() -> int:
    """The current goroutine's id: a small integer unique in the runtime (main is 1)."""
    g = _hub.current_hub().current
    return g.id if g is not None else 0


def current_p() -> int:
    """The index of the P running the caller (0 is the user's process)."""
    return _hub.current_hub().p


def current_node() -> int:
    """The index of the cluster node running the caller (0: where ``run`` was called, and
    always 0 without a cluster)."""
    return _proc.proc.node


def num_nodes() -> int:
    """The number of nodes the program runs on (1 without a cluster)."""
    return _proc.proc.nodes


def stack() -> str:
    """Every goroutine in every P: id, P, state, wait reason, Python stack and Go's ``created by``
    lines (every goroutine but main); goroutines stopped at the same place are one entry.

    ```
    goroutine 7 [chan receive] on P1: jobs.worker
      File "jobs.py", line 12, in worker
        item = tasks.recv()
      ...
    created by jobs.main in goroutine 1
        /home/me/jobs.py:20
    ```

    The ``created by`` lines name the user's call that started the goroutine (``go()``,
    ``go_local()``, ``Group.go``, ``Executor.submit``, ``csp_mp.map``: the innermost frame
    outside csp_mp), the goroutine that made that call, and its file and line, on whatever P
    the goroutine runs: a goroutine queued for any P carries them in its task frame. They are
    always recorded; a loop calling ``go()`` on one line resolves that line once. In a cluster
    run, called on a node's P0: every node's goroutines, each naming its node.
    """
    hub = _hub.peek()
    if hub is None:
        return ""
    net = _proc.proc.cluster  # a cluster run, on a node's P0: every node's
    if net is not None:
        return str(net.stack())
    return _multi("stack")(hub)


def metrics() -> dict[str, Any]:
    """Counters of the whole runtime, every P included (a snapshot; ``{}`` when none runs):

    - ``procs``: Ps started; ``goroutines``: live goroutines; ``goroutines_per_p``: a list,
      live goroutines of each P (other Ps' as they last published them);
    - ``goroutines_created``: goroutines started since the runtime began (every ``go``,
      ``go_local``, timer function and the main goroutine);
    - ``steals``: goroutines a P took from another P's run queue;
    - ``preemptions``: running goroutines switched out for having held their P too long;
    - ``shared_chan_ops``, ``shared_chan_bytes``: sends and receives on channels shared
      between Ps, and the encoded bytes those sends moved;
    - ``blocking_calls``: calls handed to M threads (``blocking()``, patched blocking calls);
    - ``m_threads``, ``m_threads_busy``: M threads started, and those running a call now;
    - ``arena_bytes``, ``arena_bytes_in_use``: size of the shared-memory arena and bytes
      allocated in it (0 with one P, which has no arena);
    - ``shared_objects``: live shared objects by kind (``chan``, ``int64``, ``sema``,
      ``array``: a ``shared_array``'s memory) in the whole runtime: made shared and not yet
      freed (an object many Ps hold counts once; empty with one P);
    - ``pids``: each P's process id, a list indexed by P number (P0 is the process that
      started the runtime), so that an operator can watch or signal one P.

    In a cluster run, called on a node's P0: every node's counters added up (lists joined in
    node order), and ``nodes``, each node's own.
    """
    hub = _hub.peek()
    if hub is None:
        return {}
    net = _proc.proc.cluster  # a cluster run, on a node's P0: every node's, added up
    if net is not None:
        return dict(net.metrics())
    return _multi("metrics")(hub)


# Public home of these functions (pickling finds them by module): ``csp_mp.runtime``.
for _f in (num_cpu, gomaxprocs, num_goroutine, gosched, goid, current_p, stack, metrics):
    _f.__module__ = "csp_mp.runtime"
del _f
