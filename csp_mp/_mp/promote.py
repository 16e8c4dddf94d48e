"""Promotion: a runtime object whose handle is pickled moves into the arena, in place.

Registered as the promoters of ``Chan``, ``Int64`` and ``Sema`` (the only primitives with state;
every sync object, context and errgroup is made of them). Pickling a local object creates its
shared twin, moves its contents (buffered values, waiters, closed flag, count) there, and turns
the local object into a handle on it; unpickling in any process of the runtime yields that
process's one handle for the block.

Shared channels, atomics and semaphores are reference-counted, so that a program making them
per request runs in a fixed arena. The count is a word of the block (a channel's ``_W_REFS``,
``shobj.INT64_REFS``, ``shobj.SEMA_REFS``; changed by atomic adds only), and it counts two
kinds of reference:

- a *handle*: the one ``Chan`` (``Int64``, ``Sema``) of a process for the block, registered
  weakly in ``broker.chans`` (a ``HandleRef``; ``broker.objs``, an ``ObjRef``); 1 from
  promotion for the promoting P's handle;
- a name *in flight*: +1 each time the channel is written into bytes that will travel: the
  codec pickling it (``promote_chan``, once per message: pickle memoizes repeats) or writing it
  as an extension value in a top-level tuple or list (``tasks._chan_name``, counted by
  ``tasks._count_name`` once the bytes exist, once per occurrence), a task frame naming it as
  an extension value (``tasks.plain_items``, counted once the frame exists; in C,
  ``TaskEncoder`` once the frame is complete).

A P that reads a name (``rebuild_chan``, ``tasks._chan_from_ext``) consumes it: with a live
handle already, −1; else the name becomes its new handle's count (+1 −1). A P that takes back
its own frame consumes the names it wrote (``runq.own_entry``, ``tasks.own_frame``); bytes
dropped unread (a select loser's value, a value passed by reference on one P, a destroyed
channel's buffer) are decoded for that purpose by ``codec.discard`` when they name a counted
object. When a handle dies, its weakref callback only queues its ref (``broker.dead``);
``Broker.poll`` (and a send on a shared channel, once its value is on its way) drains the
queue (``release_handles``): −1, and at 0 ``SharedChan.destroy`` ends a channel: the values it
holds are freed, its block and rings kept for the next channel (this P's spares, then the
runtime's pool, where any P takes them) or freed; ``shobj.free_int64_block``/
``free_sema_block`` free an atomic's or a semaphore's block.

On the compiled core, ``Handles`` (``_shm/c/handles.c``) does ``_register``, the common cases
of ``new_handle`` and ``promote_chan_state`` (a block from the spares or the pool, a state this
P cached for it) and the whole of ``release_handles`` but what it hands back to Python
(``Broker._release_slow``), one call each, with the same objects; the Python lines here and in
``Broker.release_handles`` are its specification and the Python path. It reads and sets no
attribute: what it must know of a state it asks ``state_facts``, what it must set ``adopt_state``
does (both given to it at construction).

Invariants:
- At most one live handle per arena block per process (``broker.chans`` / ``broker.objs``).
- A P's state object for a channel block (``broker.chan_states``) serves a new handle only
  while the block's id word is the one it saw (``SharedChan.attach``): a block from the spares
  or the pool keeps its id, one from the allocator gets a new one.
- count = live or queued handles + names in flight, over every process. Whoever adds a name
  holds a handle, so a count of 0 cannot rise again: ``destroy`` runs only from
  ``release_handles``, on the P that dropped the last reference. Consuming a name never reaches
  0 (the consumer holds a handle first).
- A goroutine parked on a shared channel holds its ``Chan``, so a wake-up for a live waiter
  always finds this P's handle (``Broker._chan_state``); no bare state is built for a block
  this P holds no handle on.
- Errors only leak: a name counted but never read keeps its channel until the run ends. That
  is: bytes pickled and dropped by user code; a value whose encoding failed after the channel
  was reduced, or was retried with cloudpickle (counted twice); a stolen frame that fails to
  unpickle; frames, messages and handles lost with a dead P (nothing reclaims them: the arena
  goes with the runtime). A callable's pickled bytes are cached and shipped many times, so a
  channel it captures is pinned (``PIN``) instead of counted; those caches are emptied when the
  runtime changes (``set_broker``: ``proc.forget_arena``), since their bytes name one arena's
  offsets.
- The count word changes only by atomic adds (``Arena.add_word``): the compiled core's
  fetch_add, or on the Python path under the arena's allocator lock, a leaf (a channel's own
  lock is not: a count changes while ``discard`` decodes a value under it).
- Atomics and semaphores follow the same rules through the codec (pickling counts, unpickling
  consumes, ``discard`` decodes what names them); they have no task-frame extension value and
  their blocks are freed, not kept as spares.
- Promotion runs on the owner P without a switch in the middle, so no local waiter can be
  readied halfway through the move.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._atomic import Int64
from .._chan import Chan
from .._chan.chan import _validator
from .._chan.local import _NOQ, LocalState
from .._chan.shared import SharedChan
from .._chan.shared_native import state_class
from .._errors import InternalError
from .._proc import proc
from .._shm import codec
from .._sync.sema import Sema
from . import ctx as C
from .shobj import (
    INT64_REFS,
    SEMA_REFS,
    NativeSharedInt64,
    SharedInt64,
    SharedSema,
    attach_int64,
    attach_sema,
    free_int64_block,
    free_sema_block,
    new_int64_block,
    new_sema_block,
)

#: What an object captured by a callable's cached pickle adds: it is never freed.
PIN = 1 << 40


@contextmanager
def pinning() -> Iterator[None]:
    """Channels pickled inside this block are pinned rather than counted (see the module
    doc): the bytes made here are cached and shipped any number of times (``proc.pinning``
    counts the blocks under way)."""
    proc.pinning += 1
    try:
        yield
    finally:
        proc.pinning -= 1


class HandleRef(weakref.ref):
    """A weak reference to this process's handle on a shared channel; when the handle dies, the
    ref queues itself on ``broker.dead`` for ``Broker.release_handles``."""

    __slots__ = ("off", "st", "drop")  # set by _register (weakref.ref's own constructor)
    off: int
    st: SharedChan
    drop: Any  # consumes one name in flight, which this handle already holds for its P


#: This P's ``HandleRef`` by the 8 bytes naming its channel in task frames (little-endian
#: offset): what a stolen frame's channel argument resolves to without a Python call
#: (``tasks._chan_from_ext``). Kept with ``broker.chans`` by ``_register`` and
#: ``Broker.release_handles``. The runtime object's dict (``proc.names``), never rebound.
names: dict[bytes, HandleRef] = proc.names


class ObjRef(weakref.ref):
    """A weak reference to this process's handle on a shared ``Int64`` or semaphore; when the
    handle dies, the ref queues itself on ``broker.dead`` as a ``HandleRef`` does."""

    __slots__ = ("off", "refs", "free", "live")
    off: int
    refs: int  # byte offset of the block's reference word
    free: Any  # free(arena, off): gives the block back once no reference is left
    live: int  # the P word counting live objects of its kind (ctx.LIVE_KINDS)

    def __new__(cls, obj: Any, dead: list, off: int, refs: int, free: Any,
                live: int) -> ObjRef:
        self = super().__new__(cls, obj, dead.append)
        self.off = off
        self.refs = refs
        self.free = free
        self.live = live
        return self

    def __init__(self, obj: Any, dead: list, off: int, refs: int, free: Any,
                 live: int) -> None:
        super().__init__(obj, dead.append)


def state_facts(st: SharedChan) -> tuple[int, int, bool]:
    """What the compiled core's ``Handles`` knows of this P's state of a channel: its block's
    offset, the id word it saw there, whether the channel is untyped."""
    return st.off, st.uid, st.codec is None


def adopt_state(ch: Chan | None, st: SharedChan, cap: int) -> Chan:
    """``Handles``' promotion and attach: ``st``, this P's cached state of a block now a live
    channel of capacity ``cap``, made the state of ``ch`` (a local channel being promoted), or
    of a new untyped handle when ``ch`` is None, which it returns (registered by the caller)."""
    st.cap = cap
    if ch is None:
        ch = Chan.__new__(Chan)
        ch._type = None
        ch._check = None
    ch._st = st
    return ch


def _register(broker: Any, ch: Chan, st: SharedChan) -> None:
    """Make ``ch`` this P's handle on the channel of ``st`` (the compiled core's
    ``Handles.register`` when it runs; these lines are its specification)."""
    if broker.handles is not None:
        broker.handles.register(ch, st)
        return
    ref = HandleRef(ch, broker.dead.append)
    ref.off = st.off
    ref.st = st
    ref.drop = st.drop_name
    broker.chans[st.off] = ref
    names[st.key] = ref


def set_broker(broker: Any) -> None:
    """Install (or clear) this process's broker, and with it the promoters: a Chan, an Int64 or
    a Sema pickles only while a multi-P runtime runs. Bytes cached by a previous runtime name
    blocks of its arena, never of this one, so their caches are emptied."""
    proc.broker = broker
    proc.forget_arena()
    if broker is None:
        proc.promote_chan = proc.promote_int64 = proc.promote_sema = None
        return
    proc.promote_chan = promote_chan
    proc.promote_int64 = promote_int64
    proc.promote_sema = promote_sema
    codec.set_ref_markers(rebuild_chan.__name__.encode(), _rebuild_int64.__name__.encode(),
                          _rebuild_sema.__name__.encode())


def _broker() -> Any:
    b = proc.broker  # installed and cleared with the process's context (procs.py)
    if b is None:
        raise TypeError("csp_mp channels, sync objects and atomics can only be pickled inside "
                        "a multi-process runtime (run(..., procs>1))")
    return b


def _arena_full(broker: Any, exc: MemoryError) -> MemoryError:
    """What to say when promoting an object finds the arena full."""
    mib = broker.ctx.arena.size >> 20
    return MemoryError(
        f"{exc}: the shared-memory arena ({mib} MiB) is full. A channel, atomic or sync "
        "object shared between Ps is freed once no goroutine can reach it (one captured by "
        "a function that go() ships only when the run ends): keep fewer of them alive at "
        "once, or set CSP_MP_ARENA_MB higher")


# ---------------------------------------------------------------- channels


def promote_chan(ch: Chan) -> tuple:
    """The codec's reduction of a channel: counts the name it writes (see the module doc)."""
    off = chan_offset(ch)
    st: Any = ch._st
    if proc.pinning:
        pin(proc.broker, st.add_refs(PIN), "chan")
    else:
        st.add_refs(1)
    return (rebuild_chan, (off, ch._type))


