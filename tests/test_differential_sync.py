"""The locks two ways: arena locks (the Python path's ``ShmLock``, the compiled core's robust
mutex) and ``sync.Mutex`` (local, shared over each path's arena), driven alike and compared.

Each path's arena is a ``Fold`` (``folded.py``). The two paths have one semantics, and each
test asserts that they agree: re-entry raises ``RuntimeError`` and keeps the lock, a release by
another thread or of a free lock raises and changes nothing, ``owner()`` is the holder's pid from
any thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from folded import DEADLINE, Fold
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csp_mp import go_local, runtime
from csp_mp._hub import current_hub
from csp_mp._mp.shobj import attach_sema, new_sema_block
from csp_mp._shm import native
from csp_mp.sync import Mutex

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

HANG = 0.5  # seconds after which a call still waiting counts as "waits" (the outcome compared)


def _outcome(fn: Callable[[], Any]) -> tuple:
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("raised", type(exc).__name__)


class Holder:
    """A thread that runs calls on a lock when asked (a second holder)."""

    def __init__(self) -> None:
        self._q: deque = deque()
        self._cv = threading.Condition()
        self.tid = 0
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        self.tid = threading.get_native_id()
        while True:
            with self._cv:
                while not self._q:
                    self._cv.wait()
                fn, box, done = self._q.popleft()
            if fn is None:
                return
            box.append(_outcome(fn))
            done.set()

    def call(self, fn: Callable[[], Any], wait: float = DEADLINE) -> tuple:
        """``fn``'s outcome in the thread, or ``("waits",)`` if it is still running after
        ``wait`` seconds (it goes on; ``join`` waits for it)."""
        box: list = []
        done = threading.Event()
        with self._cv:
            self._q.append((fn, box, done))
            self._cv.notify()
        if not done.wait(wait):
            self._pending = done
            return ("waits",)
        return box[0]

    def join(self) -> None:
        pending = getattr(self, "_pending", None)
        if pending is not None:
            assert pending.wait(DEADLINE), "a lock call did not end"
        with self._cv:
            self._q.append((None, None, None))
            self._cv.notify()
        self._t.join(DEADLINE)
        assert not self._t.is_alive()


def _locks(folds: tuple[Fold, Fold]) -> list[Any]:
    """One object lock stripe of each arena (the same index on both)."""
    out = []
    for fold in folds:
        out.append(fold.arena.locks.lock(fold.ps[0].obj_lock_index()))
    assert out[0].__class__ is not out[1].__class__
    return out


def test_lock_acquire_release_agree(folds: tuple[Fold, Fold]) -> None:
    """Taking and giving back, owner() from the main thread, and exclusion between threads."""
    for lock in _locks(folds):
        assert lock.owner() == 0
        assert lock.acquire() is False  # not taken over from a dead holder
        assert lock.owner() != 0
        other = Holder()
        try:
            assert other.call(lock.acquire, wait=HANG) == ("waits",)  # excluded
            lock.release()
            deadline = time.monotonic() + DEADLINE
            while lock.owner() == 0 and time.monotonic() < deadline:
                time.sleep(0.001)  # the waiting thread wakes and takes it: poll, bounded
            assert lock.owner() != 0
            assert other.call(lock.release) == ("ok", None)
            assert lock.owner() == 0
        finally:
            other.join()


def test_lock_owner_from_main_thread_agrees(folds: tuple[Fold, Fold]) -> None:
    owners = []
    for lock in _locks(folds):
        with lock:
            owners.append(lock.owner())
    assert owners[0] == owners[1] == os.getpid()


def test_lock_owner_from_another_thread_agrees(folds: tuple[Fold, Fold]) -> None:
    owners = []
    for lock in _locks(folds):
        t = Holder()
        try:
            assert t.call(lock.acquire) == ("ok", False)
            owners.append(lock.owner())
            assert t.call(lock.release) == ("ok", None)
        finally:
            t.join()
    assert owners[0] == owners[1] == os.getpid()


def test_lock_reentry_agrees(folds: tuple[Fold, Fold]) -> None:
    """Acquiring a lock its thread already holds raises on both paths (it would wait for
    ever); the holder still holds it and gives it back."""
    outcomes = []
    for lock in _locks(folds):
        t = Holder()
        try:
            assert t.call(lock.acquire) == ("ok", False)
            outcomes.append(t.call(lock.acquire, wait=HANG))
            assert t.call(lock.release) == ("ok", None)
        finally:
            t.join()
        assert lock.owner() == 0
    assert outcomes[0] == outcomes[1] == ("raised", "RuntimeError"), outcomes


def test_lock_foreign_release_agrees(folds: tuple[Fold, Fold]) -> None:
    """A thread that does not hold the lock cannot release it: RuntimeError on both paths, and
    the holder keeps it."""
    outcomes = []
    for lock in _locks(folds):
        t = Holder()
        try:
            assert t.call(lock.acquire) == ("ok", False)
            outcomes.append(_outcome(lock.release))
            assert lock.owner() == os.getpid()
            assert t.call(lock.release) == ("ok", None)
        finally:
            t.join()
    assert outcomes[0] == outcomes[1] == ("raised", "RuntimeError"), outcomes


def test_lock_release_when_free_agrees(folds: tuple[Fold, Fold]) -> None:
    outcomes = [_outcome(lock.release) for lock in _locks(folds)]
    for lock in _locks(folds):
        assert lock.owner() == 0
    assert outcomes[0] == outcomes[1] == ("raised", "RuntimeError"), outcomes


# ---------------------------------------------------------------------------- sync.Mutex

def _mutexes(folds: tuple[Fold, Fold]) -> list[tuple[str, Mutex]]:
    out = [("local", Mutex())]
    for fold in folds:
        m = Mutex()
        p0 = fold.ps[0]
        attach_sema(m._sema, p0, new_sema_block(p0, 1), 1)
        out.append((fold.kind, m))
    return out


mutex_ops = st.lists(st.sampled_from(["try_lock", "unlock", "lock_in_goroutine"]), max_size=25)


@settings(max_examples=60, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=mutex_ops)
def test_mutex_agrees(folds: tuple[Fold, Fold], seq: list[str]) -> None:
    """try_lock, unlock (of an unlocked mutex too) and goroutines parked in lock(): every
    implementation returns, raises and grants in the model's order."""
    impls = _mutexes(folds)
    locked, waiting, granted = False, deque(), []  # the model
    got: dict[str, list[int]] = {name: [] for name, _ in impls}
    hub = current_hub()
    for k, op in enumerate(seq):
        if op == "try_lock":
            want: tuple = ("ok", not locked)
            locked = True
            outs = [_outcome(m.try_lock) for _, m in impls]
        elif op == "unlock":
            if not locked:
                want = ("raised", "RuntimeError")
            else:
                want = ("ok", None)
                if waiting:
                    granted.append(waiting.popleft())
                else:
                    locked = False
            outs = [_outcome(m.unlock) for _, m in impls]
        else:
            want = ("ok", None)
            if locked:
                waiting.append(k)
            else:
                locked = True
                granted.append(k)
            for name, m in impls:
                go_local(lambda m=m, mine=got[name], k=k: (m.lock(), mine.append(k)))
            outs = [want] * len(impls)
        assert outs == [want] * len(impls), (op, dict(zip([n for n, _ in impls], outs,
                                                          strict=True)))
        for fold in folds:
            fold.poll()
        deadline = time.monotonic() + DEADLINE
        while hub.runq or hub.runnext is not None or any(g != granted for g in got.values()):
            assert time.monotonic() < deadline, (op, got, granted)
            runtime.gosched()
    # the shared words: count, lock index, references
    words = []
    for fold, (_, m) in zip(folds, impls[1:], strict=True):
        _b, off, w, _lock, _ring = m._sema.count
        q = fold.arena.words.view
        words.append((q[w], q[w + 3], len(m._sema._queue())))
    assert words[0] == words[1]
    # what is left parked is ended by the runtime's shutdown (the suite's fixture)
