"""Fixtures for every test: nothing a test starts may outlive it.

Each test must leave no child process, no ``/dev/shm`` entry of ours and no implicit runtime
behind. Randomised tests print their seed. faulthandler's thread dump waits for each test's own
timeout (``timeouts.py``).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterator

import pytest
from folded import folds as folds  # the differential suite's fixture (tests/test_differential_*.py)
from timeouts import pytest_runtest_setup as pytest_runtest_setup

import csp_mp
from csp_mp import _hub
from csp_mp._testing import leaks

SHM = "/dev/shm"


def _children() -> set[int]:
    """Our child processes, less the helpers multiprocessing keeps for the session."""
    return leaks._children()


def _ours(entry: str, pids: set[int]) -> bool:
    """True for a /dev/shm entry named after this process or one of its children.

    Other engineers' test runs share the machine's /dev/shm; their entries carry their pids.
    """
    if entry.startswith("sem.loky-"):
        return False  # loky, a benchmark peer, unlinks its semaphores lazily, at its own pace
    return any(f"-{pid}-" in entry or entry.endswith(f"-{pid}") for pid in pids)


#: the runtime's own objects a stopped runtime must not keep alive
_RUNTIME_KINDS = ("Broker", "Hub", "Ctx")
#: those found alive after an earlier test (already reported there), kept so that they are
#: not reported again
_already_leaked: list[object] = []


def _runtime_classes() -> list[type]:
    """The classes named in _RUNTIME_KINDS that csp_mp's loaded modules define (looked up by
    name: the modules that hold them may move)."""
    found = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("csp_mp.") or mod is None:
            continue
        for kind in _RUNTIME_KINDS:
            cls = getattr(mod, kind, None)
            if (isinstance(cls, type) and cls.__module__ == name
                    and not getattr(cls, "_is_protocol", False)):
                found.append(cls)
    return found


def _class_refs(classes: list[type]) -> dict[type, int]:
    """Each class's reference count: every live instance of a class defined in Python holds
    one, so a count that grew over a test says an instance may have outlived it."""
    return {cls: sys.getrefcount(cls) for cls in classes}


def _grew(before: dict[type, int]) -> bool:
    """Whether a class's count grew since `before`, or a class was loaded meanwhile."""
    now = _class_refs(_runtime_classes())
    return any(n > before.get(cls, 0) for cls, n in now.items())


def _runtime_objects_left(before: dict[type, int]) -> list[str]:
    """The runtime objects alive now that were not before the test (after a collection);
    looked for only when a class's reference count says there may be some."""
    if not _grew(before):
        return []
    gc.collect()
    if not _grew(before):
        return []
    known = {id(o) for o in _already_leaked}
    kinds = tuple(_runtime_classes())
    left = [o for o in gc.get_objects() if isinstance(o, kinds) and id(o) not in known]
    _already_leaked.extend(left)
    return sorted(type(o).__name__ for o in left)


@pytest.fixture(autouse=True)
def _nothing_outlives_the_test() -> Iterator[None]:
    """Fail a test that leaves a child process, a /dev/shm entry or a runtime behind, or
    after which a stopped runtime's Broker, Hub or Ctx is still alive."""
    shm_before = set(os.listdir(SHM)) if os.path.isdir(SHM) else set()
    kids_before = _children()
    seen = {os.getpid()} | kids_before
    refs_before = _class_refs(_runtime_classes())
    try:
        yield
    finally:
        seen |= _children()
        csp_mp.shutdown()
    leaked = _hub.peek()
    if leaked is not None:
        _hub.set_current(None)  # keep the next tests usable
    assert leaked is None, "a csp_mp runtime is still installed after the test"
    deadline = time.monotonic() + 5.0
    left = _children() - kids_before
    while left and time.monotonic() < deadline:
        time.sleep(0.01)  # a stopped P is being reaped: poll its exit, bounded
        left = _children() - kids_before
    assert not left, f"child processes left behind: {sorted(left)}"
    if os.path.isdir(SHM):
        new = {e for e in set(os.listdir(SHM)) - shm_before if _ours(e, seen)}
        assert not new, f"/dev/shm entries left behind: {sorted(new)}"
    alive = _runtime_objects_left(refs_before)
    assert not alive, f"a stopped runtime's objects are still alive after the test: {alive}"


@pytest.fixture(params=[(1, ""), (2, ""), (2, "forkserver")],
                ids=["procs1", "procs2", "procs2-forkserver"])
def procs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Ps to run with; Ps are forked from P0 when that is safe, or come from the fork server."""
    n, start = request.param
    if start:
        monkeypatch.setenv("CSP_MP_START", start)
    return n


@pytest.fixture(params=[1, 2, 4], ids=lambda n: f"procs{n}")
def procs4(request: pytest.FixtureRequest) -> int:
    """1, 2 and 4 Ps, for the cases cheap enough to run on four."""
    return request.param
