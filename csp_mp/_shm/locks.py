"""Process-shared semaphores and mutexes, created before the Ps start and then sealed.

A :class:`Sem` is a POSIX named semaphore (``multiprocessing``'s ``SemLock`` type, used raw):
posting costs ~23 ns with no waiter and is never lost; acquire+release costs ~33 ns. A process that
is not a fork of the creator can only open it by name, so semaphores are created by one process
(the supervisor) before the others start, handed over by pickling, and their names removed by
:meth:`SemRegistry.seal` once every process holds them. From then on nothing named exists: a
SIGKILL of every process leaves no ``/dev/shm/sem.*`` entry. The raw type is used so that nothing
registers with ``multiprocessing``'s resource tracker (it would unlink the names at its own exit,
and warn about names already gone).

A :class:`ShmLock` is a mutex whose holder may be SIGKILLed. Its owner word in shared memory names
the holding thread while held (``tid << 32 | pid``). A waiter that times out checks the owner: if
that process is dead (or a zombie), the waiter takes the lock over instead of releasing it, under
the lock set's rescue semaphore, and learns it did so (``acquire()`` returns True). The structures
a lock guards do not all commit with one store (a shared channel's send stores a ring's tail,
then the channel's count): what a dead holder left may be torn, so a takeover of a state lock is
counted (``Arena.takeovers``) and the runtime treats the state as suspect (no P replacement).

Both kinds of arena lock (this one and the compiled core's robust mutex, ``NativeLockSet``)
behave alike, and tests check it on both paths:

  - a lock belongs to the thread that took it; ``owner()`` is the holder's process id, 0 if
    free (a snapshot);
  - ``acquire()`` by the thread that holds it raises ``RuntimeError`` ("already held by this
    thread") instead of waiting for ever;
  - ``release()`` by a thread that does not hold it (another thread, another process, or a
    lock that is free) raises ``RuntimeError`` ("does not hold") and changes nothing.

Invariants:
  - owner word of lock i == ``tid << 32 | pid`` of the holder, or 0 between acquire and the
    owner store and between the owner store of 0 and the release (two bytecodes each side).
  - a lock is taken over only under the rescue semaphore, and only if its owner word still reads
    the value that was seen dead and the semaphore is still held: two waiters never both take it.
  - a lock whose owner word reads 0 at every timed-out wait for ``GHOST_AFTER`` seconds belongs to
    a process killed inside one of those two-bytecode windows, and is taken over.

Not handled (documented hazards): a holder whose pid is reused by a new process before a waiter
looks is seen as alive; a process killed while holding the rescue semaphore (a few bytecodes,
only during a rescue) leaves later rescues waiting.
"""

from __future__ import annotations

import _multiprocessing
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from csp_mp._errors import InternalError
from csp_mp._proc import proc
from csp_mp._shm import layout as L
from csp_mp._shm.atomics import LINE, WORD, Words

__all__ = [
    "GHOST_AFTER",
    "LockSet",
    "NativeLockSet",
    "Sem",
    "SemRegistry",
    "ShmLock",
    "pid_alive",
]

_SEMAPHORE = 1  # multiprocessing.synchronize.SEMAPHORE
SEM_VALUE_MAX: int = _multiprocessing.SemLock.SEM_VALUE_MAX
TAKEOVERS_WORD = L.AW_TAKEOVERS  # the arena header word counting takeovers from dead holders
STATE_LOCKS_WORD = L.AW_STATE_LOCKS  # ... and the one with the first lock index they count from
SPIN_TRIES = 200  # non-blocking attempts (~25 us) before a contended acquire sleeps
WAIT_SLICE = 0.05  # seconds between liveness checks of a lock's holder
GHOST_AFTER = 1.0  # seconds of a held lock with owner word 0 before it is taken over
_sem_unlink: Callable[[str], None] = _multiprocessing.sem_unlink


_M32 = (1 << 32) - 1


# A holder stores proc.me.id in the owner word: this thread's ``tid << 32 | pid``, a cache of
# what the OS says of it, which a fork renews for the child's one thread (a P forked from P0
# inherits P0's ShmLock objects: it must record its own pid, not P0's, or a lock it dies
# holding would look held by a living process). (_proc.py's ThreadName)


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def _unlink_all(names: list[str]) -> None:
    for name in names:
        try:
            _sem_unlink(name)
        except OSError:
            pass
    names.clear()


