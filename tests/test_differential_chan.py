"""One channel protocol, four implementations: a model, the local channel, the Python shared
channel and the compiled core's, driven by the same operations and compared at every step.

Grown from ``test_chan_statemachine.py``: two channels, non-blocking sends and receives and
closes from either P (P0's through ``select`` with default, P1's through the state's calls),
blocking ones that complete at once, and parked goroutines of two Ps (plain sends and receives,
selects over both channels). The shared channels run in a ``Fold``
each (``folded.py``): the real broker's wake-ups and tokens over a real arena, the two Ps in this
process. After every step each implementation's results, lengths and waiter counts must equal
the model's; at the end of an example the arena words of the two shared implementations
(channel blocks, rings, every P's wake counters) must equal each other.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import pytest
from folded import DEADLINE, PARKED, Fold, FoldedHub
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import csp_mp
from csp_mp import Chan, ClosedChannelError, default, go_local, runtime, select
from csp_mp._chan.block import (
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
)
from csp_mp._chan.chan import _parse, _select_shared
from csp_mp._chan.shared_native import state_class
from csp_mp._hub import current_hub
from csp_mp._shm import native

NCHANS = 2

values = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.text(max_size=6),
    st.binary(max_size=8),
    st.floats(allow_nan=False),
    st.none(),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
)


def _norm(v: Any) -> Any:
    """A value with its type, so that 1, 1.0 and True differ."""
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_norm(x) for x in v))
    return (type(v).__name__, v)


def _outcome(fn: Any) -> tuple:
    try:
        return ("ok", _norm(fn()))
    except (ClosedChannelError, TypeError, ValueError) as exc:
        return ("raised", type(exc).__name__, str(exc))


CLOSED_SEND = ("raised", "ClosedChannelError", "send on closed channel")


# ---------------------------------------------------------------------------- the model

class MWaiter:
    __slots__ = ("wid", "select", "done")

    def __init__(self, wid: int, select: bool) -> None:
        self.wid = wid
        self.select = select
        self.done = False


class MChan:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf: deque = deque()
        self.closed = False
        self.recvq: deque[tuple[MWaiter, int]] = deque()  # (waiter, case)
        self.sendq: deque[tuple[MWaiter, int, Any]] = deque()  # (waiter, case, value)

    def live(self, q: deque) -> int:
        return sum(1 for e in q if not e[0].done)


class Model:
    """Go's channels: FIFO buffers, FIFO wait queues, selects that complete once."""

    def __init__(self, caps: list[int]) -> None:
        self.chans = [MChan(c) for c in caps]
        self.expected: dict[int, tuple] = {}

    @staticmethod
    def _pop(q: deque) -> Any:
        while q:
            e = q.popleft()
            if not e[0].done:
                return e
        return None

    def _finish(self, w: MWaiter, case: int, result: Any) -> None:
        w.done = True
        self.expected[w.wid] = ("ok", _norm((case, result) if w.select else result))

    def _finish_closed_send(self, w: MWaiter) -> None:
        w.done = True
        self.expected[w.wid] = CLOSED_SEND

    def send_ready(self, c: int) -> bool:
        ch = self.chans[c]
        return ch.closed or ch.live(ch.recvq) > 0 or len(ch.buf) < ch.cap

    def recv_ready(self, c: int) -> bool:
        ch = self.chans[c]
        return ch.closed or ch.live(ch.sendq) > 0 or bool(ch.buf)

    def send(self, c: int, v: Any) -> bool | None:
        """A send that does not wait: True done, False would wait; None: raised (closed)."""
        ch = self.chans[c]
        if ch.closed:
            return None
        e = self._pop(ch.recvq)
        if e is not None:
            self._finish(e[0], e[1], (v, True))
            return True
        if len(ch.buf) < ch.cap:
            ch.buf.append(v)
            return True
        return False

    def recv(self, c: int) -> tuple | None:
        """A receive that does not wait: (value, ok), or None when it would wait."""
        ch = self.chans[c]
        e = self._pop(ch.sendq)
        if e is not None:
            self._finish(e[0], e[1], None)
            if ch.cap == 0:
                return (e[2], True)
            v = ch.buf.popleft()
            ch.buf.append(e[2])
            return (v, True)
        if ch.buf:
            return (ch.buf.popleft(), True)
        if ch.closed:
            return (None, False)
        return None

    def close(self, c: int) -> bool:
        ch = self.chans[c]
        if ch.closed:
            return False
        ch.closed = True
        while (e := self._pop(ch.recvq)) is not None:
            self._finish(e[0], e[1], (None, False))
        while (e := self._pop(ch.sendq)) is not None:
            self._finish_closed_send(e[0])
        return True


