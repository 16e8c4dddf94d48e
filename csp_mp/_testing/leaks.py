"""Leak checks in the manner of Go's goleak: goroutines still alive after a test, shared objects
it made still holding arena blocks, P processes and ``/dev/shm`` entries left behind.

Invariants:
- ``proc.leak_names`` holds names exempted outside any test (conftest, module level);
  ``proc.leak_test_names`` those exempted while the current test runs, cleared by ``end_test``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .. import _hub
from .._hub import waits as W
from .._proc import proc
from .._runtime import goid, num_goroutine, stack
from .faketime import wait_all_blocked
from .stacks import StackEntry as StackEntry
from .stacks import parse_stack

SETTLE = 2.0  # real seconds goroutines get to end after the test before they count as leaked
SHM = "/dev/shm"



def ignore_leaks(*function_names: str) -> None:
    """Exempt goroutines running these functions (``"pkg.mod.fn"`` or a dotted tail such as
    ``"fn"``) from leak checks: for the current test when called in one, else for all."""
    for name in function_names:
        if not isinstance(name, str) or not name:
            raise TypeError("ignore_leaks() takes function names as non-empty strings")
    (proc.leak_test_names if proc.in_test else proc.leak_names).update(function_names)


def begin_test() -> None:
    """A test starts: names exempted from now on are its own."""
    proc.in_test = True
    proc.leak_test_names.clear()


def end_test() -> None:
    """The test ended: forget its exemptions."""
    proc.in_test = False
    proc.leak_test_names.clear()


def _exempt(e: StackEntry) -> bool:
    names = proc.leak_names | proc.leak_test_names
    return any(e.matches(n) for n in names)


def _alive_others() -> tuple[list[StackEntry], int]:
    """Goroutines other than the caller and main, not exempted; and how many goroutines exist
    that no stack shows yet (queued for another P, not started)."""
    me = goid()
    entries = [e for e in parse_stack(stack()) if e.gid != me and e.function != "main"]
    unseen = max(0, num_goroutine() - 1 - sum(e.count for e in entries))
    return [e for e in entries if not _exempt(e)], unseen


def leaked_goroutines(settle: float = SETTLE) -> tuple[list[StackEntry], int]:
    """From the main goroutine, once the test body returned: the goroutines that did not end
    within ``settle`` seconds, and the count of queued ones not started."""
    hub = _hub.current_hub()
    if hub.broker is None and hub.num_goroutine() <= 1:
        return [], 0  # one P, only the caller: the common case, answered without a stack dump
    from .._time import sleep

    deadline = time.monotonic() + settle
    pause = 0.001
    while True:
        quiet = False
        try:
            wait_all_blocked(timeout=max(0.001, deadline - time.monotonic()))
            quiet = True
        except TimeoutError:
            pass
        leaks, unseen = _alive_others()
        if not leaks and not unseen:
            return [], 0
        stuck = quiet and all(e.state in W.TABLE and W.is_durable(e.state) for e in leaks)
        if stuck or time.monotonic() >= deadline:
            return leaks, unseen  # only another goroutine could wake these: they leaked
        sleep(pause)
        pause = min(pause * 2, 0.1)


def format_leaks(leaks: list[StackEntry], unseen: int = 0) -> str:
    """A goleak-style report: the ``runtime.stack()`` entry of each leaked goroutine, or of each
    group of them stopped at the same place, with the line that created it."""
    n = sum(e.count for e in leaks) + unseen
    lines = [f"csp_mp: found {n} unexpected goroutine{'s' if n != 1 else ''} still alive "
             "after the test:", ""]
    for e in leaks:
        lines.append(e.text)
    if unseen:
        lines.append(f"[{unseen} goroutine(s) queued but never started]")
    names = sorted({e.function for e in leaks})
    if names:
        args = ", ".join(repr(x) for x in names)
        lines.append(f"Exempt known ones with csp_mp.testing.ignore_leaks({args}).")
    return "\n".join(lines)


# ------------------------------------------------------------------ shared objects

def live_objects() -> dict[str, int]:
    """The running runtime's live shared objects by kind (``runtime.metrics()``'s
    ``shared_objects``, without asking every P for its stack), those pinned by a function
    ``go()`` shipped left out (kept until the run ends, as documented); empty outside a
    runtime of several Ps."""
    from .._mp import counters
    from .._mp import ctx as C

    ctx = C.current()
    return counters.live_objects(ctx, pinned=False) if ctx is not None else {}


def objects_left(before: dict[str, int], settle: float = SETTLE) -> dict[str, int]:
    """From the main goroutine, once no other goroutine is alive: the shared objects made since
    ``before`` and still live after up to ``settle`` seconds (a handle dropped on a P is
    released at its next poll), by kind."""
    from .._time import sleep

    deadline = time.monotonic() + settle
    pause = 0.001
    while True:
        extra = {kind: n - before.get(kind, 0) for kind, n in live_objects().items()
                 if n > before.get(kind, 0)}
        if not extra or time.monotonic() >= deadline:
            return extra
        sleep(pause)
        pause = min(pause * 2, 0.05)


def format_objects(extra: dict[str, int]) -> str:
    """The report of shared objects a test left live."""
    what = ", ".join(f"{n} {kind}" for kind, n in sorted(extra.items()))
    return ("csp_mp: shared objects made by the test still live after it (their arena blocks "
            f"are not freed): {what}. Something outside the test's goroutines still holds "
            "them: a module-level or class variable, a cache, a closure shipped by go().")


# ------------------------------------------------------------------ processes and shared memory

@dataclass
class Snapshot:
    """Child processes and ``/dev/shm`` entries that existed when a test started."""

    children: set[int] = field(default_factory=set)
    shm: set[str] = field(default_factory=set)


def _infra_pids() -> set[int]:
    """Helpers ``multiprocessing`` keeps for a whole session (fork server, resource tracker)."""
    pids: set[int] = set()
    from multiprocessing import forkserver, resource_tracker

    for obj, attr in ((forkserver._forkserver, "_forkserver_pid"),
                      (resource_tracker._resource_tracker, "_pid")):
        pid = getattr(obj, attr, None)
        if pid:
            pids.add(pid)
    return pids


def _children() -> set[int]:
    import psutil

    infra = _infra_pids()
    return {p.pid for p in psutil.Process().children(recursive=True) if p.pid not in infra}


def _shm() -> set[str]:
    return set(os.listdir(SHM)) if os.path.isdir(SHM) else set()


def snapshot() -> Snapshot:
    """What exists now, to compare with after the test."""
    return Snapshot(_children(), _shm())


def resources_left(before: Snapshot, timeout: float = 5.0) -> list[str]:
    """P processes and ``/dev/shm`` entries of ours made since ``before`` and still there;
    stopped Ps get up to ``timeout`` seconds to be reaped."""
    seen = {os.getpid()} | before.children
    deadline = time.monotonic() + timeout
    kids = _children() - before.children
    seen |= kids
    while kids and time.monotonic() < deadline:
        time.sleep(0.01)  # a stopped P is being reaped: poll its exit, bounded
        kids = _children() - before.children
    out = [f"P process {pid} still running" for pid in sorted(kids)]
    for entry in sorted(_shm() - before.shm):
        if any(f"-{pid}-" in entry or entry.endswith(f"-{pid}") for pid in seen):
            out.append(f"{SHM}/{entry} left behind")
    return out