class SemRegistry:
    """The named semaphores one process created; :meth:`seal` removes every name.

    Names still present when the creating process exits normally are removed then too.
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self.sealed = False
        self._finalizer = weakref.finalize(self, _unlink_all, self._names)

    def semaphore(self, value: int = 0, maxvalue: int = SEM_VALUE_MAX) -> Sem:
        """A new counting semaphore, openable by other processes until :meth:`seal`."""
        if self.sealed:
            raise RuntimeError("cannot create a shared semaphore after seal()")
        for _ in range(100):
            name = f"/csp-{os.getpid()}-{os.urandom(6).hex()}"
            try:
                raw = _multiprocessing.SemLock(_SEMAPHORE, value, maxvalue, name, False)
            except FileExistsError:
                continue
            self._names.append(name)
            return Sem(raw, self)
        raise FileExistsError("cannot find a free semaphore name")

    def seal(self) -> None:
        """Remove every name: semaphores already opened keep working; none can be opened again."""
        self.sealed = True
        _unlink_all(self._names)

    @property
    def names(self) -> tuple[str, ...]:
        """The names not yet removed (``/dev/shm/sem.<name>`` on Linux)."""
        return tuple(self._names)


class Sem:
    """A counting semaphore shared between processes. Picklable until its registry is sealed."""

    __slots__ = ("_raw", "_registry", "acquire", "release", "__weakref__")

    def __init__(self, raw: Any, registry: SemRegistry | None) -> None:
        self._raw = raw
        self._registry = registry
        #: acquire(block=True, timeout=None) -> bool (C method).
        self.acquire: Callable[..., bool] = raw.acquire
        #: release(): post once; ValueError if already at the maximum (C method).
        self.release: Callable[[], None] = raw.release

    @property
    def value(self) -> int:
        """The current count (a snapshot)."""
        return int(self._raw._get_value())

    @property
    def maxvalue(self) -> int:
        return int(self._raw.maxvalue)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._registry is not None and self._registry.sealed:
            raise RuntimeError(
                "shared semaphores are sealed: hand them to processes before seal()"
            )
        raw = self._raw
        return (_rebuild_sem, (raw.kind, raw.maxvalue, raw.name))


def _rebuild_sem(kind: int, maxvalue: int, name: str) -> Sem:
    try:
        raw = _multiprocessing.SemLock._rebuild(0, kind, maxvalue, name)
    except FileNotFoundError:
        raise RuntimeError(
            f"shared semaphore {name} was sealed before this process opened it"
        ) from None
    return Sem(raw, None)


class ShmLock:
    """A mutex between processes that survives a holder killed while holding it.

    ``acquire()`` returns True when the lock was taken over from a dead holder: whatever it
    protects may hold that holder's unfinished (never committed) writes.
    """

    __slots__ = ("_sem", "_owner", "_rescue", "_try", "_post", "_q", "_index")

    def __init__(self, sem: Sem, words: Words, owner_word: int, rescue: Sem,
                 index: int = 0) -> None:
        self._index = index
        self._sem = sem
        self._owner = owner_word
        self._rescue = rescue
        self._try = sem.acquire
        self._post = sem.release
        self._q = words.view  # q[i] loads word i, q[i] = v stores it

    def acquire(self) -> bool:
        """Take the lock (any process). True if it was taken over from a dead holder;
        ``RuntimeError`` if this thread holds it already."""
        if self._try(False):
            self._q[self._owner] = proc.me.id  # store; pairs with the load in _slow
            return False
        return self._slow()

    def release(self) -> None:
        """Release the lock (the thread holding it; ``RuntimeError`` from any other)."""
        if self._q[self._owner] != proc.me.id:  # load; this thread's own store if it holds the lock
            raise RuntimeError("release of a shared lock this thread does not hold")
        self._q[self._owner] = 0  # store; pairs with the load in _slow
        self._post()

    def owner(self) -> int:
        """The holder's pid, 0 if free (a snapshot)."""
        return self._q[self._owner] & _M32  # load; pairs with the stores in acquire/release

    def _slow(self) -> bool:
        me = proc.me.id
        if self._q[self._owner] == me:  # load; only this thread stores its own id
            raise RuntimeError("shared lock already held by this thread")
        # Critical sections are a few microseconds long: a short spin usually wins the lock
        # without a sleep, where a sleep costs a cross-core wake-up (tens of microseconds).
        try_ = self._try
        for _ in range(SPIN_TRIES):
            if try_(False):
                self._q[self._owner] = me  # store; pairs with the load below
                return False
        zero_since: float | None = None
        while True:
            if self._sem.acquire(True, WAIT_SLICE):
                self._q[self._owner] = me  # store; pairs with the load below
                return False
            seen = self._q[self._owner]  # load; pairs with the holder's stores
            if seen == 0:
                now = time.monotonic()
                if zero_since is None:
                    zero_since = now
                if now - zero_since < GHOST_AFTER:
                    continue
            else:
                zero_since = None
                if pid_alive(seen & _M32):
                    continue
            taken = self._take_over(seen, me)
            if taken is not None:
                return taken

    def _take_over(self, seen: int, me: int) -> bool | None:
        """Under the rescue semaphore: become the holder in place of the dead one."""
        if not self._rescue.acquire(True, 10.0):
            raise InternalError("rescue lock held for 10 s: a process died during a rescue")
        try:
            if self._q[self._owner] == seen and not self._sem.acquire(False):
                self._q[self._owner] = me  # store; pairs with the loads in _slow
                if self._index >= self._q[STATE_LOCKS_WORD]:  # (arena.py's takeovers)
                    self._q[TAKEOVERS_WORD] += 1  # under the rescue semaphore: one at a time
                return True
            if self._sem.acquire(False):
                self._q[self._owner] = me
                return False
            return None
        finally:
            self._rescue.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockSet:
    """``n`` ShmLocks plus one rescue semaphore; owner words live in a caller's shared region.

    The owner word of lock i is word ``base + i * 8`` (one 64-byte line per lock, so holders of
    different locks never share a line).
    """

    WORDS_PER_LOCK = LINE // WORD
    native = False

    def __init__(self, sems: list[Sem], rescue: Sem, base: int) -> None:
        self._sems = sems
        self._rescue = rescue
        self._base = base
        self.locks: list[ShmLock] = []

    @classmethod
    def create(cls, registry: SemRegistry, n: int, base: int) -> LockSet:
        """Make ``n`` locks (before any other process starts); :meth:`bind` them to the words
        whose index ``base`` starts their owner-word region."""
        sems = [registry.semaphore(1, 1) for _ in range(n)]
        return cls(sems, registry.semaphore(1, 1), base)

    @staticmethod
    def region_bytes(n: int) -> int:
        """Bytes of shared memory the owner words of ``n`` locks need."""
        return n * LINE

    def bind(self, words: Words, region: Any = None) -> None:
        """Attach to the owner words (after unpickling in another process)."""
        step = self.WORDS_PER_LOCK
        self.locks = [
            ShmLock(s, words, self._base + i * step, self._rescue, i)
            for i, s in enumerate(self._sems)
        ]

    def __len__(self) -> int:
        return len(self._sems)

    def lock(self, i: int) -> ShmLock:
        return self.locks[i]

    def lock_for(self, key: int) -> ShmLock:
        """The lock of stripe ``key % n``."""
        return self.locks[key % len(self.locks)]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._sems, self._rescue, self._base)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._sems, self._rescue, self._base = state
        self.locks = []


