"""Promotion: a runtime object whose handle is pickled moves into the arena, in place.

Registered as the promoters of ``Chan``, ``Int64`` and ``Sema`` (the only primitives with state;
every sync object, context and errgroup is made of them). Pickling a local object creates its
shared twin, moves its contents (buffered values, waiters, closed flag, count) there, and turns
the local object into a handle on it; unpickling in any process of the runtime yields that
process's one handle for the block.

Invariants:
- At most one handle per arena block per process (``broker.chans`` / ``broker.objs``).
- Promotion runs on the owner P without a switch in the middle, so no local waiter can be
  readied halfway through the move.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._atomic import Int64
from .._chan import Chan
from .._chan.chan import _validator
from .._chan.local import LocalState
from .._chan.shared import SharedChan
from .._errors import InternalError
from .._sync.sema import Sema
from . import ctx as C
from .shobj import (
    NativeSharedInt64,
    SharedInt64,
    SharedSema,
    attach_int64,
    attach_sema,
    new_int64_block,
    new_sema_block,
)

_brokers: list[Any] = [None]


#: Untyped channel handles by the 8 bytes naming them in task frames (this runtime's only).
ext_chans: dict[bytes, Chan] = {}


def set_broker(broker: Any) -> None:
    """Install (or clear) this process's broker."""
    _brokers[0] = broker
    ext_chans.clear()


def _broker() -> Any:
    b = _brokers[0]
    if b is None or C.current() is None:
        raise TypeError("csp_mp channels, sync objects and atomics can only be pickled inside "
                        "a multi-process runtime (run(..., procs>1))")
    return b


@contextmanager
def _arena_room(broker: Any) -> Iterator[None]:
    """Say what to do when promoting an object finds the arena full."""
    try:
        yield
    except MemoryError as exc:
        mib = broker.ctx.arena.size >> 20
        raise MemoryError(
            f"{exc}: the shared-memory arena ({mib} MiB) is full. Channels, atomics and sync "
            "objects shared between Ps are freed only when the run ends: share fewer of them "
            "(reuse a reply channel rather than making one per task), or set CSP_MP_ARENA_MB "
            "higher") from exc


# ---------------------------------------------------------------- channels


def promote_chan(ch: Chan) -> tuple:
    return (rebuild_chan, (chan_offset(ch), ch._type))


def chan_offset(ch: Chan) -> int:
    """The arena offset of ``ch``'s shared block, promoting it first if it is still local."""
    st = ch._st
    if type(st) is SharedChan and st.broker is _brokers[0]:
        return st.off
    broker = _broker()
    if isinstance(st, LocalState):
        with _arena_room(broker):
            shared = SharedChan.create(broker, st.cap, ch._type)
        _move_chan(broker, st, shared)
        ch._st = shared
        broker.chans[shared.off] = ch
        return shared.off
    if not isinstance(st, SharedChan):
        raise InternalError(f"cannot promote a channel whose state is {type(st).__name__}")
    return st.off


def _move_chan(broker: Any, st: LocalState, shared: SharedChan) -> None:
    hub = broker.hub
    with shared.lock:
        for v in st.buf:
            shared._buf_put(shared.encode(v))
        shared._set_count(len(st.buf))
        for is_send, q in ((True, st.sendq), (False, st.recvq)):
            for w in q:
                sel = w.sel
                if sel is not None and sel.done:
                    continue
                slot = gen = -1
                if sel is not None:
                    tok = sel.token or broker.new_token(w.g, sel)
                    slot, gen = tok.slot, tok.gen
                data = shared.encode(w.elem) if is_send else None
                shared.enqueue_l(is_send, data, w.g.id, slot, max(gen, 0), w.case)
        if st.closed:
            shared.mark_closed_l()
    st.buf.clear()
    st.sendq.clear()
    st.recvq.clear()
    del hub


def rebuild_chan(off: int, tp: Any) -> Chan:
    """This P's handle on the shared channel at ``off`` (one handle per channel and P)."""
    b = _brokers[0]
    ch = b.chans.get(off) if b is not None else None
    if ch is not None:  # the common case, looked up before the runtime check below
        return ch
    broker = _broker()
    ch = broker.chans.get(off)
    if ch is not None:
        return ch
    ch = Chan.__new__(Chan)
    ch._st = SharedChan(broker, off, tp)
    ch._type = tp
    ch._check = _validator(tp) if tp is not None else None
    broker.chans[off] = ch
    return ch


# ---------------------------------------------------------------- atomics and semaphores


def promote_int64(obj: Int64) -> tuple:
    broker = _broker()
    if not isinstance(obj, (SharedInt64, NativeSharedInt64)):
        with _arena_room(broker):
            off = new_int64_block(broker, obj._v)
        attach_int64(obj, broker, off)
        broker.objs[off] = obj
    return (_rebuild_int64, (obj._v[3],))


def _rebuild_int64(off: int) -> Int64:
    broker = _broker()
    obj = broker.objs.get(off)
    if obj is None:
        obj = Int64.__new__(Int64)
        attach_int64(obj, broker, off)
        broker.objs[off] = obj
    return obj


def promote_sema(obj: Sema) -> tuple:
    broker = _broker()
    if not isinstance(obj, SharedSema):
        waiters = list(obj.waiters)
        with _arena_room(broker):
            off = new_sema_block(broker, obj.count)
        limit = obj.limit
        attach_sema(obj, broker, off, limit)
        _b, _off, _w, lock, ring = obj.count
        from .shobj import _rec

        with lock:
            for g in waiters:
                ring.put_locked(_rec((broker.ctx.p, g.id)))
        broker.objs[off] = obj
    return (_rebuild_sema, (obj.count[1], obj.limit))


def _rebuild_sema(off: int, limit: int) -> Sema:
    broker = _broker()
    obj = broker.objs.get(off)
    if obj is None:
        obj = Sema.__new__(Sema)
        attach_sema(obj, broker, off, limit)
        broker.objs[off] = obj
    return obj


def install() -> None:
    """Register the promoters with the lower layers (at import of ``_mp``)."""
    from .. import _atomic, _chan
    from .._sync import sema

    _chan.set_promoter(promote_chan)
    _atomic.set_promoter(promote_int64)
    sema.set_promoter(promote_sema)
