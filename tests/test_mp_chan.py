"""Channels and select across Ps: SPEC's channel table and select, parametrized over ``procs``.

The main goroutine runs on P0; its partners are put on the last P (``other_p``), so with
``procs=1`` every test is the one-process case and with ``procs>1`` every value crosses processes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import mp_helpers as H
import msgspec
import numpy as np
import pytest
from mp_helpers import run

import csp_mp
from csp_mp import Chan, ClosedChannelError, after, default, go_local, runtime, select
from csp_mp._proc import proc


def blocked(ch: Chan, senders: int = 0, receivers: int = 0) -> None:
    """Wait until ``ch`` has at least that many parked senders / receivers."""
    def ok() -> bool:
        st = ch.stats()
        return st.senders_waiting >= senders and st.receivers_waiting >= receivers
    H.wait_until(ok, f"{senders} senders / {receivers} receivers parked on {ch!r}")


# ---------------------------------------------------------------- placement


def test_go_on_puts_a_goroutine_on_the_chosen_p(procs4: int) -> None:
    def main():
        out = Chan(procs4)
        for p in range(procs4):
            H.go_on(p, H.report_p, out)
        return sorted(out.recv() for _ in range(procs4))

    got = run(main, procs4)
    assert [p for p, _pid in got] == list(range(procs4))
    assert len({pid for _p, pid in got}) == procs4  # one process per P


# ---------------------------------------------------------------- send / recv


def test_unbuffered_send_completes_only_when_received(procs: int) -> None:
    def sender(ch: Chan, sent: csp_mp.atomic.Int64, done: Chan) -> None:
        ch.send("hello")
        sent.store(1)
        done.send(None)

    def main():
        ch, done = Chan(), Chan()
        sent = csp_mp.atomic.Int64(0)
        H.go_on(H.other_p(procs), sender, ch, sent, done)
        blocked(ch, senders=1)
        assert sent.load() == 0  # parked until a receiver has the value
        v = ch.recv()
        done.recv()
        return v, sent.load()

    assert run(main, procs) == ("hello", 1)


def test_buffered_channel_fills_then_blocks_and_keeps_order(procs: int) -> None:
    def main():
        ch = Chan(5)
        H.go_on(H.other_p(procs), H.send_all, ch, list(range(6)))
        blocked(ch, senders=1)  # five buffered, the sixth send parked
        assert (len(ch), ch.cap) == (5, 5)
        return [ch.recv() for _ in range(6)]

    assert run(main, procs) == list(range(6))


def test_receiver_on_another_p_gets_values_in_order(procs: int) -> None:
    def main():
        ch, out = Chan(3), Chan(1)
        H.go_on(H.other_p(procs), H.recv_n, ch, 50, out)
        for i in range(50):
            ch.send(i)
        return out.recv()

    assert run(main, procs) == list(range(50))


def _fast_ops() -> int:
    """Sends and receives this P's handles did on the compiled core's fast path so far (0 on
    the Python path). On an unbuffered channel each is a hand-off to a parked partner."""
    b = proc.broker
    peers = getattr(b, "peers", None)
    return peers.ops if peers is not None else 0


@pytest.mark.parametrize("kind", ["plain", "tuple", "pickled"])
def test_each_send_hands_off_to_a_receiver_parked_on_another_p(procs: int, kind: str) -> None:
    def value(i: int) -> Any:
        return {"plain": i, "tuple": (i, "x", 1.5), "pickled": [i]}[kind]

    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(H.other_p(procs), H.recv_n, ch, 100, out)
        ops = _fast_ops()
        for i in range(100):
            blocked(ch, receivers=1)  # the receiver is parked: the send hands off
            ch.send(value(i))
        ops = _fast_ops() - ops
        return out.recv(), ops

    got, in_c = run(main, procs)
    assert got == [value(i) for i in range(100)]
    if procs > 1 and runtime.native() and kind != "pickled":
        assert in_c == 100  # every hand-off in one call of the compiled core


def test_each_recv_takes_from_a_sender_parked_on_another_p(procs: int) -> None:
    def main():
        ch = Chan()
        H.go_on(H.other_p(procs), H.send_all, ch, list(range(100)))
        got = []
        ops = _fast_ops()
        for _ in range(100):
            blocked(ch, senders=1)  # the sender is parked: the receive takes its value
            got.append(ch.recv())
        return got, _fast_ops() - ops

    got, in_c = run(main, procs)
    assert got == list(range(100))
    if procs > 1 and runtime.native():
        assert in_c == 100


def test_each_recv_on_a_full_buffer_takes_in_the_parked_senders_value(procs: int) -> None:
    def main():
        ch = Chan(2)
        H.go_on(H.other_p(procs), H.send_all, ch, list(range(50)))
        got = []
        ops = _fast_ops()
        for i in range(50):
            if i < 48:
                blocked(ch, senders=1)  # the buffer is full and the next send parked
            got.append(ch.recv())
        return got, _fast_ops() - ops

    got, in_c = run(main, procs)
    assert got == list(range(50))
    if procs > 1 and runtime.native():
        assert in_c == 50


def test_a_parked_receiver_of_the_same_p_gets_the_sent_object_itself(procs: int) -> None:
    def echo_once(ch: Chan) -> None:
        ch.send(ch.recv())

    def recv_one(ch: Chan, out: Chan) -> None:
        out.send(ch.recv())

    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(H.other_p(procs), echo_once, ch)  # ch is shared from here on
        ch.send("promoted")
        assert ch.recv() == "promoted"
        sent = []
        for obj in (["a list"], "a str " + str(procs), (1, 2)):
            go_local(recv_one, ch, out)
            blocked(ch, receivers=1)
            ch.send(obj)
            sent.append(out.recv() is obj)
        return sent

    assert run(main, procs) == [True, True, True]


def test_a_timed_out_select_send_is_never_received(procs: int) -> None:
    """The losing select's record keeps its value in the send queue until a receiver drops it;
    the receiver then parks and takes the next real send."""
    def late_recv(ch: Chan, start: Chan, out: Chan) -> None:
        start.recv()
        out.send(ch.recv())

    def main():
        ch, start, out = Chan(), Chan(), Chan(1)
        H.go_on(H.other_p(procs), late_recv, ch, start, out)
        for v in ("lost", b"lost bytes", ["lost list"]):
            assert select((ch.send, v), after(0.02).recv)[0] == 1  # the timer won
        start.send(None)
        blocked(ch, receivers=1)
        ch.send("kept")
        return out.recv(), ch.stats()

    got, st = run(main, procs)
    assert got == "kept"
    assert (st.senders_waiting, st.receivers_waiting) == (0, 0)


def test_len_and_cap_agree_in_every_p(procs: int) -> None:
    def measure(ch: Chan, out: Chan) -> None:
        out.send((len(ch), ch.cap))

    def main():
        ch, out = Chan(7), Chan(1)
        for i in range(3):
            ch.send(i)
        H.go_on(H.other_p(procs), measure, ch, out)
        remote = out.recv()
        return remote, (len(ch), ch.cap)

    assert run(main, procs) == ((3, 7), (3, 7))


def test_buffered_values_survive_promotion(procs: int) -> None:
    def main():
        ch, out = Chan(10), Chan(1)
        for i in range(10):
            ch.send(("v", i))
        ch.close()  # closed and full: the closed state travels too
        H.go_on(H.other_p(procs), H.recv_all, ch, out)
        return out.recv()

    assert run(main, procs) == [("v", i) for i in range(10)]


# ---------------------------------------------------------------- close


@pytest.mark.parametrize("cap", [0, 2])
def test_close_wakes_every_waiter_in_every_p(procs: int, cap: int) -> None:
    per_p = 3

    def main():
        rch, sch, out = Chan(cap), Chan(0), Chan(4 * per_p * procs)
        for p in range(procs):
            for _ in range(per_p):
                H.go_on(p, H.recv_ok_to, rch, out)
                H.go_on(p, H.send_catching, sch, "x", out)
        blocked(rch, receivers=per_p * procs)
        blocked(sch, senders=per_p * procs)
        rch.close()
        sch.close()
        return [out.recv() for _ in range(2 * per_p * procs)]

    got = Counter(run(main, procs))
    assert got == {(None, False): per_p * procs, "ClosedChannelError": per_p * procs}


def test_recv_ok_drains_then_reports_closed(procs: int) -> None:
    def three(ch: Chan, out: Chan) -> None:
        out.send([ch.recv_ok() for _ in range(3)])

    def main():
        ch, out = Chan(2), Chan(1)
        ch.send(1)
        ch.send(2)
        ch.close()
        H.go_on(H.other_p(procs), three, ch, out)
        return out.recv()

    assert run(main, procs) == [(1, True), (2, True), (None, False)]


def test_recv_on_closed_drained_channel_returns_none_at_once(procs: int) -> None:
    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(H.other_p(procs), H.recv_ok_to, ch, out)
        blocked(ch, receivers=1)
        ch.close()
        first = out.recv()
        return first, ch.recv(), ch.recv_ok()

    assert run(main, procs) == ((None, False), None, (None, False))


def test_close_and_send_errors_across_ps(procs: int) -> None:
    def closer(ch: Chan, out: Chan) -> None:
        ch.close()
        out.send(None)

    def main():
        ch, out = Chan(1), Chan(1)
        H.go_on(H.other_p(procs), closer, ch, out)
        out.recv()
        errs = []
        for op in (ch.close, lambda: ch.send(1)):
            try:
                op()
            except ClosedChannelError as exc:
                errs.append(str(exc))
        return errs

    assert run(main, procs) == ["close of closed channel", "send on closed channel"]


def test_for_loop_ends_when_a_remote_sender_closes(procs: int) -> None:
    def producer(ch: Chan) -> None:
        for i in range(100):
            ch.send(i)
        ch.close()

    def main():
        ch = Chan(4)
        H.go_on(H.other_p(procs), producer, ch)
        return list(ch)

    assert run(main, procs) == list(range(100))


# ---------------------------------------------------------------- values crossing processes


VALUES = [
    (1, "two", 3.0),
    [1, (2, 3), [4]],
    {"a": (1, 2), 3: [4.5]},
    {1, 2, 3},
    frozenset({"x"}),
    b"bytes",
    bytearray(b"mutable"),
    "unicode \u00e9\u4e2d",
    2**100,
    -7,
    1.5,
    complex(1, 2),
    None,
    True,
    (),
    ((), [()]),
]


def test_values_arrive_equal_and_of_the_same_type(procs: int) -> None:
    def main():
        inp, out = Chan(), Chan()
        H.go_on(H.other_p(procs), H.echo_types, inp, out)
        got = []
        for v in VALUES:
            inp.send(v)
            got.append(out.recv())
        inp.close()
        return got

    got = run(main, procs)
    assert len(got) == len(VALUES)
    for v, (back, remote_type) in zip(VALUES, got, strict=True):
        assert remote_type == type(v).__name__, v
        assert type(back) is type(v) and back == v, (v, back)


@pytest.mark.parametrize("cap", [0, 3])
def test_numpy_arrays_and_large_bytes_cross_intact(procs: int, cap: int) -> None:
    rng = np.random.default_rng(7)
    arrays = [
        np.arange(10, dtype=np.int32),
        rng.random((300, 400)),  # ~1 MB: out of band
        np.asfortranarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)),
        np.arange(20.0)[::3],  # not contiguous
        np.zeros((0, 3)),
    ]
    big = bytes(rng.integers(0, 256, 8 << 20, dtype=np.uint8))

    def main():
        inp, out = Chan(cap), Chan(cap)
        H.go_on(H.other_p(procs), H.echo, inp, out)
        go_local(H.feed, inp, [*arrays, big])
        return list(out)

    got = run(main, procs)
    assert len(got) == len(arrays) + 1
    for a, b in zip(arrays, got, strict=False):
        assert type(b) is np.ndarray
        assert b.dtype == a.dtype and b.shape == a.shape
        assert np.array_equal(a, b)
    assert type(got[-1]) is bytes and got[-1] == big


def test_unserializable_value_is_type_error_and_channel_unchanged(procs: int) -> None:
    def main():
        ch = Chan(2)
        ch.send("kept")
        if procs > 1:
            H.go_on(1, H.noop, ch)  # ch is now shared: values must be serialized
        try:
            ch.send(threading.Lock())
        except TypeError as exc:
            err = str(exc)
        else:
            err = None
        return err, len(ch), ch.recv()

    err, n, v = run(main, procs)
    if procs == 1:  # one process: values pass by reference, nothing to serialize
        assert err is None and n == 2
    else:
        assert err is not None and "lock" in err
        assert (n, v) == (1, "kept")


def test_typed_channel_validates_and_decodes_across_ps(procs: int) -> None:
    good = [H.Point(1, 2.0), H.Point(-3, 0.5)]

    def main():
        ch, out = csp_mp.Chan[H.Point](4), Chan(1)
        H.go_on(H.other_p(procs), H.send_typed, ch, good, {"x": "no"}, out)
        err = out.recv()
        return err, [ch.recv() for _ in good]

    err, got = run(main, procs)
    assert err is not None and err[0] == "TypeError" and "Point" in err[1]
    assert got == good and all(type(v) is H.Point for v in got)


def test_typed_int_channel_keeps_ints(procs: int) -> None:
    def main():
        ch, out = csp_mp.Chan[int](0), Chan(1)
        H.go_on(H.other_p(procs), H.send_typed, ch, [1, 2**40, -5], "7", out)
        err = out.recv()
        return err, [ch.recv() for _ in range(3)]

    err, got = run(main, procs)
    assert err is not None and err[0] == "TypeError"
    assert got == [1, 2**40, -5] and all(type(v) is int for v in got)


def test_typed_list_of_float_channel(procs: int) -> None:
    def main():
        ch, out = csp_mp.Chan[list[float]](1), Chan(1)
        H.go_on(H.other_p(procs), H.send_typed, ch, [[1.0, 2.5], []], [1.0, "x"], out)
        err = out.recv()
        return err, [ch.recv(), ch.recv()]

    err, got = run(main, procs)
    assert err is not None and err[0] == "TypeError"
    assert got == [[1.0, 2.5], []]


@pytest.mark.parametrize("bad", [H.Point("one", 2.0), H.Point(1, "two")], ids=["x", "y"])
def test_typed_channel_checks_the_fields_of_a_struct(procs: int, bad: H.Point) -> None:
    good = [H.Point(1, 2.0), H.Point(3, 4.5)]

    def main():
        ch, out = csp_mp.Chan[H.Point](4), Chan(1)
        H.go_on(H.other_p(procs), H.send_typed, ch, good, bad, out)
        err = out.recv()
        return err, [ch.recv() for _ in good], len(ch)

    err, got, left = run(main, procs)
    assert err is not None and err[0] == "TypeError", err
    assert "Chan[Point] send of Point" in err[1] and "got `str`" in err[1], err
    assert got == good and left == 0  # the bad value never entered the channel


def test_typed_channel_checks_nested_struct_fields(procs: int) -> None:
    good = [H.Segment(H.Point(1, 2.0), [H.Point(3, 4.0)])]
    bad = H.Segment(H.Point(1, 2.0), [H.Point(3, 4.0), H.Point("five", 6.0)])

    def main():
        ch, out = csp_mp.Chan[H.Segment](2), Chan(1)
        H.go_on(H.other_p(procs), H.send_typed, ch, good, bad, out)
        err = out.recv()
        return err, [ch.recv() for _ in good]

    err, got = run(main, procs)
    assert err is not None and err[0] == "TypeError", err
    assert "at `$.rest[1].x`" in err[1], err
    assert got == good


def test_msgspec_struct_is_a_known_type() -> None:
    assert msgspec.inspect.type_info(H.Point)  # the typed tests rely on it


# ---------------------------------------------------------------- select


def test_select_takes_exactly_one_of_two_ready_remote_senders(procs: int) -> None:
    def main():
        a, b = Chan(), Chan()
        other = H.other_p(procs)
        H.go_on(other, H.send_all, a, ["a"])
        H.go_on(other, H.send_all, b, ["b"])
        blocked(a, senders=1)
        blocked(b, senders=1)
        i, v = select(a.recv, b.recv)
        loser = b if i == 0 else a
        assert v == ("a", "b")[i]
        st = loser.stats()  # the losing sender is still parked, its value not taken
        assert st.senders_waiting == 1 and st.buffered == 0
        return sorted([v, loser.recv()])

    assert run(main, procs) == ["a", "b"]


def test_select_send_case_to_a_remote_select(procs: int) -> None:
    def pick(a: Chan, b: Chan, out: Chan) -> None:
        out.send(select(a.recv, b.recv))

    def main():
        a, b, out = Chan(), Chan(), Chan(1)
        H.go_on(H.other_p(procs), pick, a, b, out)
        blocked(a, receivers=1)
        blocked(b, receivers=1)
        i, _ = select((a.send, "to a"), (b.send, "to b"))
        j, v = out.recv()
        assert i == j and v == ("to a", "to b")[i]
        # the other case did not happen: nobody is left to receive on its channel
        assert select((a.send, 1), (b.send, 2), default) == (2, None)
        return True

    assert run(main, procs)


def test_remote_select_woken_by_a_send_from_p0(procs: int) -> None:
    def pick(a: Chan, b: Chan, out: Chan) -> None:
        out.send(select(a.recv, b.recv_ok))

    def main():
        a, b, out = Chan(), Chan(), Chan(1)
        H.go_on(H.other_p(procs), pick, a, b, out)
        blocked(b, receivers=1)
        b.send(42)
        return out.recv()

    assert run(main, procs) == (1, (42, True))


def test_remote_select_woken_by_close(procs: int) -> None:
    def pick(a: Chan, b: Chan, out: Chan) -> None:
        out.send(select(a.recv, b.recv_ok))

    def main():
        a, b, out = Chan(), Chan(), Chan(1)
        H.go_on(H.other_p(procs), pick, a, b, out)
        blocked(a, receivers=1)
        blocked(b, receivers=1)
        b.close()
        return out.recv()

    assert run(main, procs) == (1, (None, False))


def test_select_default_on_shared_channels(procs: int) -> None:
    def main():
        ch = Chan(1)
        H.go_on(H.other_p(procs), H.noop, ch)
        first = select(ch.recv, (Chan().send, 1), default)
        ch.send("v")
        second = select(ch.recv, default)
        third = select((ch.send, 1), default)
        fourth = select((ch.send, 2), default)
        return first, second, third, fourth

    assert run(main, procs) == ((2, None), (0, "v"), (0, None), (1, None))


def test_select_timeout_on_a_remote_channel(procs: int) -> None:
    def main():
        ch = Chan()
        H.go_on(H.other_p(procs), H.block_forever, ch)
        t0 = time.monotonic()
        i, v = select(ch.recv, after(0.05).recv)
        return i, isinstance(v, float), time.monotonic() - t0 >= 0.05

    assert run(main, procs) == (1, True, True)


def test_remote_select_with_timeout(procs: int) -> None:
    def wait_a_bit(ch: Chan, out: Chan) -> None:
        out.send(select(ch.recv, after(0.05).recv)[0])

    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(H.other_p(procs), wait_a_bit, ch, out)
        return out.recv()

    assert run(main, procs) == 1


def test_go_local_stays_on_its_p(procs: int) -> None:
    def spawner(out: Chan) -> None:
        for _ in range(20):
            go_local(H.report_p, out)

    def main():
        out = Chan(20)
        other = H.other_p(procs)
        H.go_on(other, spawner, out)
        return {out.recv()[0] for _ in range(20)}, other

    ps, other = run(main, procs)
    assert ps == {other}


def test_runtime_current_p_of_main_is_zero(procs: int) -> None:
    assert run(runtime.current_p, procs) == 0


# ---------------------------------------------------------------- timers' channels


def test_timer_channels_made_in_p0_deliver_in_another_p(procs: int) -> None:
    def remote(c1: Chan, tk: Chan, out: Chan) -> None:
        first = c1.recv()
        ticks = [tk.recv() for _ in range(3)]
        out.send((type(first).__name__, ticks == sorted(ticks), len(set(ticks))))

    def main():
        out = Chan(1)
        ticker = csp_mp.Ticker(0.01)
        H.go_on(H.other_p(procs), remote, after(0.02), ticker.c, out)
        got = out.recv()
        ticker.stop()
        return got

    assert run(main, procs) == ("float", True, 3)


def test_sleep_in_another_p_parks_only_its_goroutine(procs: int) -> None:
    def sleeper(out: Chan) -> None:
        csp_mp.sleep(0.05)
        out.send("slept")

    def main():
        out, ch = Chan(1), Chan()
        H.go_on(H.other_p(procs), sleeper, out)
        H.go_on(H.other_p(procs), H.send_all, ch, [1, 2, 3])
        vals = [ch.recv() for _ in range(3)]  # not held up by the sleeper
        return vals, out.recv()

    assert run(main, procs) == ([1, 2, 3], "slept")


def _park_senders(ch: Chan, p: int, k: int) -> None:
    for i in range(k):
        go_local(ch.send, f"{p}-{i}-" + "x" * 200)


def _park_receivers(ch: Chan, out: Chan, k: int) -> None:
    for _ in range(k):
        go_local(H.recv_ok_to, ch, out)


def test_hundreds_of_waiters_grow_the_shared_wait_queues(procs: int) -> None:
    """Parked senders (each record carrying its value) and parked receivers outgrow the wait
    queues a shared channel starts with; every value still arrives exactly once."""
    from csp_mp._chan import block

    k = 150

    def main():
        sch, rch, out = Chan(0), Chan(0), Chan(k * procs)
        for p in range(procs):
            H.go_on(p, _park_senders, sch, p, k)
        blocked(sch, senders=k * procs)
        sizes = [sch._st.sendq.capacity] if procs > 1 else []
        got = Counter(sch.recv() for _ in range(k * procs))
        for p in range(procs):
            H.go_on(p, _park_receivers, rch, out, k)
        blocked(rch, receivers=k * procs)
        if procs > 1:
            sizes.append(rch._st.recvq.capacity)
        for i in range(k * procs):
            rch.send(i)
        back = Counter(v for v, ok in (out.recv() for _ in range(k * procs)))
        return got, back, sizes

    got, back, sizes = run(main, procs)
    assert got == Counter(f"{p}-{i}-" + "x" * 200 for p in range(procs) for i in range(k))
    assert back == Counter(range(k * procs))
    if procs > 1:  # both queues outgrew their first ring
        assert sizes[0] > block._SENDQ_BYTES and sizes[1] > block._RECVQ_BYTES, sizes