# ---------------------------------------------------------------------------- the implementations

class Impl:
    """One implementation's two channels, as P0 and P1 see them, and its goroutines' results."""

    def __init__(self, name: str, caps: list[int], fold: Fold | None) -> None:
        self.name = name
        self.fold = fold
        self.results: dict[int, tuple] = {}
        self.free0 = fold.arena.free_bytes() if fold is not None else 0
        if fold is None:
            self.ch0 = [Chan(c) for c in caps]
            self.ch1 = self.ch0
            return
        p0, p1 = fold.ps
        self.ch0, self.ch1 = [], []
        for c in caps:
            st0 = state_class(p0.arena).create(p0, c)
            st0.add_refs(1)  # P1's handle
            a, b = Chan(c), Chan(c)
            a._st = st0
            b._st = state_class(p1.arena).attach(p1, st0.off)
            self.ch0.append(p0.adopt(a))
            self.ch1.append(p1.adopt(b))

    def p1_results(self) -> dict[int, tuple]:
        if self.fold is None:
            return {}
        out = {}
        for wid, r in self.fold.p1hub.results.items():
            out[wid] = ("ok", _norm(r[1])) if r[0] == "ok" else r
        return out

    def all_results(self) -> dict[int, tuple]:
        return {**self.results, **self.p1_results()}

    def settle(self, want: set[int]) -> None:
        """Run until every goroutine keyed in ``want`` has reported and nothing moves."""
        def done() -> bool:
            return want <= set(self.all_results())
        if self.fold is not None:
            self.fold.poll(done)
            return
        hub = current_hub()
        deadline = time.monotonic() + DEADLINE
        while hub.runq or hub.runnext is not None or not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: goroutines did not report\n{runtime.stack()}")
            runtime.gosched()

    # ---- operations that do not park, run by P0's main goroutine or by a goroutine of P1

    def now(self, where: int, op: str, c: int, v: Any) -> tuple:
        """``op`` on channel ``c`` from P``where``: its outcome, as P0's ``_outcome`` gives it.

        P0 (and the local channel, which has no P1) uses the public API; P1 runs the state's
        calls in a goroutine of its hub, which must not park.
        """
        if where == 0 or self.fold is None:
            ch = self.ch0[c]
            if op == "try_send":
                return _outcome(lambda: select((ch.send, v), default))
            if op == "try_recv":
                return _outcome(lambda: select(ch.recv_ok, default))
            return _outcome(ch.close)
        hub = self.fold.p1hub
        key = ("now", op)
        st1 = self.ch1[c]._st

        def call(_hub: FoldedHub) -> Any:
            if op == "try_send":
                done, _ = st1.try_send(v)
                return (0 if done else 1, None)
            if op == "try_recv":
                done, value, ok, _ = st1.try_recv()
                return (0, (value, ok)) if done else (1, None)
            assert not st1.close()  # a shared close readies its waiters through the broker
            return None
        got = hub.go(key, call)
        assert got is not PARKED, f"{self.name}: P1's {op} parked"
        hub.results.pop(key)
        return ("ok", _norm(got[1])) if got[0] == "ok" else got

    # ---- parked goroutines

    def park(self, where: int, wid: int, op: str, c: int, v: Any) -> None:
        if where == 1 and self.fold is not None:
            self.fold.p1hub.go(wid, lambda hub: self._p1_op(hub, op, c, v))
            return
        chans, results = self.ch0, self.results

        def body() -> None:
            if op == "recv":
                results[wid] = _outcome(chans[c].recv_ok)
            elif op == "send":
                results[wid] = _outcome(lambda: chans[c].send(v))
            elif op == "select_recv":
                results[wid] = _outcome(lambda: select(chans[0].recv_ok, chans[1].recv_ok))
            else:
                results[wid] = _outcome(lambda: select((chans[0].send, v[0]),
                                                       (chans[1].send, v[1])))
        go_local(body)

    def _p1_op(self, hub: FoldedHub, op: str, c: int, v: Any) -> Any:
        chans = self.ch1
        if op == "recv":
            return chans[c]._st.recv(hub)
        if op == "send":
            return chans[c]._st.send(v, hub)
        if op == "select_recv":
            cases = (chans[0].recv_ok, chans[1].recv_ok)
        else:
            cases = ((chans[0].send, v[0]), (chans[1].send, v[1]))
        parsed = [_parse(i, case) for i, case in enumerate(cases)]
        return _select_shared(hub, parsed, [0, 1], -1)

    # ---- the arena, compared between the two shared implementations

    def arena_words(self) -> dict[str, Any]:
        assert self.fold is not None
        arena = self.fold.arena
        q = arena.words.view
        out: dict[str, Any] = dict(self.fold.words())
        for i, ch in enumerate(self.ch0):
            s = ch._st
            w = s.off // 8
            for name, wi in (("magic", _W_MAGIC), ("cap", _W_CAP), ("closed", _W_CLOSED),
                             ("count", _W_COUNT), ("lock", _W_LOCK), ("nrecv", _W_NRECV),
                             ("nsend", _W_NSEND), ("refs", _W_REFS), ("id", _W_ID),
                             ("grown", _W_GROWN)):
                out[f"chan{i}.{name}"] = q[w + wi]
            for name, wi in (("buf", _W_BUF), ("recvq", _W_RECVQ), ("sendq", _W_SENDQ)):
                ring = s._queue(wi)
                out[f"chan{i}.{name}.len"] = len(ring)
                out[f"chan{i}.{name}.capacity"] = ring.capacity
                out[f"chan{i}.{name}.refcount"] = arena.refcount(ring.offset)
        out["arena.bytes_taken"] = self.free0 - arena.free_bytes()
        out["arena.takeovers"] = arena.takeovers()
        out["arena.poisoned"] = arena.poisoned()
        fp1 = self.fold.ps[1]
        p1hub = self.fold.p1hub
        out["p1.xops"] = p1hub.n_xops + (fp1.peers.ops if fp1.peers is not None else 0)
        out["p1.outcome"] = repr(p1hub.outcome)
        out["p1.tokens_waiting"] = sorted(fp1.token_waiting)
        out["p0.tokens_waiting"] = sorted(self.fold.ps[0].token_waiting)
        return out


