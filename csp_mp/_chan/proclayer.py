"""What a shared channel asks of the process layer: the ``ProcLayer`` protocol, wake kinds.

A shared channel knows nothing of processes: this P's number, the arena, lock stripes, select
tokens, wake-ups for goroutines of other Ps, it asks of a ``ProcLayer``, which the ``_mp`` layer's
broker implements; and what a woken waiter's park() returns for each wake kind
(``recv_payload``). Imports: ``_shm``, ``_chan.local``, ``_chan.block``.

Invariants (what an implementation keeps):
- ``deliver`` and ``deliver_off`` are called with no channel lock held: a channel lock is never
  held while writing another P's inbox.
- ``claim``, ``token_live`` and ``plain_live`` may be called under a channel lock: a token lock
  may be taken under a channel lock, never the other way round.
- The fields marked "owner P only" are read and written by this P's hub thread only.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from .._shm import Arena
from .._shm import layout as L
from .block import SparePool
from .local import CLOSED, SENT, SelectState, SelectToken

NO_OBJ = object()  # "no original object": a receiver on another P decodes the bytes

# wake kinds (what a waiter is told; layout.py, which wake.c is built from)
K_VALUE, K_CLOSED_RECV, K_SENT, K_CLOSED_SEND, K_GRANT = (
    L.K_VALUE, L.K_CLOSED_RECV, L.K_SENT, L.K_CLOSED_SEND, L.K_GRANT)



class Decodes(Protocol):
    """A channel state that decodes the values it carries."""

    def decode(self, data: bytes) -> Any:
        """The value encoded in ``data``."""
        ...


def recv_payload(st: Decodes, kind: int, data: bytes | None) -> Any:
    """What a woken waiter's park() returns, from a wake of ``kind`` on channel ``st``."""
    if kind == K_VALUE:
        return st.decode(data), True  # type: ignore[arg-type]  # K_VALUE carries data
    if kind == K_CLOSED_RECV:
        return None, False
    if kind == K_SENT:
        return SENT
    if kind == K_CLOSED_SEND:
        return CLOSED
    return None


S = TypeVar("S")  # the channel state the layer caches and wakes with (SharedChan)

class ProcLayer(Protocol[S]):
    """What a shared channel asks of the process layer (the ``_mp`` broker implements it);
    ``S`` is the channel state it caches and wakes with (``ProcLayer[SharedChan]``)."""

    p: int  # this P's number
    arena: Arena  # the arena every P maps
    # the runtime's destroyed channel blocks, empty, none of their rings grown: create() takes
    # one before the allocator (any P)
    spares: SparePool
    # this P's state object for each channel block it has used, by offset: reused while the
    # block keeps its id (SharedChan.attach; owner P only)
    chan_states: dict[int, S]
    # the states of blocks this P destroyed, by buffer ring size, kept for its next channels
    # before the pool (at most _OWN_SPARES a size; owner P only)
    spare_states: dict[int, list[S]]
    # the arena word counting the channels this P made live minus those it ended (mod 2**64,
    # written by this P only; the sum over Ps is runtime.metrics()'s live channels)
    live_word: int
    # the compiled core's claims and wake-ups for this P (a ``Peers``; None on the Python path)
    peers: Any
    # this P's doorbell offset in the arena (compiled core; else -1): a goroutine polling a
    # channel stops when it rings, for the wake-up of another goroutine has arrived
    bell_off: int
    # channel handles of this process that died and still count (owner P only): a sender
    # releases them (``release_handles``) once its value is on its way (or before it parks),
    # so a goroutine that never parks frees the channels it drops without waiting for the
    # hub's next poll, and its partner does not wait for the release
    dead: list

    def spin_time(self, hub: Any) -> float:
        """How long a goroutine about to park on a shared channel may poll it first: 0 unless
        nothing else on this P could run meanwhile (owner P only)."""
        ...

    def run_own(self, hub: Any) -> bool:
        """Start one of this P's queued goroutines, if nothing else is runnable and every other
        P is busy: a receiver that would park lets it run first and looks again (owner P only).
        Waiting this way keeps senders on other Ps on the buffered fast path, where a parked
        receiver would cost each of them a wake-up across processes."""
        ...

    def chan_lock_index(self) -> int:
        """The arena lock for a new channel (any P)."""
        ...

    def release_handles(self) -> None:
        """Drop the counts of the handles in ``dead``, destroying the channels they held last
        (owner P only; no channel lock held)."""
        ...

    def new_token(self, g: Any, sel: SelectState) -> SelectToken:
        """A token for a select of goroutine ``g`` of this P about to park (owner P only)."""
        ...

    def claim(self, p: int, slot: int, gen: int, case: int) -> bool:
        """Win token ``(p, slot, gen)`` for ``case``; False if its select already completed."""
        ...

    def token_live(self, p: int, gid: int, slot: int, gen: int) -> bool:
        """Whether the record of goroutine ``gid`` of P ``p`` still waits: its select's token
        ``(slot, gen)`` does (a snapshot), or for a plain record (slot -1) ``plain_live``."""
        ...

    def plain_live(self, p: int, gid: int) -> bool:
        """Whether goroutine ``gid`` of P ``p`` can still be woken: False once the process that
        ran it died and was replaced (any P; a snapshot)."""
        ...

    def owe(self) -> bool:
        """Before claiming waiters (under the channel lock): mark this P as owing a wake-up (its
        ``P_OWES`` word, which P replacement trusts) until the wake-up is in the waiter's P's
        inbox. Whether this call set the mark (False: it was set already)."""
        ...

    def owe_cancel(self) -> None:
        """Take back the mark of an ``owe`` that returned True when no waiter of another P was
        claimed after it; the mark stays while wake-ups are queued."""
        ...

    def deliver(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                data: bytes | None, st: S | None, obj: Any = NO_OBJ) -> None:
        """Wake goroutine ``gid`` of P ``p`` with a wake of ``kind`` (no channel lock held)."""
        ...

    def deliver_off(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                    data: bytes | None, off: int, obj: Any = NO_OBJ) -> None:
        """``deliver`` for channel ``off``: what the compiled core's hand-off could not send
        itself (a goroutine of this P, an inbox with no room); ``obj`` is given with data."""
        ...

