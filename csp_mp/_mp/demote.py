"""Objects of a stopped runtime: P0's shared handles turned back into local objects.

When a runtime stops (its main goroutine returned, a panic, a deadlock, Ctrl-C, ``shutdown()``),
the arena goes with it. A channel, atomic or semaphore that P0's code still holds would then name
memory that no longer exists; with the implicit runtime the next one starts at the next use, and
the object must keep working there (SPEC, "Failure, as the user sees it"). So, once every other P
has stopped and before the arena closes, each handle in P0's registries becomes a local object
holding the state P0 last saw: a channel its buffered values and ``closed`` flag, an ``Int64``
its value, a semaphore its count. Waiters are dropped: their goroutines have stopped. An object
whose state cannot be read any more raises ``RuntimeError`` on every use, naming why.

Invariants:
- Runs on P0 only, after the other Ps were told to stop and killed, before ``Arena.close``.
  No lock is taken: a P killed while holding one would never release it; the words are read as
  the last writer left them.
- Afterwards no object of P0 refers to the arena: the registries are emptied.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .._atomic import Int64
from .._chan.local import LocalState
from .._chan.shared import SharedChan
from .._sync.sema import Sema

STOPPED_MSG = ("this object belonged to a csp_mp runtime that has stopped, and its state could "
               "not be kept: make a new one")


class StoppedState:
    """The state of a channel whose shared state was lost with its runtime."""

    shared = False
    cap = 0
    closed = False

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(STOPPED_MSG)

    def stats(self) -> tuple[int, int, int]:
        raise RuntimeError(STOPPED_MSG)


def local_chan(st: SharedChan) -> LocalState:
    """A local channel state holding what ``st`` buffered, closed if it was."""
    local = LocalState(st.cap)
    if st.cap:
        local.buf = deque()
    n = st._count()
    while n > 0:
        data = st._buf_get()
        if data is None:
            break
        local.buf.append(st.decode(data))
        n -= 1
    local.closed = st.closed
    return local


def demote_all(broker: Any) -> None:
    """Turn every shared handle of this process into a local object (see the module doc)."""
    for ref in list(broker.chans.values()):
        ch = ref()
        if ch is None:
            continue
        st = ch._st
        if not isinstance(st, SharedChan):
            continue
        try:
            ch._st = local_chan(st)
        except Exception:
            ch._st = StoppedState()
    for ref in list(broker.objs.values()):
        obj = ref()
        if isinstance(obj, Int64):
            value = obj.load()
            obj.__class__ = Int64
            obj._v = value
        elif isinstance(obj, Sema):
            word: int = obj.count[2]  # type: ignore[index]  # SharedSema: (b, off, w, ...)
            count = broker.ctx.arena.words.load(word)
            obj.__class__ = Sema
            obj.count = count
            obj.waiters = deque()
    broker.chans.clear()
    broker.dead.clear()  # the arena goes with the runtime: nothing to release
    broker.objs.clear()
