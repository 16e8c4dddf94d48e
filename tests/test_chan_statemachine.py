"""A buffered channel against a model: hypothesis drives send/recv/close/len and parked receivers.

Non-blocking operations go through ``select(..., default)``; parked receivers are real goroutines
of the implicit runtime, so wake-ups by send and close are checked too.
"""

from __future__ import annotations

from collections import deque

from helpers import wait_until
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import csp_mp
from csp_mp import Chan, ClosedChannelError, default, go_local, select


class BufferedChannelMachine(RuleBasedStateMachine):
    """The model: a FIFO buffer, a closed flag and a FIFO of parked receivers."""

    def __init__(self) -> None:
        super().__init__()
        self.ch: Chan = Chan(0)
        self.cap = 0
        self.buf: deque = deque()
        self.closed = False
        self.parked: deque[int] = deque()  # receiver ids, in arrival order
        self.got: dict[int, tuple] = {}  # filled by the receiver goroutines
        self.expected: dict[int, tuple] = {}
        self.next_rid = 0

    @initialize(cap=st.integers(min_value=0, max_value=4))
    def make(self, cap: int) -> None:
        self.ch = Chan(cap)
        self.cap = cap

    def _settle(self) -> None:
        """Let woken receivers run until they reported what they received."""
        wait_until(lambda: len(self.got) == len(self.expected), "receivers to report")

    @rule(v=st.integers())
    def try_send(self, v: int) -> None:
        self._try_send(v)

    @rule(vs=st.lists(st.integers(), min_size=2, max_size=6))
    def try_send_burst(self, vs: list[int]) -> None:
        for v in vs:
            self._try_send(v)

    @rule(n=st.integers(min_value=2, max_value=6))
    def try_recv_burst(self, n: int) -> None:
        for _ in range(n):
            self.try_recv()

    def _try_send(self, v: int) -> None:
        if self.closed:
            try:
                select((self.ch.send, v), default)
            except ClosedChannelError as exc:
                assert str(exc) == "send on closed channel"
            else:
                raise AssertionError("send on a closed channel succeeded")
            return
        i, val = select((self.ch.send, v), default)
        if self.parked:
            assert (i, val) == (0, None)
            self.expected[self.parked.popleft()] = (v, True)
        elif len(self.buf) < self.cap:
            assert (i, val) == (0, None)
            self.buf.append(v)
        else:
            assert (i, val) == (1, None)
        self._settle()

    @precondition(lambda self: self.parked and not self.closed)
    @rule(v=st.integers())
    def blocking_send_to_parked_receiver(self, v: int) -> None:
        self.ch.send(v)
        self.expected[self.parked.popleft()] = (v, True)
        self._settle()

    @rule()
    def try_recv(self) -> None:
        i, val = select(self.ch.recv_ok, default)
        if self.buf:
            assert (i, val) == (0, (self.buf.popleft(), True))
        elif self.closed:
            assert (i, val) == (0, (None, False))
        else:
            assert (i, val) == (1, None)

    @rule()
    def park_receiver(self) -> None:
        rid = self.next_rid
        self.next_rid += 1
        ch, got = self.ch, self.got
        go_local(lambda: got.__setitem__(rid, ch.recv_ok()))
        if self.buf:
            self.expected[rid] = (self.buf.popleft(), True)
        elif self.closed:
            self.expected[rid] = (None, False)
        else:
            self.parked.append(rid)
            wait_until(lambda: ch.stats().receivers_waiting == len(self.parked), "receiver parks")
        self._settle()

    @rule()
    def close(self) -> None:
        if self.closed:
            try:
                self.ch.close()
            except ClosedChannelError as exc:
                assert str(exc) == "close of closed channel"
            else:
                raise AssertionError("closing twice succeeded")
            return
        self.ch.close()
        self.closed = True
        while self.parked:
            self.expected[self.parked.popleft()] = (None, False)
        self._settle()

    @invariant()
    def matches_model(self) -> None:
        assert len(self.ch) == len(self.buf)
        assert self.ch.cap == self.cap
        stats = self.ch.stats()
        assert stats.receivers_waiting == len(self.parked)
        assert stats.senders_waiting == 0
        assert stats.closed == self.closed
        assert self.got == self.expected
        if self.parked:
            assert not self.buf  # a parked receiver implies an empty buffer

    def teardown(self) -> None:
        csp_mp.shutdown()  # stops receivers still parked


BufferedChannelMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None)
test_buffered_channel_against_model = BufferedChannelMachine.TestCase