def pin(broker: Any, count: int, kind: str) -> None:
    """An object just pinned, its count now ``count``: the first pin of it counts it among
    the runtime's pinned objects (kept until the run ends; ``runtime.metrics()`` and the leak
    checks tell them apart)."""
    if count < 2 * PIN:
        broker.ctx.live_add(C.PINNED_KINDS[kind], 1)


def chan_offset(ch: Chan) -> int:
    """The arena offset of ``ch``'s shared block, promoting it first if it is still local."""
    st: Any = ch._st
    if st.shared and st.broker is proc.broker:
        return int(st.off)
    return promote_chan_state(ch).off


def adopt_block(broker: Any, ch: Chan, off: int, cap: int) -> SharedChan:
    """Make the pool's block ``off`` (taken by ``Handles.promote``) the shared state of the
    untyped local channel ``ch``, which has nothing buffered or waiting."""
    shared = state_class(broker.arena).reopen(broker, off, cap)
    ch._st = shared
    broker.handles.register(ch, shared)
    return shared


def promote_chan_state(ch: Chan) -> SharedChan:
    """The shared state of ``ch``, promoting it first if it is still local."""
    st = ch._st
    broker = proc.broker
    if broker is None:
        broker = _broker()  # raises
    if isinstance(st, LocalState):  # or a subclass: the cluster's exported channels
        h = broker.handles
        if h is not None and ch._type is None and not (st.buf or st.sendq or st.recvq
                                                        or st.closed):
            got = h.promote(ch, st.cap)  # create's first cases and _register, in one call
            if type(got) is int:  # a block from the pool, which this P has no state for
                return adopt_block(broker, ch, got, st.cap)
            if got is not None:
                return got
        try:
            shared = state_class(broker.arena).create(broker, st.cap, ch._type)
        except MemoryError as exc:
            raise _arena_full(broker, exc) from exc
        if st.buf or st.sendq or st.recvq or st.closed:
            _move_chan(broker, st, shared)
        ch._st = shared
        if broker.handles is not None:  # the count of 1 create() set
            broker.handles.register(ch, shared)
        else:
            _register(broker, ch, shared)
        return shared
    if not isinstance(st, SharedChan):
        raise InternalError(f"cannot promote a channel whose state is {type(st).__name__}")
    return st


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
    if st.buf:
        st.buf.clear()
    st.sendq = st.recvq = _NOQ
    del hub