# ---------------------------------------------------------------------------- the machine

class DifferentialChannelMachine(RuleBasedStateMachine):
    """The model, the local channel, the Python shared channel and the compiled core's."""

    def __init__(self) -> None:
        super().__init__()
        self.impls: list[Impl] = []
        self.model = Model([0] * NCHANS)
        self.wid = 0

    # one example in three starts with two unbuffered channels, where a select can park its
    # sends at once (with buffers it must first fill both)
    @initialize(caps=st.one_of(st.just([0] * NCHANS),
                               *[st.lists(st.integers(min_value=0, max_value=3), min_size=NCHANS,
                                          max_size=NCHANS)] * 2))
    def make(self, caps: list[int]) -> None:
        self.model = Model(caps)
        self.impls = [Impl("local", caps, None), Impl("python", caps, Fold(native=False))]
        if native.built():
            self.impls.append(Impl("native", caps, Fold(native=True)))

    def _each(self, fn: Any) -> list[tuple]:
        """``fn(impl)``'s outcome for every implementation."""
        return [_outcome(lambda impl=impl: fn(impl)) for impl in self.impls]

    def _settle(self) -> None:
        want = set(self.model.expected)
        for impl in self.impls:
            impl.settle(want)

    # ---- the main goroutine's operations

    @rule(where=st.integers(0, 1), c=st.integers(0, NCHANS - 1), v=values)
    def try_send(self, where: int, c: int, v: Any) -> None:
        got = [impl.now(where, "try_send", c, v) for impl in self.impls]
        done = self.model.send(c, v)
        want = CLOSED_SEND if done is None else ("ok", _norm((0 if done else 1, None)))
        assert got == [want] * len(got), [i.name for i in self.impls]
        self._settle()

    @rule(where=st.integers(0, 1), c=st.integers(0, NCHANS - 1))
    def try_recv(self, where: int, c: int) -> None:
        got = [impl.now(where, "try_recv", c, None) for impl in self.impls]
        r = self.model.recv(c)
        want = ("ok", _norm((1, None) if r is None else (0, r)))
        assert got == [want] * len(got), [i.name for i in self.impls]
        self._settle()

    @precondition(lambda self: any(self.model.send_ready(c) for c in range(NCHANS)))
    @rule(c=st.integers(0, NCHANS - 1), v=values)
    def send_now(self, c: int, v: Any) -> None:
        """A blocking send that the model says completes at once (the compiled fast path)."""
        if not self.model.send_ready(c):
            return
        got = self._each(lambda impl: impl.ch0[c].send(v))
        done = self.model.send(c, v)
        assert got == [CLOSED_SEND if done is None else ("ok", _norm(None))] * len(got)
        self._settle()

    @precondition(lambda self: any(self.model.recv_ready(c) for c in range(NCHANS)))
    @rule(c=st.integers(0, NCHANS - 1))
    def recv_now(self, c: int) -> None:
        """A blocking receive that the model says completes at once."""
        if not self.model.recv_ready(c):
            return
        got = self._each(lambda impl: impl.ch0[c].recv_ok())
        r = self.model.recv(c)
        assert got == [("ok", _norm(r))] * len(got)
        self._settle()

    @rule(where=st.integers(0, 1), c=st.integers(0, NCHANS - 1))
    def close(self, where: int, c: int) -> None:
        got = [impl.now(where, "close", c, None) for impl in self.impls]
        ok = self.model.close(c)
        want = ("ok", _norm(None)) if ok else ("raised", "ClosedChannelError",
                                               "close of closed channel")
        assert got == [want] * len(got)
        self._settle()

    # ---- goroutines that may park, on P0 or P1

    def _park(self, where: int, op: str, c: int, v: Any) -> None:
        wid = self.wid = self.wid + 1
        m = self.model
        if op == "recv":
            r = m.recv(c)
            if r is not None:
                m.expected[wid] = ("ok", _norm(r))
            else:
                m.chans[c].recvq.append((MWaiter(wid, False), c))
        elif op == "send":
            done = m.send(c, v)
            if done is None:
                m.expected[wid] = CLOSED_SEND
            elif done:
                m.expected[wid] = ("ok", _norm(None))
            else:
                m.chans[c].sendq.append((MWaiter(wid, False), c, v))
        elif op == "select_recv":
            w = MWaiter(wid, True)
            for i in range(NCHANS):
                m.chans[i].recvq.append((w, i))
        else:
            w = MWaiter(wid, True)
            for i in range(NCHANS):
                m.chans[i].sendq.append((w, i, v[i]))
        for impl in self.impls:
            impl.park(where, wid, op, c, v)
        self._settle()

    @rule(where=st.integers(0, 1), c=st.integers(0, NCHANS - 1))
    def park_recv(self, where: int, c: int) -> None:
        self._park(where, "recv", c, None)

    @rule(where=st.integers(0, 1), c=st.integers(0, NCHANS - 1), v=values)
    def park_send(self, where: int, c: int, v: Any) -> None:
        self._park(where, "send", c, v)

    @precondition(lambda self: not any(self.model.recv_ready(i) for i in range(NCHANS)))
    @rule(where=st.integers(0, 1))
    def park_select_recv(self, where: int) -> None:
        """A select receiving from both channels, when neither is ready (a ready one would
        be picked at random)."""
        self._park(where, "select_recv", 0, None)

    @precondition(lambda self: not any(self.model.send_ready(i) for i in range(NCHANS)))
    @rule(where=st.integers(0, 1), v0=values, v1=values)
    def park_select_send(self, where: int, v0: Any, v1: Any) -> None:
        """A select sending on both channels, when neither can take a value."""
        self._park(where, "select_send", 0, (v0, v1))

    # ---- what must agree after every step

    @invariant()
    def agrees_with_model(self) -> None:
        m = self.model
        for impl in self.impls:
            assert impl.all_results() == m.expected, impl.name
            for c, mc in enumerate(m.chans):
                ch = impl.ch0[c]
                stats = ch.stats()
                assert (impl.name, c, len(ch), ch.cap, stats.senders_waiting,
                        stats.receivers_waiting, stats.closed) == (
                    impl.name, c, len(mc.buf), mc.cap, mc.live(mc.sendq), mc.live(mc.recvq),
                    mc.closed)

    def teardown(self) -> None:
        try:
            shared = [impl for impl in self.impls if impl.fold is not None]
            if len(shared) == 2:
                a, b = (impl.arena_words() for impl in shared)
                diff = {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
                assert not diff, f"python vs native arena words differ: {diff}"
        finally:
            for impl in self.impls:
                if impl.fold is not None:
                    impl.fold.close()
            self.impls = []
            csp_mp.shutdown()  # ends P0's goroutines still parked


_SETTINGS = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.timeout(120)
def test_channels_agree() -> None:
    """Bounded: part of every `make test` (a few seconds)."""
    run = DifferentialChannelMachine.TestCase
    run.settings = settings(max_examples=int(os.environ.get("DIFF_EXAMPLES", "40")),
                            stateful_step_count=int(os.environ.get("DIFF_STEPS", "50")),
                            **_SETTINGS)
    run().runTest()


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_channels_agree_long() -> None:
    """The same machine, many more and longer examples."""
    run = DifferentialChannelMachine.TestCase
    run.settings = settings(max_examples=300, stateful_step_count=60, **_SETTINGS)
    run().runTest()
