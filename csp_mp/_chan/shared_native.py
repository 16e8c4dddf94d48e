"""A shared channel whose fast paths run in the compiled core, and which class a run uses.

``NativeSharedChan`` is ``SharedChan`` (``shared.py``, the readable specification of the protocol)
with its send and receive fast paths in one call of the compiled core's ``ChanOps``; the locked
and blocking operations stay ``SharedChan``'s. Imports: ``_shm``, and ``shared``, ``proclayer``
of ``_chan``.

Invariants:
- The arena decides the implementation (``state_class``): every handle of a run uses the same
  one, so a channel's words are never driven by both.
- A fast path changes nothing when it cannot finish the operation: the Python slow path then
  takes over from the same state.
"""

from __future__ import annotations

import functools
from typing import Any

from .._shm import OOB_MIN, decode, encode
from .._shm.codec import _mdec, _menc, _tdec
from .._shm.native import core as native_core
from .proclayer import ProcLayer
from .shared import SharedChan


def state_class(arena: Any) -> type[SharedChan]:
    """The class of shared channel states a run over ``arena`` uses: ``NativeSharedChan`` when
    the arena runs on the compiled core, else ``SharedChan``."""
    return NativeSharedChan if arena.core is not None else SharedChan


class NativeSharedChan(SharedChan):
    """A shared channel whose fast paths run in one call of the compiled core.

    ``ChanOps.send``/``recv`` do what :meth:`SharedChan.try_send_l` and
    :meth:`SharedChan.try_recv_l` spell out when no select's value needs freeing: hand a value
    to the oldest live parked receiver, else buffer it when open and with room; take the value
    of the oldest live parked sender (on a buffered channel: the oldest buffered value, the
    sender's moving to the buffer's end), else a buffered inline value. The codec's plain kinds
    (scalars, small bytes, tuples of those) are encoded and decoded in the same call; other
    values go through the codec and ``send_data``/``recv_data``. Anything else (a closed
    channel, an out-of-band frame, a parked sender's value the buffer's bytes cannot take until
    it grows, a dead select holding a value) changes nothing, and the Python slow path takes
    over. A parked partner of this P, or an inbox with no room, is woken through
    ``ProcLayer.deliver_off``. When the goroutine is alone on its P, it then polls the channel's
    words (GIL released) for up to ``spin_seconds`` before the slow path parks it: a wake-up
    across processes costs 15-25 µs on these machines, more than a partner on another core
    takes to make the channel ready (``ProcLayer.spin_time``: only when nothing else on the P
    could run meanwhile; the poll ends early when this P's doorbell rings, a wake-up for
    another goroutine having come).
    """

    # send and recv are per instance: for a channel with no codec of its own, the compiled
    # core's send_pair/recv_pair, which run the fast path and call _send_more/_recv_more only
    # when it cannot finish (no Python frame of this class runs on the fast path)
    __slots__ = ("_c_send", "_c_poll", "_bell", "_vsend", "_vrecv", "ops", "send", "recv")

    def __init__(self, broker: ProcLayer[SharedChan], off: int, tp: Any = None) -> None:
        super().__init__(broker, off, tp)
        arena = broker.arena
        core = arena.core
        self._c_poll = core.chan_poll
        self._bell = broker.bell_off
        #: the fast paths (their counts for runtime.metrics() go to this P's Peers)
        self.ops: Any = native_core().ChanOps(
            core, off, _menc, _mdec, _tdec, functools.partial(decode, arena=arena), _NOVALUE,
            OOB_MIN, broker.peers, self._recv_more, self._send_more, broker.dead,
            broker.release_handles)
        self._c_send = self.ops.send_data
        self.send: Any
        self.recv: Any
        if self.codec is None:
            self._vsend, self._vrecv = self.ops.send, self.ops.recv
            self.send, self.recv = self.ops.send_pair, self.ops.recv_pair
        else:  # a typed channel: its codec validates, so values go through it
            self._vsend = _never
            self._vrecv = functools.partial(_typed_recv, self.ops.recv_data, self.codec.decode)
            self.send, self.recv = self._send_more, self._recv_typed

    def _send_more(self, v: Any, hub: Any) -> None:
        """``send`` once the fast path (``ops.send``; none for a typed channel) could not."""
        data = encode(v, self._arena) if self.codec is None else self.codec.encode(v)
        hub.n_xops += 1  # runtime.metrics(): the fast path counts its own (ChanOps)
        hub.n_xbytes += len(data)
        if self._c_send(data, v):
            if self.broker.dead:
                self.broker.release_handles()
            return
        # an unbuffered channel is ready only once a receiver parks, which a receiver
        # spinning for a sender never does: the sender parks at once, for it to find
        spin = self.broker.spin_time(hub) if self.cap else 0.0
        if spin and self._c_poll(self.off, True, spin, self._bell) and self._c_send(data, v):
            if self.broker.dead:
                self.broker.release_handles()
            return
        self._send_slow(data, v, hub)  # releases them too

    def _recv_typed(self, hub: Any) -> tuple[Any, bool]:
        """``recv`` of a typed channel: its codec's fast path, then ``_recv_more``."""
        v = self._vrecv()
        return (v, True) if v is not _NOVALUE else self._recv_more(hub)

    def _recv_more(self, hub: Any) -> tuple[Any, bool]:
        """``recv`` once the fast path found nothing it could take."""
        v: Any = _NOVALUE
        while v is _NOVALUE:
            spin = self.broker.spin_time(hub)
            if spin:  # once: ready may mean what only the slow path serves (a close, ...)
                if self._c_poll(self.off, False, spin, self._bell):
                    v = self._vrecv()
                break
            if not self.broker.run_own(hub):  # a queued goroutine of this P runs first
                break
            hub.gosched()
            v = self._vrecv()
        if v is not _NOVALUE:
            return v, True
        hub.n_xops += 1  # runtime.metrics(): the fast path counts its own (ChanOps)
        return self._recv_slow(hub)  # also an out-of-band value, which C leaves in place


_NOVALUE = object()  # ChanOps.recv: nothing the fast path could take


def _never(v: Any) -> bool:
    return False


def _typed_recv(recv_data: Any, decode_typed: Any) -> Any:
    data = recv_data()
    return _NOVALUE if data is None else decode_typed(data)

