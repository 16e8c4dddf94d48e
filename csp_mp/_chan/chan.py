"""The Chan class, ``nilchan`` and ``select``: Go's channel semantics over a channel state.

A ``Chan`` holds its state in ``_st``: a ``LocalState`` while every user is on one P, replaced in
place by a ``SharedChan`` (``shared.py``) when the handle leaves its process (the ``_mp`` layer's
promoter). Both speak the ``ChanState`` protocol, so the blocking logic here is written once: a
non-blocking try, then a park loop. A select over a shared channel drives its locked operations
directly, and takes its token from the channel's ``ProcLayer``.

Invariants:
- A value is validated (typed channels) before any channel state is touched, so a failed send
  changes nothing.
- A parked sender is readied with SENT or CLOSED; a parked receiver with ``(value, ok)``.
- select: pass 1 polls every case in a random order; pass 2 enqueues a waiter on every channel
  sharing one ``SelectState``; pass 3, after waking, dequeues the waiters of the losing cases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .._errors import ClosedChannelError
from .._hub import current_hub, peek
from .._hub import waits as W
from .._proc import proc
from .local import CLOSED, LocalState, SelectState, Waiter

if TYPE_CHECKING:
    from .shared import SharedChan

T = TypeVar("T")


class ChanState(Protocol):
    """What a Chan asks of its state, local or shared (``shared`` tells which)."""

    shared: bool
    cap: int

    @property
    def closed(self) -> bool: ...

    def send(self, v: Any, hub: Any) -> None: ...

    def recv(self, hub: Any) -> tuple[Any, bool]: ...

    def close(self) -> list:
        """Close; the local waiters to ready, with their payloads."""
        ...

    def try_send(self, v: Any) -> tuple[bool, Any]:
        """Send without blocking: (done, a local receiver to ready or None)."""
        ...

    def try_recv(self) -> tuple[bool, Any, bool, Any]:
        """Receive without blocking: (done, value, ok, a local sender to ready or None)."""
        ...

    def stats(self) -> tuple[int, int, int]: ...


def _validator(tp: Any) -> Callable[[Any], None]:
    from msgspec import ValidationError

    from .._shm.typecheck import validator

    deep = validator(tp)  # fields of Structs included

    def check(v: Any) -> None:
        try:
            deep(v)
        except ValidationError as exc:
            raise TypeError(f"Chan[{_type_name(tp)}] send of {type(v).__name__}: {exc}") from None
    return check


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else repr(tp)


class _TypedChan:
    """``Chan[T]``: a factory of channels whose values are validated against ``T`` on send."""

    __slots__ = ("tp", "check")

    def __init__(self, tp: Any) -> None:
        import msgspec.inspect

        try:
            msgspec.inspect.type_info(tp)
        except Exception as exc:
            raise TypeError(f"Chan[{tp!r}]: not a type msgspec knows ({exc})") from None
        self.tp = tp
        self.check = _validator(tp)

    def __call__(self, cap: int = 0) -> Chan:
        ch: Chan = Chan(cap)
        ch._type = self.tp
        ch._check = self.check
        return ch

    def __repr__(self) -> str:
        return f"csp_mp.Chan[{_type_name(self.tp)}]"


class Chan(Generic[T]):
    """A Go channel: ``Chan(cap=0)``; ``Chan[T](cap)`` validates values against ``T``.

    ``send`` blocks until a receiver takes the value (``cap == 0``) or it is buffered; ``recv``
    blocks until a value arrives and returns ``None`` once the channel is closed and drained;
    ``recv_ok`` returns ``(value, ok)``; ``for v in ch`` receives until closed and drained.
    """

    __slots__ = ("_st", "_type", "_check", "__weakref__")
    __module__ = "csp_mp"

    def __init__(self, cap: int = 0) -> None:
        if type(cap) is not int or cap < 0:
            if isinstance(cap, bool) or not isinstance(cap, int):
                raise TypeError(f"Chan capacity must be an int, not {type(cap).__name__}")
            if cap < 0:
                raise ValueError(f"makechan: size out of range (cap={cap})")
        self._st: ChanState = LocalState(cap)
        self._type: Any = None
        self._check: Callable[[Any], None] | None = None

    def __class_getitem__(cls, tp: Any) -> _TypedChan:  # type: ignore[override]
        return _TypedChan(tp)

    # ------------------------------------------------------------------ operations

    def send(self, v: T) -> None:
        """Send ``v``; blocks until delivered or buffered. Closed channel: ClosedChannelError."""
        if self._check is not None:
            self._check(v)
        self._st.send(v, proc.hub or current_hub())

    def recv_ok(self) -> tuple[T | None, bool]:
        """Receive: ``(value, True)``, or ``(None, False)`` once closed and drained."""
        return self._st.recv(proc.hub or current_hub())

    def recv(self) -> T | None:
        """Receive a value; ``None`` at once when the channel is closed and drained."""
        return self._st.recv(proc.hub or current_hub())[0]

    def close(self) -> None:
        """Close: waiting receivers get ``(None, False)``, waiting senders raise."""
        woken = self._st.close()
        if woken:
            hub = peek() or current_hub()
            for w, payload in woken:
                hub.ready(w.g, payload)

    def __iter__(self) -> Iterator[T]:
        recv_ok = self.recv_ok
        while True:
            got = recv_ok()
            if not got[1]:
                return
            # the value is the loop's: this suspended frame keeps no reference to it while
            # it waits for the next one (a reply channel it held would never be freed)
            yield got[0]  # type: ignore[misc]
            got = None  # noqa: F841

    def __len__(self) -> int:
        return self._st.stats()[0]

    @property
    def cap(self) -> int:
        """The buffer capacity given at creation."""
        return self._st.cap

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run (an addition: Go has no such query)."""
        return bool(self._st.closed)

    def stats(self) -> ChanStats:
        """A snapshot: buffered values, senders waiting, receivers waiting, closed."""
        buffered, senders, receivers = self._st.stats()
        return ChanStats(buffered, senders, receivers, bool(self._st.closed))

    def __repr__(self) -> str:
        typ = f"[{_type_name(self._type)}]" if self._type is not None else ""
        where = type(self._st).__name__.replace("State", "").lower()
        return f"<csp_mp.Chan{typ} cap={self.cap} len={len(self)} {where} at {id(self):#x}>"

    def __reduce__(self):
        promote = proc.promote_chan  # set while a multi-P runtime runs (_mp/promote.py)
        if promote is None:
            raise TypeError("a csp_mp.Chan can only be pickled inside a multi-process runtime")
        return promote(self)


