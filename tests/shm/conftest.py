"""Fixtures for the shared-memory layer: every test must leave no process and no /dev/shm entry."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterator

import psutil
import pytest

from csp_mp._shm.arena import Arena

SHM = "/dev/shm"


def _infra_pids() -> set[int]:
    """Helpers multiprocessing keeps for the whole session (forkserver, resource tracker)."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        pids.add(pid)
    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if pid:
        pids.add(pid)
    return pids


def _our_descendants() -> set[int]:
    infra = _infra_pids()
    return {p.pid for p in psutil.Process().children(recursive=True) if p.pid not in infra}


def _mapped_elsewhere(entry: str, ours: set[int]) -> bool:
    """True if a process outside this test's tree maps /dev/shm/<entry> (someone else's)."""
    needle = f"{SHM}/{entry}"
    for pid in psutil.pids():
        if pid in ours:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    return False


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or a new /dev/shm entry behind."""
    shm_before = set(os.listdir(SHM))
    kids_before = _our_descendants()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = _our_descendants() - kids_before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not left, f"child processes left behind: {sorted(left)}"
    ours = {os.getpid()} | _infra_pids()
    new = set(os.listdir(SHM)) - shm_before
    deadline = time.monotonic() + 2.0
    while new and time.monotonic() < deadline:
        time.sleep(0.01)
        new &= set(os.listdir(SHM))
    new = {e for e in new if e.startswith(f"sem.csp-{os.getpid()}-") or not (
        e.startswith("sem.csp-") or _mapped_elsewhere(e, ours))}
    assert not new, f"/dev/shm entries left behind: {sorted(new)}"


@pytest.fixture(scope="session")
def ctx() -> mp.context.BaseContext:
    return mp.get_context("forkserver")


@pytest.fixture
def arena() -> Iterator[Arena]:
    """An arena of the core the run uses (``CSP_MP_NATIVE``)."""
    yield from _arena(None)


@pytest.fixture
def py_arena() -> Iterator[Arena]:
    """An arena on the pure-Python path, for tests of that path's own lock and doorbell."""
    yield from _arena(False)


def _arena(use_native: bool | None) -> Iterator[Arena]:
    a = Arena.create(64 << 20, nlocks=16, use_native=use_native)
    try:
        yield a
    finally:
        a.sems.seal()
        a.close()