def rebuild_chan(off: int, tp: Any) -> Chan:
    """This P's handle on the shared channel at ``off`` (one handle per channel and P), from a
    name in flight, which it consumes (see the module doc)."""
    b = proc.broker
    ref = b.chans.get(off) if b is not None else None
    if ref is not None:  # the common case, looked up before the runtime check below
        ch = ref()
        if ch is not None:
            ref.drop()  # its handle keeps one
            return ch
    return new_handle(off, tp)


def new_handle(off: int, tp: Any) -> Chan:
    """A new handle of this P on the shared channel at ``off``, which has none here; a name
    read becomes its count (see the module doc)."""
    broker = proc.broker
    if broker is None:
        broker = _broker()  # raises
    if tp is None and broker.handles is not None:
        ch = broker.handles.attach_new(off.to_bytes(8, "little"))  # attach's first case
        if ch is not None:
            return ch
    # ValueError if the block holds no channel
    st = state_class(broker.arena).attach(broker, off, tp)
    ch = Chan.__new__(Chan)
    ch._st = st
    ch._type = tp
    ch._check = _validator(tp) if tp is not None else None
    _register(broker, ch, st)
    return ch


# ---------------------------------------------------------------- atomics and semaphores


def _count_name(broker: Any, refs: int, kind: str) -> None:
    """A name of a counted object written into bytes that will travel (see the module doc)."""
    if proc.pinning:
        pin(broker, broker.ctx.arena.add_word(refs, PIN), kind)
    else:
        broker.ctx.arena.add_word(refs, 1)


