"""The wait-reason table: why a goroutine is parked.

Every ``park()`` names one of these. ``DURABLE`` reasons are those that only another goroutine can
end (a channel partner, a lock holder); a goroutine parked for any other reason (sleep, blocking
call) can be woken by the runtime itself, so it never counts towards a deadlock.
"""

from __future__ import annotations

CHAN_SEND = "chan send"
CHAN_RECV = "chan receive"
SELECT = "select"
SELECT_NO_CASES = "select (no cases)"
NIL_CHAN_SEND = "chan send (nil chan)"
NIL_CHAN_RECV = "chan receive (nil chan)"
SEMACQUIRE = "semacquire"
MUTEX_LOCK = "sync.Mutex.Lock"
RWMUTEX_RLOCK = "sync.RWMutex.RLock"
RWMUTEX_LOCK = "sync.RWMutex.Lock"
WAITGROUP_WAIT = "sync.WaitGroup.Wait"
COND_WAIT = "sync.Cond.Wait"
SLEEP = "sleep"
BLOCKING_CALL = "blocking call"
GOSCHED = "gosched"
WAIT_ALL_BLOCKED = "wait all blocked"
PLAIN_WAIT = "waiting in plain code"  # the implicit main goroutine, see drive.py

# reason -> counts as durably blocked for deadlock detection
TABLE: dict[str, bool] = {
    CHAN_SEND: True,
    CHAN_RECV: True,
    SELECT: True,
    SELECT_NO_CASES: True,
    NIL_CHAN_SEND: True,
    NIL_CHAN_RECV: True,
    SEMACQUIRE: True,
    MUTEX_LOCK: True,
    RWMUTEX_RLOCK: True,
    RWMUTEX_LOCK: True,
    WAITGROUP_WAIT: True,
    COND_WAIT: True,
    SLEEP: False,
    BLOCKING_CALL: False,
    GOSCHED: False,
    WAIT_ALL_BLOCKED: False,  # testing.wait_all_blocked: the idle hub wakes it
    PLAIN_WAIT: False,
}


def is_durable(reason: str) -> bool:
    """True when only another goroutine can end a park for ``reason``."""
    return TABLE.get(reason, True)