class ChanStats:
    """A channel's state at one moment (read by tests and ``runtime.stack()``); immutable.

    A plain class, not a frozen ``msgspec.Struct`` as it was: defining that here made
    ``import csp_mp`` import msgspec, which a one-P program never needs."""

    __slots__ = ("buffered", "senders_waiting", "receivers_waiting", "closed")
    buffered: int
    senders_waiting: int
    receivers_waiting: int
    closed: bool

    def __init__(self, buffered: int, senders_waiting: int, receivers_waiting: int,
                 closed: bool) -> None:
        set_field = object.__setattr__
        set_field(self, "buffered", buffered)
        set_field(self, "senders_waiting", senders_waiting)
        set_field(self, "receivers_waiting", receivers_waiting)
        set_field(self, "closed", closed)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("immutable type: 'ChanStats'")

    def _fields(self) -> tuple[int, int, int, bool]:
        return self.buffered, self.senders_waiting, self.receivers_waiting, self.closed

    def __eq__(self, other: object) -> bool:
        if type(other) is not ChanStats:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __reduce__(self) -> tuple[type, tuple[int, int, int, bool]]:
        return ChanStats, self._fields()

    def __repr__(self) -> str:
        return ("ChanStats(buffered={!r}, senders_waiting={!r}, receivers_waiting={!r}, "
                "closed={!r})".format(*self._fields()))


class _NilState:
    """State of the nil channel: never ready, never closable."""

    shared = False
    cap = 0
    closed = False

    def close(self):
        raise ClosedChannelError("close of nil channel")

    def stats(self) -> tuple[int, int, int]:
        return 0, 0, 0