class NativeLockSet:
    """``n`` robust process-shared mutexes of the compiled core, one per 64-byte line.

    The same interface as :class:`LockSet`; each lock's line holds a pthread mutex instead of an
    owner word, and nothing is named. ``acquire()`` returns True when the lock was taken over
    from a dead holder, as :meth:`ShmLock.acquire` does.
    """

    native = True

    def __init__(self, n: int) -> None:
        self._n = n
        self.locks: list[Any] = []

    @classmethod
    def create(cls, n: int) -> NativeLockSet:
        """Make ``n`` locks; :meth:`init` them once the region is mapped (creator only)."""
        return cls(n)

    region_bytes = staticmethod(LockSet.region_bytes)

    def bind(self, words: Words, region: Any = None) -> None:
        """Attach to the mutexes in ``region`` (a compiled-core Region of the arena)."""
        from csp_mp._shm.native import core

        lock = core().Lock
        self.locks = [lock(region, i) for i in range(self._n)]

    def init(self, region: Any) -> None:
        """Make every line a fresh unlocked mutex (the creator, before any other process maps)."""
        for i in range(self._n):
            region.lock_init(i)

    def __len__(self) -> int:
        return self._n

    def lock(self, i: int) -> Any:
        return self.locks[i]

    def lock_for(self, key: int) -> Any:
        """The lock of stripe ``key % n``."""
        return self.locks[key % self._n]

    def __getstate__(self) -> int:
        return self._n

    def __setstate__(self, state: int) -> None:
        self._n = state
        self.locks = []
