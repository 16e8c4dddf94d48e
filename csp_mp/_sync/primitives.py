"""WaitGroup, Mutex, RWMutex, Once and Cond: mirrors Go package ``sync``.

Each is built only on ``Sema`` and the atomics, as Go's are, so they work across Ps once those
are shared. Departures from Go are marked (*).

(*) Misuse that Go turns into a fatal error raises instead: ``ValueError`` for a negative
WaitGroup counter, ``RuntimeError`` for unlocking an unlocked (RW)Mutex; the object is left as it
was before the bad call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._atomic import Bool, Int64
from .._hub import current_hub, spawn
from .._hub import waits as W
from .._hub.interrupt import register_body_call
from .sema import Sema

_RW_MAX_READERS = 1 << 30


def _wg_body(wg: WaitGroup, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        fn(*args, **kwargs)
    finally:
        wg.done()


register_body_call(_wg_body)


class WaitGroup:
    """Waits for a collection of goroutines to finish."""

    __slots__ = ("_state", "_sema")
    __module__ = "csp_mp.sync"

    def __init__(self) -> None:
        # high 32 bits: counter; low 32 bits: waiters
        self._state = Int64(0)
        self._sema = Sema(0)

    def add(self, n: int) -> None:
        """Add ``n`` (may be negative) to the counter; at zero every waiter is released."""
        state = self._state.add(n << 32)
        v = state >> 32
        w = state & 0xFFFFFFFF
        if v < 0:
            self._state.add(-(n << 32))
            raise ValueError("sync: negative WaitGroup counter")
        if v > 0 or w == 0:
            return
        if self._state.compare_and_swap(state, 0):
            self._sema.release(w)

    def done(self) -> None:
        """Decrement the counter by one."""
        self.add(-1)

    def wait(self) -> None:
        """Block until the counter is zero."""
        while True:
            state = self._state.load()
            if state >> 32 == 0:
                return
            if self._state.compare_and_swap(state, state + 1):
                self._sema.acquire(W.WAITGROUP_WAIT)
                return

    def go(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Add 1, run ``fn(*args, **kwargs)`` in a new goroutine, and mark it done when it ends."""
        if not callable(fn):
            raise TypeError(f"WaitGroup.go needs a callable, got {type(fn).__name__}")
        self.add(1)
        try:
            spawn(_wg_body, (self, fn, args, kwargs), local=False)
        except BaseException:
            self.add(-1)
            raise


class Mutex:
    """A mutual exclusion lock that parks the goroutine, never the P. ``with mu:`` locks."""

    __slots__ = ("_sema",)
    __module__ = "csp_mp.sync"

    def __init__(self) -> None:
        self._sema = Sema(1, limit=1)

    def lock(self) -> None:
        """Lock, waiting while another goroutine holds it."""
        self._sema.acquire(W.MUTEX_LOCK)

    def try_lock(self) -> bool:
        """Lock if free; True if it was locked."""
        return self._sema.try_acquire()

    def unlock(self) -> None:
        """Unlock; RuntimeError if not locked."""
        self._sema.release(1, "sync: unlock of unlocked mutex")

    def __enter__(self) -> Mutex:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()