class _NilChan(Chan):
    """Go's nil channel: send and receive block forever; close raises."""

    __slots__ = ()

    def __init__(self) -> None:
        self._st = _NilState()
        self._type = None
        self._check = None

    def send(self, v: Any) -> None:
        current_hub().park(W.NIL_CHAN_SEND)

    def recv_ok(self) -> tuple[Any, bool]:
        current_hub().park(W.NIL_CHAN_RECV)
        return None, False

    def recv(self) -> Any:
        current_hub().park(W.NIL_CHAN_RECV)
        return None

    def __repr__(self) -> str:
        return "csp_mp.nilchan"

    def __reduce__(self):
        return "nilchan"


nilchan: Chan = _NilChan()
"""A channel on which send and receive block forever: switches a select case off."""


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "csp_mp.default"

    def __reduce__(self):
        return "default"


default = _Default()
"""The ``select`` case taken when no other case is ready."""

_RECV, _RECV_OK, _SEND = 0, 1, 2


def _parse(i: int, case: Any) -> tuple[int, Chan, Any]:
    if type(case) is tuple:
        if len(case) == 2:
            m, x = case
            ch = getattr(m, "__self__", None)
            if isinstance(ch, Chan) and getattr(m, "__name__", "") == "send":
                if ch._check is not None:
                    ch._check(x)
                return _SEND, ch, x
    else:
        ch = getattr(case, "__self__", None)
        if isinstance(ch, Chan):
            name = getattr(case, "__name__", "")
            if name == "recv":
                return _RECV, ch, None
            if name == "recv_ok":
                return _RECV_OK, ch, None
    raise TypeError(
        f"select case {i} must be ch.recv, ch.recv_ok, (ch.send, value) or default; got {case!r}")


def select(*cases: Any) -> tuple[int, Any]:
    """Wait until one case can proceed, run exactly that one, return ``(index, value)``.

    Cases: ``ch.recv`` (value), ``ch.recv_ok`` (``(value, ok)``), ``(ch.send, x)`` (None) or
    ``default`` (taken at once when nothing else is ready). Among ready cases one is chosen
    uniformly at random. ``select()`` with no case blocks forever.
    """
    parsed: list[tuple[int, Chan, Any] | None] = []
    dflt = -1
    for i, case in enumerate(cases):
        if case is default:
            if dflt >= 0:
                raise ValueError("select: multiple default cases")
            dflt = i
            parsed.append(None)
        else:
            parsed.append(_parse(i, case))
    hub = current_hub()
    live = [i for i, c in enumerate(parsed) if c is not None and c[1] is not nilchan]
    if len(live) > 1:
        hub.select_rng.shuffle(live)
    for i in live:
        if parsed[i][1]._st.shared:  # type: ignore[index]
            return _select_shared(hub, parsed, live, dflt)

    # Pass 1: poll every case in random order.
    for i in live:
        kind, ch, x = parsed[i]  # type: ignore[misc]
        st = ch._st
        if kind == _SEND:
            done, w = st.try_send(x)
            if done:
                if w is not None:
                    hub.ready(w.g, (x, True))
                return i, None
        else:
            done, v, ok, w = st.try_recv()
            if done:
                if w is not None:
                    hub.ready(w.g, True)
                return i, (v if kind == _RECV else (v, ok))
    if dflt >= 0:
        return dflt, None
    if not live:
        hub.park(W.SELECT_NO_CASES)
        raise AssertionError("unreachable: a select with no case was woken")

    # Pass 2: enqueue on every channel.
    sel = SelectState()
    g = hub.current
    waiters: list[tuple[Any, Waiter, bool]] = []
    for i in live:
        kind, ch, x = parsed[i]  # type: ignore[misc]
        st = ch._st
        w = Waiter(g, x, sel, i)
        if kind == _SEND:
            st.enqueue_send(w)
            waiters.append((st, w, True))
        else:
            st.enqueue_recv(w)
            waiters.append((st, w, False))
    return _park_select(hub, sel, waiters, parsed)


def _dequeue_losers(sel: SelectState, waiters: list[tuple[Any, Waiter, bool]]) -> None:
    """Pass 3: take the waiters of every case but the winner off their channels."""
    won = sel.case
    for st, w, is_send in waiters:
        if w.case != won:
            st.dequeue(w, is_send)