def _handle(broker: Any, off: int) -> Any:
    """This process's live handle on the atomic or semaphore at ``off``, or None."""
    ref = broker.objs.get(off)
    return ref() if ref is not None else None


def _register_obj(broker: Any, obj: Any, off: int, refs_word: int, free: Any) -> None:
    live = C.P_LIVE_INT64 if free is free_int64_block else C.P_LIVE_SEMA
    broker.objs[off] = ObjRef(obj, broker.dead, off, off + refs_word * 8, free, live)


def promote_int64(obj: Int64) -> tuple:
    """The codec's reduction of an ``Int64``: promotes it if it is still local, then counts the
    name it writes (see the module doc)."""
    broker = _broker()
    if not isinstance(obj, (SharedInt64, NativeSharedInt64)):
        try:
            off = new_int64_block(broker, obj._v)
        except MemoryError as exc:
            raise _arena_full(broker, exc) from exc
        attach_int64(obj, broker, off)
        _register_obj(broker, obj, off, INT64_REFS, free_int64_block)  # create()'s count
        broker.ctx.live_add(C.P_LIVE_INT64, 1)
    off = obj._v[3]
    _count_name(broker, off + INT64_REFS * 8, "int64")
    return (_rebuild_int64, (off,))


def _rebuild_int64(off: int) -> Int64:
    """This P's handle on the shared Int64 at ``off``, from a name it consumes."""
    broker = _broker()
    obj = _handle(broker, off)
    if obj is not None:
        broker.ctx.arena.add_word(off + INT64_REFS * 8, -1)  # its handle keeps one
        return obj
    obj = Int64.__new__(Int64)
    attach_int64(obj, broker, off)
    _register_obj(broker, obj, off, INT64_REFS, free_int64_block)  # the name becomes its count
    return obj


def promote_sema(obj: Sema) -> tuple:
    """The codec's reduction of a ``Sema``: promotes it (its waiters included) if it is still
    local, then counts the name it writes."""
    broker = _broker()
    if not isinstance(obj, SharedSema):
        waiters = list(obj.waiters)
        try:
            off = new_sema_block(broker, obj.count)
        except MemoryError as exc:
            raise _arena_full(broker, exc) from exc
        limit = obj.limit
        attach_sema(obj, broker, off, limit)
        _b, _off, w, lock, ring = obj.count
        from .._chan.block import grow
        from .shobj import _rec

        with lock:
            for g in waiters:
                raw = _rec((broker.ctx.p, g.id))
                if not ring.put_locked(raw):  # more waiters than the ring holds: it doubles
                    ring = grow(broker.ctx.arena, ring, w + 2, raw)
        obj.count = obj.count[:4] + (ring,)
        _register_obj(broker, obj, off, SEMA_REFS, free_sema_block)
        broker.ctx.live_add(C.P_LIVE_SEMA, 1)
    off = obj.count[1]
    _count_name(broker, off + SEMA_REFS * 8, "sema")
    return (_rebuild_sema, (off, obj.limit))


def _rebuild_sema(off: int, limit: int) -> Sema:
    """This P's handle on the shared semaphore at ``off``, from a name it consumes."""
    broker = _broker()
    obj = _handle(broker, off)
    if obj is not None:
        broker.ctx.arena.add_word(off + SEMA_REFS * 8, -1)
        return obj
    obj = Sema.__new__(Sema)
    attach_sema(obj, broker, off, limit)
    _register_obj(broker, obj, off, SEMA_REFS, free_sema_block)
    return obj

