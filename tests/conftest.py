"""Fixtures for every test: nothing a test starts may outlive it.

Each test must leave no child process, no ``/dev/shm`` entry of ours and no implicit runtime
behind. Randomised tests print their seed. faulthandler's thread dump waits for each test's own
timeout (``timeouts.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
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


@pytest.fixture(autouse=True)
def _nothing_outlives_the_test() -> Iterator[None]:
    """Fail a test that leaves a child process, a /dev/shm entry or a runtime behind."""
    shm_before = set(os.listdir(SHM)) if os.path.isdir(SHM) else set()
    kids_before = _children()
    seen = {os.getpid()} | kids_before
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