class RWMutex:
    """A reader/writer lock: many readers or one writer (Go's algorithm)."""

    __slots__ = ("_w", "_writer_sem", "_reader_sem", "_reader_count", "_reader_wait")
    __module__ = "csp_mp.sync"

    def __init__(self) -> None:
        self._w = Mutex()
        self._writer_sem = Sema(0)
        self._reader_sem = Sema(0)
        self._reader_count = Int64(0)
        self._reader_wait = Int64(0)

    def rlock(self) -> None:
        """Lock for reading."""
        if self._reader_count.add(1) < 0:
            self._reader_sem.acquire(W.RWMUTEX_RLOCK)

    def try_rlock(self) -> bool:
        """Lock for reading if no writer holds or waits for the lock."""
        while True:
            c = self._reader_count.load()
            if c < 0:
                return False
            if self._reader_count.compare_and_swap(c, c + 1):
                return True

    def runlock(self) -> None:
        """Undo one ``rlock``."""
        r = self._reader_count.add(-1)
        if r < 0:
            if r + 1 == 0 or r + 1 == -_RW_MAX_READERS:
                self._reader_count.add(1)
                raise RuntimeError("sync: RUnlock of unlocked RWMutex")
            if self._reader_wait.add(-1) == 0:
                self._writer_sem.release(1)

    def lock(self) -> None:
        """Lock for writing: waits for active readers to leave."""
        self._w.lock()
        r = self._reader_count.add(-_RW_MAX_READERS) + _RW_MAX_READERS
        if r != 0 and self._reader_wait.add(r) != 0:
            self._writer_sem.acquire(W.RWMUTEX_LOCK)

    def try_lock(self) -> bool:
        """Lock for writing if nobody holds the lock."""
        if not self._w.try_lock():
            return False
        if not self._reader_count.compare_and_swap(0, -_RW_MAX_READERS):
            self._w.unlock()
            return False
        return True

    def unlock(self) -> None:
        """Unlock for writing; RuntimeError if not write-locked."""
        r = self._reader_count.add(_RW_MAX_READERS)
        if r >= _RW_MAX_READERS:
            self._reader_count.add(-_RW_MAX_READERS)
            raise RuntimeError("sync: Unlock of unlocked RWMutex")
        if r > 0:
            self._reader_sem.release(r)
        self._w.unlock()

    def rlocker(self) -> _RLocker:
        """An object whose ``lock``/``unlock`` (and ``with``) take the read lock."""
        return _RLocker(self)

    def __enter__(self) -> RWMutex:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()


class _RLocker:
    __slots__ = ("_rw",)

    def __init__(self, rw: RWMutex) -> None:
        self._rw = rw

    def lock(self) -> None:
        self._rw.rlock()

    def unlock(self) -> None:
        self._rw.runlock()

    def __enter__(self) -> _RLocker:
        self._rw.rlock()
        return self

    def __exit__(self, *exc: object) -> None:
        self._rw.runlock()


class Once:
    """Runs a function exactly once across every P; later callers wait for it to finish."""

    __slots__ = ("_done", "_m")
    __module__ = "csp_mp.sync"

    def __init__(self) -> None:
        self._done = Bool(False)
        self._m = Mutex()

    def do(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` if no call of ``do`` has yet; if it raises, it still counts as done."""
        if self._done.load():
            return
        with self._m:
            if not self._done.load():
                try:
                    fn()
                finally:
                    self._done.store(True)


register_body_call(Once.do)  # fn() is the user's: preemption and Ctrl-C treat it as such


class Cond:
    """A condition variable tied to a locker ``L`` (a Mutex, RWMutex or ``rlocker()``)."""

    __slots__ = ("L", "_waiting", "_sema")
    __module__ = "csp_mp.sync"

    def __init__(self, locker: Any) -> None:
        if not (hasattr(locker, "lock") and hasattr(locker, "unlock")):
            raise TypeError(f"Cond needs a locker with lock() and unlock(), got {locker!r}")
        self.L = locker
        self._waiting = Int64(0)
        self._sema = Sema(0)

    def wait(self) -> None:
        """Unlock ``L``, wait for ``signal``/``broadcast``, lock ``L`` again."""
        current_hub()  # fail early outside the runtime, before touching the lock
        self._waiting.add(1)
        self.L.unlock()
        try:
            self._sema.acquire(W.COND_WAIT)
        finally:
            self.L.lock()

    def signal(self) -> None:
        """Wake one waiting goroutine, if any."""
        while True:
            n = self._waiting.load()
            if n == 0:
                return
            if self._waiting.compare_and_swap(n, n - 1):
                self._sema.release(1)
                return

    def broadcast(self) -> None:
        """Wake every waiting goroutine."""
        n = self._waiting.swap(0)
        if n:
            self._sema.release(n)
