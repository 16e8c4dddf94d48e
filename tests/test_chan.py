"""Channels on one P: SPEC's channel table, and Go's own chan_test.go scenarios ported."""

from __future__ import annotations

import gc
import weakref
from collections import Counter

import msgspec
import pytest
from helpers import run1, wait_blocked, wait_reason, wait_until

import csp_mp
from csp_mp import (
    Chan,
    ClosedChannelError,
    WaitGroup,
    default,
    go,
    go_local,
    nilchan,
    runtime,
    select,
    testing,
)

CAPS = [0, 1, 5]


# ---------------------------------------------------------------- construction


def test_cap_and_len_of_new_channels() -> None:
    def main():
        for cap in (0, 1, 7, 100):
            ch = Chan(cap)
            assert (len(ch), ch.cap) == (0, cap)
            for i in range(cap):
                ch.send(i)
            assert (len(ch), ch.cap) == (cap, cap)
        assert Chan().cap == 0
    run1(main)


def test_negative_capacity_is_value_error() -> None:
    with pytest.raises(ValueError):
        Chan(-1)


@pytest.mark.parametrize("bad", [1.5, "3", None, True])
def test_non_int_capacity_is_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        Chan(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- send / recv / close


@pytest.mark.parametrize("cap", CAPS)
def test_receive_from_empty_channel_blocks(cap: int) -> None:
    def main():
        ch = Chan(cap)
        got = []
        go(lambda: got.append(ch.recv()))
        go(lambda: got.append(ch.recv_ok()))
        wait_blocked(ch, receivers=2)
        assert got == []
        assert select(ch.recv, default) == (1, None)
        assert select(ch.recv_ok, default) == (1, None)
        ch.send(0)
        ch.send(0)
        wait_until(lambda: len(got) == 2, "both receivers done")
        assert sorted(got, key=repr) == sorted([0, (0, True)], key=repr)
    run1(main)


@pytest.mark.parametrize("cap", CAPS)
def test_send_to_full_channel_blocks(cap: int) -> None:
    def main():
        ch = Chan(cap)
        for i in range(cap):
            ch.send(i)
        sent = []
        done = Chan()

        def sender():
            ch.send("last")
            sent.append(True)
            done.send(None)

        go(sender)
        wait_blocked(ch, senders=1)
        assert sent == []
        assert select((ch.send, "x"), default) == (1, None)
        assert len(ch) == cap
        got = [ch.recv() for _ in range(cap + 1)]
        done.recv()
        assert got == [*range(cap), "last"]
        assert sent == [True]
    run1(main)


@pytest.mark.parametrize("cap", CAPS)
def test_closed_channel_drains_then_yields_zero(cap: int) -> None:
    def main():
        ch = Chan(cap)
        for i in range(cap):
            ch.send(i)
        ch.close()
        assert [ch.recv() for _ in range(cap)] == list(range(cap))
        assert ch.recv() is None
        assert ch.recv_ok() == (None, False)
        assert ch.recv_ok() == (None, False)
        assert len(ch) == 0
    run1(main)


def test_recv_ok_reports_true_for_values_even_none() -> None:
    def main():
        ch = Chan(2)
        ch.send(None)
        ch.close()
        assert ch.recv_ok() == (None, True)
        assert ch.recv_ok() == (None, False)
    run1(main)


@pytest.mark.parametrize("cap", CAPS)
def test_close_wakes_every_receiver_with_not_ok(cap: int) -> None:
    def main():
        ch = Chan(cap)
        out = Chan(10)
        for _ in range(3):
            go(lambda: out.send(ch.recv_ok()))
        wait_blocked(ch, receivers=3)
        ch.close()
        assert [out.recv() for _ in range(3)] == [(None, False)] * 3
    run1(main)


@pytest.mark.parametrize("cap", CAPS)
def test_close_makes_waiting_senders_raise(cap: int) -> None:
    def main():
        ch = Chan(cap)
        for i in range(cap):
            ch.send(i)
        out = Chan(10)

        def sender(i):
            try:
                ch.send(i)
            except ClosedChannelError as exc:
                out.send(str(exc))
            else:
                out.send("sent")

        for i in range(2):
            go(sender, i)
        wait_blocked(ch, senders=2)
        ch.close()
        assert [out.recv() for _ in range(2)] == ["send on closed channel"] * 2
        assert [ch.recv() for _ in range(cap)] == list(range(cap))  # buffered values survive
        assert ch.recv_ok() == (None, False)
    run1(main)


def test_misuse_errors_use_go_wording() -> None:
    def main():
        ch = Chan(1)
        ch.close()
        with pytest.raises(ClosedChannelError, match="^send on closed channel$"):
            ch.send(1)
        with pytest.raises(ClosedChannelError, match="^close of closed channel$"):
            ch.close()
        with pytest.raises(ClosedChannelError, match="^close of nil channel$"):
            nilchan.close()
        with pytest.raises(ClosedChannelError, match="^send on closed channel$"):
            select((ch.send, 1), default)
        assert len(ch) == 0
    run1(main)
    assert issubclass(ClosedChannelError, RuntimeError)


@pytest.mark.parametrize("cap", CAPS)
def test_iteration_receives_until_closed_and_drained(cap: int) -> None:
    def main():
        ch = Chan(cap)

        def producer():
            for i in range(20):
                ch.send(i)
            ch.close()

        go(producer)
        return list(ch)
    assert run1(main) == list(range(20))


@pytest.mark.parametrize("cap", CAPS)
def test_single_sender_fifo(cap: int) -> None:
    def main():
        ch = Chan(cap)
        go(lambda: [ch.send(i) for i in range(500)])
        return [ch.recv() for _ in range(500)]
    assert run1(main) == list(range(500))


def test_values_on_one_p_pass_by_reference() -> None:
    def main():
        ch = Chan()
        obj = {"a": [1, 2]}
        go(ch.send, obj)
        got = ch.recv()
        assert got is obj
        buf = Chan(1)
        buf.send(obj)
        assert buf.recv() is obj
    run1(main)


# ---------------------------------------------------------------- nilchan


def test_nilchan_blocks_forever_and_switches_select_cases_off() -> None:
    def main():
        assert select(nilchan.recv, default) == (1, None)
        assert select((nilchan.send, 1), default) == (1, None)
        ch = Chan(1)
        ch.send(7)
        assert select(nilchan.recv, ch.recv) == (1, 7)
        go(nilchan.recv)
        go(nilchan.send, 1)
        wait_reason("chan receive (nil chan)")
        wait_reason("chan send (nil chan)")
        assert runtime.num_goroutine() == 3
        assert nilchan.cap == 0 and len(nilchan) == 0
        return "main returned; nilchan waiters were stopped"
    assert run1(main).startswith("main returned")


# ---------------------------------------------------------------- typed channels


class Point(msgspec.Struct):
    x: int
    y: int


def test_typed_channel_validates_on_send() -> None:
    def main():
        ch = Chan[int](8)
        assert ch.cap == 8
        ch.send(3)
        with pytest.raises(TypeError):
            ch.send("three")
        with pytest.raises(TypeError):
            ch.send(3.5)
        assert len(ch) == 1  # the failed sends changed nothing
        assert ch.recv() == 3
        floats = Chan[list[float]](1)
        floats.send([1.0, 2.5])
        with pytest.raises(TypeError):
            floats.send(["a"])
        assert floats.recv() == [1.0, 2.5]
        pts = Chan[Point]()
        go(pts.send, Point(1, 2))
        assert pts.recv() == Point(1, 2)
        with pytest.raises(TypeError):
            pts.send((1, 2))
        with pytest.raises(TypeError):
            select((ch.send, "nope"), default)
        assert len(ch) == 0
    run1(main)


def test_typed_channel_needs_a_type_msgspec_knows() -> None:
    with pytest.raises(TypeError):
        Chan[object()]  # type: ignore[misc]


def test_typed_channel_rejects_negative_capacity() -> None:
    with pytest.raises(ValueError):
        Chan[int](-1)


# ---------------------------------------------------------------- ported from Go's chan_test.go


@pytest.mark.parametrize("cap", [0, 1, 2, 7, 64])
def test_many_senders_many_receivers_each_value_once(cap: int) -> None:
    """TestChan: 4 senders x L values, 4 receivers; every value arrives exactly 4 times."""
    P, L = 4, 300

    def main():
        ch = Chan(cap)
        done = Chan()
        for _ in range(P):
            go(lambda: [ch.send(i) for i in range(L)])

        def receiver():
            done.send(Counter(ch.recv() for _ in range(L)))

        for _ in range(P):
            go(receiver)
        total: Counter = Counter()
        for _ in range(P):
            total += done.recv()
        return total
    total = run1(main)
    assert len(total) == L
    assert set(total.values()) == {P}


def test_nonblocking_recv_never_misses_a_closed_ready_channel() -> None:
    """TestNonblockRecvRace: a buffered value plus a close: select never takes default."""
    def main():
        misses = 0
        for _ in range(500):
            c = Chan(1)
            c.send(1)
            res = Chan(1)
            go(lambda c=c, res=res: res.send(select(c.recv, default)[0]))
            c.close()
            c.recv()
            misses += res.recv()
        return misses
    assert run1(main) == 0


@pytest.mark.parametrize("close_c2", [False, True])
def test_nonblocking_select_sees_one_moment(close_c2: bool) -> None:
    """TestNonblockSelectRace(2): one of c1, c2 is always ready, so default never runs."""
    def main():
        done = Chan(1)
        for _ in range(500):
            c1, c2 = Chan(1), Chan(0 if close_c2 else 1)
            c1.send(1)

            def probe(c1=c1, c2=c2):
                i, _ = select(c1.recv, c2.recv, default)
                done.send(i != 2)

            go(probe)
            if close_c2:
                c2.close()
            else:
                c2.send(1)
            select(c1.recv, default)
            assert done.recv(), "no chan is ready"
    run1(main)


def test_send_of_arbitrary_objects() -> None:
    """TestChanSendInterface: sending any object, also as a select case, with default."""
    class MT:
        pass

    def main():
        m = MT()
        c = Chan(1)
        c.send(m)
        assert select((c.send, m), default) == (1, None)
        assert select((c.send, m), (c.send, MT()), default) == (2, None)
        assert c.recv() is m
    run1(main)


def test_multi_consumer_conserves_every_value() -> None:
    """TestMultiConsumer: 23 workers ranging over a queue; count and sum are exact."""
    nwork, niter = 23, 20_000
    pn = [2, 3, 7, 11, 13, 17, 19, 23, 27, 31]

    def main():
        q, r = Chan(nwork * 3), Chan(nwork * 3)
        wg = WaitGroup()
        expect = 0

        def worker(w):
            for v in q:
                if pn[w % len(pn)] == v:
                    runtime.gosched()  # mess with the FIFO-ish nature of range
                r.send(v)
            wg.done()

        for i in range(nwork):
            wg.add(1)
            go(worker, i)

        def feeder():
            nonlocal expect
            for i in range(niter):
                v = pn[i % len(pn)]
                expect += v
                q.send(v)
            q.close()
            wg.wait()
            r.close()

        go(feeder)
        n = s = 0
        for v in r:
            n += 1
            s += v
        return n, s, expect
    n, s, expect = run1(main)
    assert (n, s) == (niter, expect)


def _deep(n: int) -> int:
    return 0 if n == 0 else 1 + _deep(n - 1)


def test_blocked_sender_with_deep_stack_survives_gc() -> None:
    """TestShrinkStackDuringBlockedSend: a sender that used lots of stack, blocked, then GC."""
    def main():
        c, done = Chan(), Chan()

        def sender():
            for i in range(10):
                c.send(i)
                assert _deep(300) == 300

        go(lambda: (sender(), done.send(None)))
        for i in range(10):
            assert c.recv() == i
            wait_blocked(c, senders=1) if i < 9 else None
            gc.collect()
        done.recv()
    run1(main)


def test_select_on_duplicate_channel_leaves_queue_consistent() -> None:
    """TestSelectDuplicateChannel: one goroutine queued twice on c, then woken via d."""
    def main():
        c, d, e = Chan(), Chan(), Chan()
        go(lambda: (select(c.recv, c.recv, d.recv), e.send(9)))
        wait_blocked(c, receivers=2)
        b_got = Chan(1)
        go(lambda: b_got.send(c.recv()))
        wait_blocked(c, receivers=3)
        d.send(7)
        assert e.recv() == 9
        c.send(8)  # must wake B, not the goroutine that already left
        assert b_got.recv() == 8
        assert c.stats().receivers_waiting == 0
    run1(main)


def test_stats_snapshot() -> None:
    def main():
        ch = Chan(2)
        ch.send(1)
        st = ch.stats()
        assert (st.buffered, st.senders_waiting, st.receivers_waiting) == (1, 0, 0)
        assert not st.closed
        ch.close()
        assert ch.stats().closed and ch.closed
    run1(main)
    assert csp_mp.Chan is Chan


class _Payload:
    """A value whose lifetime the test watches (a weakref)."""


def _receive_and_drop(ch: Chan, got: Chan) -> None:
    v = ch.recv()
    ref = weakref.ref(v)
    del v
    got.send(ref)


def _hand_over_then_park(ch: Chan, block: Chan) -> None:
    ch.send(_Payload())  # the receiver waits: handed over, the receiver readied
    block.recv()  # parks: straight into the receiver


@pytest.mark.parametrize("rounds", [1, 40])  # 40: some switches go through the hub's loop
def test_a_parked_goroutine_keeps_no_value_it_handed_over(rounds: int) -> None:
    """A sender that wakes a parked receiver and then parks itself switches straight into the
    receiver: the value travels in the receiver's record, so once the receiver has dropped it
    nothing keeps it alive, however long the sender stays parked."""
    def main() -> list[bool]:
        alive = []
        for _ in range(rounds):
            ch, block, got = Chan(), Chan(), Chan(1)
            go_local(_receive_and_drop, ch, got)
            testing.wait_all_blocked()  # the receiver parked first
            go_local(_hand_over_then_park, ch, block)
            ref = got.recv()
            gc.collect()
            alive.append(ref() is not None)
            block.close()
        return alive

    assert run1(main) == [False] * rounds
