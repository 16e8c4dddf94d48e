"""A channel shared by every P: Go's ``hchan`` laid out in the arena.

``SharedChan`` is the state a ``Chan`` holds once promoted: the same protocol as ``LocalState``
plus the locked operations a select drives; ``NativeSharedChan`` (``shared_native.py``) runs its
fast paths in one call of the compiled core, and ``shared_native.state_class`` says which of the
two a run uses. The block's words, its waiter records and the spare blocks are in
``block.py``; what the channel asks of processes (this P's number, the arena, lock stripes,
select tokens, wake-ups for goroutines of other Ps) is the ``ProcLayer`` of ``proclayer.py``,
which the ``_mp`` layer's broker implements. Imports: ``_hub``, ``_shm``, ``_errors``, and
``local``, ``block``, ``proclayer`` of ``_chan``.

Invariants:
- Everything in the block (the three rings, ``closed``, ``count``) is read and written only under
  the channel's ShmLock. The lock is a leaf except for token locks (taken in
  ``ProcLayer.claim``), which may be taken under it.
- A record is live while its token is WAITING (plain records always are until popped). Dead
  records are skipped and dropped when reached, or compacted away when a queue is full or its
  stats are read: select losers are searched for only when their value holds arena blocks (the
  select's pass 3, ``drop_dead_senders``). Dropping a dead record frees its value's blocks.
- At least one of recvq and sendq holds no live record; ``count <= cap``; ``count > 0`` implies
  no live receiver.
- Wake-ups found under the lock are delivered (``ProcLayer.deliver``) after releasing it, so a
  channel lock is never held while writing another P's inbox.
- A destroyed block whose rings kept a new channel's sizes goes, rings and all, to this P's
  ``spare_states`` or the runtime's ``SparePool``, where the next channel takes it; it keeps its
  id there. The allocator gives a block a new id each time it hands it out, so a P's state
  object for an offset (``ProcLayer.chan_states``: its rings, lock and compiled fast paths)
  serves again exactly while the id is the same (``SharedChan.attach``).
"""

from __future__ import annotations

import functools
from typing import Any

from .._errors import ClosedChannelError
from .._hub import waits as W
from .._shm import Ring, TypedCodec, attach_ring, decode, discard, encode
from .._shm.layout import CHAN_BUF_CAP_MAX
from .block import (
    _BUF_BYTES,
    _MAGIC,
    _NWORD,
    _OWN_SPARES,
    _W_BUF,
    _W_CAP,
    _W_CLOSED,
    _W_COUNT,
    _W_GROWN,
    _W_ID,
    _W_LOCK,
    _W_MAGIC,
    _W_NRECV,
    _W_NSEND,
    _W_RECVQ,
    _W_REFS,
    _W_SENDQ,
    _rec,
    _unrec,
    compact,
    grow,
    new_block,
    reopen_block,
    retire_block,
)
from .local import CLOSED
from .proclayer import K_CLOSED_RECV, K_CLOSED_SEND, K_SENT, K_VALUE, NO_OBJ, ProcLayer

_STATES_MAX = 4096  # a P's cached state objects (chan_states) before it drops them all