def _park_select(hub: Any, sel: SelectState, waiters: list[tuple[Any, Waiter, bool]],
                 parsed: list) -> tuple[int, Any]:
    """Park until one case completes (pass 2 done), run pass 3, return ``(index, value)``."""
    try:
        payload = hub.park(W.SELECT)
    finally:
        _dequeue_losers(sel, waiters)
        if sel.token is not None:
            sel.token.release()
    won = sel.case
    kind = parsed[won][0]
    if kind == _SEND:
        if payload is CLOSED:
            raise ClosedChannelError("send on closed channel")
        return won, None
    v, ok = payload
    return won, (v if kind == _RECV else (v, ok))


def _select_shared(hub: Any, parsed: list, live: list[int], dflt: int) -> tuple[int, Any]:
    """select over channels of which at least one is shared between Ps.

    Every shared channel involved is locked (in lock-index order, so two selects never wait on
    each other) across pass 1 and pass 2, as Go locks all of a select's channels: no partner in
    another P can see half of the select. Wake-ups found under the locks are delivered after.
    """
    from .shared import SharedChan  # (loaded already: a channel was shared)

    states: dict[int, SharedChan] = {}
    for i in live:
        st = parsed[i][1]._st
        if st.shared:
            if not isinstance(st, SharedChan):  # a channel of another node (_cluster)
                return proc.select_remote(hub, parsed, live, dflt)  # type: ignore[misc]
            states[id(st)] = st
    encoded = {}
    for i in live:
        kind, ch, x = parsed[i]
        if kind == _SEND and ch._st.shared:
            encoded[i] = ch._st.encode(x)  # TypeError here changes nothing
    locks: dict[int, Any] = {}
    for st in states.values():
        locks.setdefault(st.lock_index, st.lock)
    order = sorted(locks)
    wakes: dict[int, list] = {k: [] for k in states}
    result: tuple | None = None
    sel = None
    waiters: list[tuple[Any, Waiter, bool]] = []
    taken = []
    kept: set[int] = set()  # send cases whose encoded value a channel now holds
    try:
        for k in order:
            locks[k].acquire()
            taken.append(locks[k])
        # Pass 1: poll every case in random order.
        for i in live:
            kind, ch, x = parsed[i]
            st = ch._st
            if st.shared:
                if kind == _SEND:
                    if st.try_send_l(encoded[i], wakes[id(st)], x):
                        kept.add(i)
                        result = (i, None, None, st)
                        break
                else:
                    done, data, ok = st.try_recv_l(wakes[id(st)])
                    if done:
                        result = (i, data, ok, st)
                        break
            elif kind == _SEND:
                done, w = st.try_send(x)
                if done:
                    if w is not None:
                        hub.ready(w.g, (x, True))
                    result = (i, None, None, None)
                    break
            else:
                done, v, ok, w = st.try_recv()
                if done:
                    if w is not None:
                        hub.ready(w.g, True)
                    result = (i, v, ok, None)
                    break
        if result is None and dflt < 0:
            # Pass 2: enqueue on every channel, under one token for the shared ones.
            sel = SelectState()
            g = hub.current
            tok = next(iter(states.values())).broker.new_token(g, sel)  # one ProcLayer per P
            for i in live:
                kind, ch, x = parsed[i]
                st = ch._st
                is_send = kind == _SEND
                if st.shared:
                    st.enqueue_l(is_send, encoded.get(i), g.id, tok.slot, tok.gen, i)
                    kept.add(i)
                else:
                    w = Waiter(g, x, sel, i)
                    (st.enqueue_send if is_send else st.enqueue_recv)(w)
                    waiters.append((st, w, is_send))
    finally:
        for lock in reversed(taken):
            lock.release()
        for i, data in encoded.items():
            if i not in kept:  # default taken, another case won, or a case raised
                parsed[i][1]._st.drop(data)
        for st in states.values():
            if wakes[id(st)]:
                st.flush(wakes[id(st)])
    if result is not None:
        i, data, ok, st = result
        if parsed[i][0] == _SEND:
            return i, None
        if st is not None:
            data = st.decode(data) if ok else None
        return i, (data if parsed[i][0] == _RECV else (data, ok))
    if sel is None:
        return dflt, None
    try:
        return _park_select(hub, sel, waiters, parsed)
    finally:
        if encoded:  # (a select that only receives imports nothing here)
            from .._shm.codec import holds_blocks

            for i, data in encoded.items():
                if i != sel.case and holds_blocks(data):
                    parsed[i][1]._st.drop_dead_senders()  # pass 3, values in their own blocks