class SharedChan:
    """The state of a promoted channel; the same protocol as ``LocalState`` plus locked ops."""

    shared = True
    __slots__ = ("broker", "off", "key", "cap", "lock", "lock_index", "_rings", "_w", "uid",
                 "_q", "_arena", "_buf", "codec", "handle", "drop_name", "add_name",
                 "__weakref__")

    def __init__(self, broker: ProcLayer[SharedChan], off: int, tp: Any = None) -> None:
        self.broker = broker
        self.off = off
        self.key = off.to_bytes(8, "little")  # how task frames name it (_mp's names)
        arena = broker.arena
        w = off // 8
        self._w = w
        self._arena = arena
        self._q = arena.words.view  # q[i] loads word i, q[i] = v stores it
        self._buf: Ring | None = None  # the buffer ring as last attached (see _queue)
        if self._q[w + _W_MAGIC] != _MAGIC:
            raise ValueError(f"no shared channel at arena offset {off}")
        self.cap = self._q[w + _W_CAP]
        self.uid = self._q[w + _W_ID]
        self.lock_index = self._q[w + _W_LOCK]
        self.lock = arena.locks.lock(self.lock_index)
        self._rings: dict[int, Ring] = {}
        self.codec = TypedCodec(tp, arena) if tp is not None else None
        #: What the process layer caches to name this channel in its messages (opaque here).
        self.handle: Any = None
        #: Takes one from the reference word and returns the count it had (one C call on the
        #: compiled core): consumes a name in flight, or drops a handle's count.
        self.drop_name = self.refs_dropper()
        #: Adds one to the reference word: a name of the channel written into bytes that travel.
        fetch_add = arena.core.fetch_add if arena.core is not None else arena.fetch_add
        self.add_name = functools.partial(fetch_add, off + _W_REFS * 8, 1)

    @classmethod
    def attach(cls, broker: ProcLayer[SharedChan], off: int, tp: Any = None) -> SharedChan:
        """This P's state for the channel at ``off``: the object it made for the block before
        while the block keeps that id (its rings, lock and fast paths serve again), else a new
        one (ValueError if the block holds no channel). Owner P, with no live handle on it."""
        st = broker.chan_states.get(off)
        if st is not None:
            q, w = st._q, st._w
            if (st.uid == q[w + _W_ID] and q[w + _W_MAGIC] == _MAGIC
                    and (st.codec.type if st.codec is not None else None) == tp):
                st.cap = q[w + _W_CAP]
                return st
        st = cls(broker, off, tp)
        states = broker.chan_states
        if len(states) >= _STATES_MAX:
            states.clear()
        states[off] = st
        return st

    @classmethod
    def reopen(cls, broker: ProcLayer[SharedChan], off: int, cap: int,
               tp: Any = None) -> SharedChan:
        """The ended channel block ``off``, taken from the pool, made a new channel of
        capacity ``cap`` with one reference (its creator's handle)."""
        arena = broker.arena
        reopen_block(arena, off, cap, broker.live_word)
        st = broker.chan_states.get(off)
        if (st is not None and st.uid == arena.words.view[off // 8 + _W_ID] and tp is None
                and st.codec is None):  # this P's state for the block: attach's fast case
            st.cap = cap
            return st
        return cls.attach(broker, off, tp)

    @classmethod
    def create(cls, broker: ProcLayer[SharedChan], cap: int, tp: Any = None) -> SharedChan:
        """A new, empty shared channel (any P): a spare block with the buffer ring the capacity
        wants when the pool has one (no ring made), else a new block."""
        arena = broker.arena
        buf_bytes = _BUF_BYTES[min(cap, CHAN_BUF_CAP_MAX)]
        own = broker.spare_states.get(buf_bytes)
        if own:  # a block this P destroyed, with its state object
            st = own.pop()
            reopen_block(arena, st.off, cap, broker.live_word)
            broker.chan_states[st.off] = st
            st.cap = cap
            if (st.codec.type if st.codec is not None else None) == tp:
                return st
            return cls.attach(broker, st.off, tp)
        off = broker.spares.take(buf_bytes)
        if off is not None:
            return cls.reopen(broker, off, cap, tp)
        off = new_block(arena, cap, buf_bytes, broker.chan_lock_index(), broker.spares.new_id(),
                        broker.live_word)
        return cls.attach(broker, off, tp)

    def refs_dropper(self) -> Any:
        """A call taking one from the reference word and returning the count it had: one C
        call when the compiled core runs (``drop_name``)."""
        arena = self._arena
        fetch_add = arena.core.fetch_add if arena.core is not None else arena.fetch_add
        return functools.partial(fetch_add, self.off + _W_REFS * 8, -1)

    def add_refs(self, d: int) -> int:
        """Add ``d`` to the channel's reference word and return the new count (any P; an
        atomic add: the compiled core's fetch_add, else under the arena's allocator lock, a
        leaf, because counts change while channel locks are held)."""
        return self._arena.add_word(self.off + _W_REFS * 8, d)

    def destroy(self) -> None:
        """Free every value the channel still holds (buffered values, parked senders' values)
        and its block with its rings, or keep those, emptied, for the next channel: first
        this P's (``spare_states``), then any P's (the pool). No process may use the channel
        afterwards: the caller has seen its last handle and in-flight reference go."""
        q, w = self._q, self._w
        lw = self.broker.live_word
        q[lw] = (q[lw] - 1) & 0xFFFF_FFFF_FFFF_FFFF  # this P's live channels (owner P only)
        if not retire_block(self._arena, self.off):
            with self.lock:
                self._empty_l()
                q[w + _W_MAGIC] = 0
            if q[w + _W_GROWN]:
                self._free()
                return
        broker = self.broker
        buf_bytes = _BUF_BYTES[min(self.cap, CHAN_BUF_CAP_MAX)]
        own = broker.spare_states.get(buf_bytes)
        if own is None:
            own = broker.spare_states[buf_bytes] = []
        if len(own) < _OWN_SPARES:
            own.append(self)
        elif not broker.spares.give(buf_bytes, self.off):
            self._free()

    def _free(self) -> None:
        """Give the ended channel's block and rings back to the allocator."""
        self.broker.chan_states.pop(self.off, None)
        for wi in (_W_BUF, _W_RECVQ, _W_SENDQ):
            self._queue(wi).destroy()
        self._rings.clear()
        self._buf = None
        self._arena.decref(self.off)

    def _empty_l(self) -> None:
        """Drop every buffered value and record, freeing what the values hold (under the
        lock)."""
        arena = self._arena
        while (data := self._queue(_W_BUF).get_locked()) is not None:
            discard(data, arena)
        while (raw := self._queue(_W_SENDQ).get_locked()) is not None:
            data = _unrec(raw)[5]
            if data is not None:
                discard(data, arena)
        while self._queue(_W_RECVQ).get_locked() is not None:
            pass  # dead select records: a reused block starts with no waiter
        q, w = self._q, self._w
        q[w + _W_COUNT] = q[w + _W_NSEND] = q[w + _W_NRECV] = 0

    # ---- encoding

    def encode(self, v: Any) -> bytes:
        """Serialize ``v`` (TypeError naming the type, before any state is touched)."""
        if self.codec is not None:
            return self.codec.encode(v)
        return encode(v, self._arena)

    def drop(self, data: bytes) -> None:
        """Free the out-of-band blocks of ``data``, an encoded value no one will decode."""
        discard(data, self._arena)

    def decode(self, data: bytes) -> Any:
        if self.codec is not None:
            return self.codec.decode(data)
        return decode(data, self._arena)

    # ---- words (all under self.lock)

    @property
    def closed(self) -> bool:
        return self._q[self._w + _W_CLOSED] != 0  # load; a snapshot outside the lock

    def _count(self) -> int:
        return self._q[self._w + _W_COUNT]

    def _set_count(self, n: int) -> None:
        self._q[self._w + _W_COUNT] = n

    def mark_closed_l(self) -> None:
        """Record the channel as closed (promotion of a closed channel; under the lock)."""
        self._q[self._w + _W_CLOSED] = 1

    def _pop_live(self, wi: int) -> tuple | None:
        """The oldest live record of queue ``wi`` (claimed for completion), dropping dead ones.

        A record is claimed only once ``ProcLayer.owe`` has set this P's ``P_OWES`` word,
        which stays set until the wake-up is in the waiter's P's inbox (the compiled core's
        hand-off does the same, ``c/wake.c``): a P killed between the claim and the wake-up is
        not replaced. When no waiter of another P was won, the word is given back.
        """
        nw = self._w + _NWORD[wi]
        if not self._q[nw]:
            return None
        q = self._queue(wi)
        broker = self.broker
        owed = broker.owe()  # whether this call set P_OWES
        while True:
            raw = q.get_locked()
            if raw is None:
                self._q[nw] = 0
                if owed:
                    broker.owe_cancel()
                return None
            self._q[nw] = self._q[nw] - 1
            rec = _unrec(raw)
            if (broker.plain_live(rec[0], rec[1]) if rec[2] < 0
                    else broker.claim(rec[0], rec[2], rec[3], rec[4])):
                if owed and rec[0] == broker.p:  # a goroutine of this P: nothing is owed
                    broker.owe_cancel()
                return rec
            if rec[5] is not None:
                discard(rec[5], self._arena)

    def _queue(self, wi: int) -> Ring:
        """The wait queue in word ``wi`` (it moves when it grows; under the lock)."""
        off = self._q[self._w + wi]
        q = self._rings.get(wi)
        if q is None or q.offset != off:
            q = self._rings[wi] = attach_ring(self._arena, off)
            if wi == _W_BUF:
                self._buf = q
        return q

    @property
    def recvq(self) -> Ring:
        return self._queue(_W_RECVQ)

    @property
    def sendq(self) -> Ring:
        return self._queue(_W_SENDQ)

    def _put(self, wi: int, rec: tuple) -> None:
        q = self._queue(wi)
        raw = _rec(rec)
        if not q.put_locked(raw):
            compact(self._arena, q, self.broker.token_live)
            if not q.put_locked(raw):
                self._rings[wi] = q = grow(self._arena, q, self._w + wi, raw)
                self._q[self._w + _W_GROWN] = 1
        self._q[self._w + _NWORD[wi]] = len(q)

    # ---- locked operations (caller holds self.lock); wakes are appended to ``wakes``

    def try_send_l(self, data: bytes, wakes: list, obj: Any = NO_OBJ) -> bool:
        if self._q[self._w + _W_CLOSED]:
            raise ClosedChannelError("send on closed channel")
        rec = self._pop_live(_W_RECVQ)
        if rec is not None:
            wakes.append((rec, K_VALUE, data, obj))
            return True
        n = self._q[self._w + _W_COUNT]
        if n < self.cap:
            self._buf_put(data)
            self._q[self._w + _W_COUNT] = n + 1
            return True
        return False

    def _buf_put(self, data: bytes) -> None:
        """Buffer ``data``. The ring holds ``cap`` values of any size: it grows when its bytes
        run out first (a value too big for it goes to its own block, as rings do)."""
        q = self._queue(_W_BUF)
        if not q.put_locked(data):
            self._rings[_W_BUF] = self._buf = grow(self._arena, q, self._w + _W_BUF, data)
            self._q[self._w + _W_GROWN] = 1

    def _buf_get(self) -> bytes | None:
        return self._queue(_W_BUF).get_locked()

    def try_recv_l(self, wakes: list) -> tuple[bool, bytes | None, bool]:
        rec = self._pop_live(_W_SENDQ)
        if rec is not None:
            wakes.append((rec, K_SENT, None, NO_OBJ))
            if self.cap == 0:
                return True, rec[5], True
            data = self._buf_get()
            self._buf_put(rec[5])
            return True, data, True
        n = self._q[self._w + _W_COUNT]
        if n > 0:
            self._q[self._w + _W_COUNT] = n - 1
            return True, self._buf_get(), True
        if self._q[self._w + _W_CLOSED]:
            return True, None, False
        return False, None, False

    def enqueue_l(self, is_send: bool, data: bytes | None, gid: int, slot: int, gen: int,
                  case: int) -> None:
        self._put(_W_SENDQ if is_send else _W_RECVQ, (self.broker.p, gid, slot, gen, case, data))

    def flush(self, wakes: list) -> None:
        """Deliver the wake-ups gathered under the lock (after releasing it).

        Each waiter was claimed: its wake-up must not be lost. When ``deliver`` raises (a
        signal handler's ``KeyboardInterrupt``, a ``MemoryError``), it is tried once more and
        the rest are delivered all the same; then the first exception is raised, or, when a
        wake-up could not be delivered at all, a ``RuntimeError`` saying so (from it). The
        compiled core's hand-off does the same (``c/wake.c``: ``peers_wake``).
        """
        deliver = self.broker.deliver
        try:
            for rec, kind, data, obj in wakes:
                deliver(rec[0], rec[1], rec[2], rec[3], rec[4], kind, data, self, obj)
        except BaseException as exc:
            self._flush_failed(wakes, rec, exc)

    def _flush_failed(self, wakes: list, rec: tuple, exc: BaseException) -> None:
        """``flush`` after the ``deliver`` of the wake-up of ``rec`` raised ``exc``: that one
        tried again, the rest delivered; then the first exception raised, or the first lost
        wake-up's ``RuntimeError``."""
        i = next(j for j, w in enumerate(wakes) if w[0] is rec)
        first: BaseException = exc
        lost: BaseException | None = None
        failed: BaseException | None = exc
        for rec, kind, data, obj in wakes[i:]:
            if failed is None:
                try:
                    self.broker.deliver(rec[0], rec[1], rec[2], rec[3], rec[4], kind, data,
                                        self, obj)
                    continue
                except BaseException as e:
                    failed = e
            err = self._deliver_again(rec, kind, data, obj, failed)
            if err is not failed and lost is None:
                lost = err
            failed = None
        raise lost if lost is not None else first

    def _deliver_again(self, rec: tuple, kind: int, data: bytes | None, obj: Any,
                       exc: BaseException) -> BaseException:
        """A claimed waiter's wake-up whose ``deliver`` raised ``exc``: tried once more; what
        its caller raises (``exc``, or the ``RuntimeError`` of a lost wake-up)."""
        try:
            self.broker.deliver(rec[0], rec[1], rec[2], rec[3], rec[4], kind, data, self, obj)
        except BaseException:
            lost = RuntimeError(f"a wake-up for goroutine {rec[1]} of P {rec[0]} was lost: its "
                                f"wait completed (claimed) and the wake-up could not be "
                                f"delivered")
            lost.__cause__ = exc
            return lost
        return exc

    # ---- blocking operations (the Chan methods)

    def send(self, v: Any, hub: Any) -> None:
        # self.encode inlined: the call (or a functools.partial) costs ~0.5 us a send+recv here
        data = encode(v, self._arena) if self.codec is None else self.codec.encode(v)
        hub.n_xops += 1  # runtime.metrics()
        hub.n_xbytes += len(data)
        lock = self.lock
        lock.acquire()
        # Fast path, the common case of a busy channel: open, no receiver waiting, room in the
        # buffer. The same steps as try_send_l, without its calls.
        q, w = self._q, self._w
        if not q[w + _W_CLOSED] and not q[w + _W_NRECV]:
            n = q[w + _W_COUNT]
            if n < self.cap:
                b = self._buf
                if b is not None and b.offset == q[w + _W_BUF] and b.put_locked(data):
                    q[w + _W_COUNT] = n + 1
                    lock.release()
                    if self.broker.dead:  # channels this P dropped: freed now, the value sent
                        self.broker.release_handles()
                    return
        lock.release()
        self._send_slow(data, v, hub)

    def _send_slow(self, data: bytes, v: Any, hub: Any) -> None:
        """Hand ``data`` to a waiting receiver, buffer it, or park until one takes it."""
        wakes: list = []
        lock = self.lock
        lock.acquire()
        try:
            done = self.try_send_l(data, wakes, v)
            if not done:
                self.enqueue_l(True, data, hub.current.id, -1, 0, 0)
        except BaseException:
            lock.release()
            discard(data, self._arena)
            raise
        lock.release()
        if wakes:
            self.flush(wakes)
        if self.broker.dead:  # channels this P dropped: freed now, the value sent or queued
            self.broker.release_handles()
        if done:
            return
        if hub.park(W.CHAN_SEND) is CLOSED:
            raise ClosedChannelError("send on closed channel")

    def recv(self, hub: Any) -> tuple[Any, bool]:
        lock = self.lock
        while True:
            hub.n_xops += 1  # runtime.metrics()
            lock.acquire()
            # Fast path: no sender waiting and a value buffered (the steps of try_recv_l).
            q, w = self._q, self._w
            if not q[w + _W_NSEND]:
                n = q[w + _W_COUNT]
                if n > 0:
                    b = self._buf
                    if b is not None and b.offset == q[w + _W_BUF]:
                        data = b.get_locked()
                        q[w + _W_COUNT] = n - 1
                        lock.release()
                        if self.codec is None:  # self.decode inlined, as in send
                            return decode(data, self._arena), True
                        return self.codec.decode(data), True
            lock.release()
            if not self.broker.run_own(hub):
                return self._recv_slow(hub)
            hub.gosched()  # a queued goroutine of this P runs first; then again

    def _recv_slow(self, hub: Any) -> tuple[Any, bool]:
        """Take from a waiting sender or the buffer, see the close, or park until a value."""
        wakes: list = []
        lock = self.lock
        lock.acquire()
        try:
            done, data, ok = self.try_recv_l(wakes)
            if not done:
                self.enqueue_l(False, None, hub.current.id, -1, 0, 0)
        finally:
            lock.release()
        if wakes:
            self.flush(wakes)
        if done:
            return (self.decode(data) if ok else None), ok
        return hub.park(W.CHAN_RECV)

    def close(self) -> list:
        wakes: list = []
        lock = self.lock
        lock.acquire()
        try:
            if self._q[self._w + _W_CLOSED]:
                raise ClosedChannelError("close of closed channel")
            self._q[self._w + _W_CLOSED] = 1
            while (rec := self._pop_live(_W_RECVQ)) is not None:
                wakes.append((rec, K_CLOSED_RECV, None, NO_OBJ))
            while (rec := self._pop_live(_W_SENDQ)) is not None:
                wakes.append((rec, K_CLOSED_SEND, None, NO_OBJ))
                if rec[5] is not None:
                    discard(rec[5], self._arena)
        finally:
            lock.release()
        self.flush(wakes)
        return []

    # ---- the LocalState protocol, for code that treats states alike

    def try_send(self, v: Any) -> tuple[bool, None]:
        data = self.encode(v)
        wakes: list = []
        with self.lock:
            done = self.try_send_l(data, wakes)
        self.flush(wakes)
        if not done:
            discard(data, self._arena)
        return done, None

    def try_recv(self) -> tuple[bool, Any, bool, None]:
        wakes: list = []
        with self.lock:
            done, data, ok = self.try_recv_l(wakes)
        self.flush(wakes)
        return done, (self.decode(data) if done and ok else None), ok, None

    def stats(self) -> tuple[int, int, int]:
        """(buffered, live senders waiting, live receivers waiting), as ``LocalState``."""
        with self.lock:
            return self._count(), self._live_l(_W_SENDQ), self._live_l(_W_RECVQ)

    def drop_dead_senders(self) -> None:
        """Free the values of select losers parked in the send queue (any P)."""
        with self.lock:
            self._live_l(_W_SENDQ)

    def _live_l(self, wi: int) -> int:
        """The live records of queue ``wi``, dropping the dead ones (under the lock)."""
        q = self._queue(wi)
        if self._q[self._w + _NWORD[wi]]:
            compact(self._arena, q, self.broker.token_live)
        n = len(q)
        self._q[self._w + _NWORD[wi]] = n
        return n
