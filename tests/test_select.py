"""select on one P: case kinds, default, timeouts, exactly-one semantics, fairness, stress."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from helpers import run1, wait_blocked, wait_reason, wait_until

from csp_mp import (
    Chan,
    ClosedChannelError,
    DeadlockError,
    WaitGroup,
    after,
    default,
    go,
    nilchan,
    runtime,
    select,
)

# ---------------------------------------------------------------- case kinds and results


def test_each_case_kind_returns_index_and_value() -> None:
    def main():
        a, b, c = Chan(1), Chan(1), Chan(1)
        a.send("va")
        assert select(a.recv) == (0, "va")
        b.send("vb")
        assert select(nilchan.recv, b.recv_ok) == (1, ("vb", True))
        assert select((c.send, "vc")) == (0, None)
        assert c.recv() == "vc"
        c.close()
        assert select(c.recv_ok) == (0, (None, False))
        assert select(c.recv) == (0, None)
    run1(main)


def test_default_is_taken_only_when_nothing_is_ready() -> None:
    def main():
        a = Chan(1)
        assert select(default, a.recv) == (0, None)
        assert select(a.recv, default) == (1, None)
        a.send(1)
        assert select(default, a.recv) == (1, 1)
        assert select(default) == (0, None)
        full = Chan(1)
        full.send(0)
        assert select((full.send, 1), default, Chan().recv) == (1, None)
    run1(main)


def test_blocking_select_wakes_on_the_first_ready_case() -> None:
    def main():
        a, b = Chan(), Chan()
        out = Chan(1)
        go(lambda: out.send(select(a.recv, b.recv_ok)))
        wait_blocked(a, receivers=1)
        wait_blocked(b, receivers=1)
        b.send("x")
        assert out.recv() == (1, ("x", True))
        # the losing case was dequeued: nobody waits on a any more
        assert a.stats().receivers_waiting == 0
        assert select((a.send, 1), default) == (1, None)
    run1(main)


def test_blocking_select_send_case_completes_with_a_receiver() -> None:
    def main():
        a, b = Chan(), Chan()
        out = Chan(1)
        go(lambda: out.send(select((a.send, "to-a"), (b.send, "to-b"))))
        wait_blocked(a, senders=1)
        assert b.recv() == "to-b"
        assert out.recv() == (1, None)
        assert a.stats().senders_waiting == 0
    run1(main)


def test_exactly_one_case_takes_effect() -> None:
    """Two partners become ready at once; the select consumes exactly one of them."""
    def main():
        a, b = Chan(), Chan()
        out = Chan(1)
        go(lambda: out.send(select(a.recv, b.recv)))
        wait_blocked(a, receivers=1)
        go(a.send, "A")
        go(b.send, "B")
        i, v = out.recv()
        assert v == ("A", "B")[i]
        other = (b, a)[i]
        wait_blocked(other, senders=1)  # the other sender still waits: its value was not taken
        assert other.recv() == ("B", "A")[i]
    run1(main)


def test_plain_and_select_waiters_on_one_queue_are_served_in_order() -> None:
    """A channel's wait queue holds plain receivers (their goroutines) and select cases side by
    side: sends serve them first come, first served, and skip the case of a select that another
    channel completed meanwhile; the same for senders."""
    def main():
        ch, other = Chan(), Chan()
        got = Chan(4)
        go(lambda: got.send(("plain-1", ch.recv())))
        wait_blocked(ch, receivers=1)
        go(lambda: got.send(("select-lost", select(ch.recv, other.recv))))
        wait_blocked(ch, receivers=2)
        go(lambda: got.send(("select-2", select(ch.recv))))
        wait_blocked(ch, receivers=3)
        go(lambda: got.send(("plain-3", ch.recv())))
        wait_blocked(ch, receivers=4)
        other.send("o")  # completes the second waiter's select: its case on ch is dead
        assert got.recv() == ("select-lost", (1, "o"))
        for v in ("a", "b", "c"):
            ch.send(v)
        assert dict(got.recv() for _ in range(3)) == {
            "plain-1": "a", "select-2": (0, "b"), "plain-3": "c"}

        go(lambda: ch.send("s1"))
        wait_blocked(ch, senders=1)
        go(lambda: select((ch.send, "lost"), (other.send, "o2")))
        wait_blocked(ch, senders=2)
        go(lambda: got.send(select((ch.send, "s2"))))
        wait_blocked(ch, senders=3)
        assert other.recv() == "o2"  # the second sender's select took its other case
        assert [ch.recv(), ch.recv()] == ["s1", "s2"]
        assert got.recv() == (0, None)
        assert ch.stats().senders_waiting == 0
    run1(main)


def test_close_wakes_a_blocked_select() -> None:
    def main():
        a, b = Chan(), Chan()
        out = Chan(2)
        go(lambda: out.send(select(a.recv_ok, b.recv)))
        go(lambda: out.send(select(b.recv, a.recv)))
        wait_blocked(a, receivers=2)
        a.close()
        assert sorted([out.recv(), out.recv()], key=repr) == sorted(
            [(0, (None, False)), (1, None)], key=repr)
    run1(main)


def test_blocked_select_send_raises_when_its_channel_closes() -> None:
    def main():
        a = Chan()
        out = Chan(1)

        def sender():
            try:
                select((a.send, 1), nilchan.recv)
            except ClosedChannelError as exc:
                out.send(str(exc))

        go(sender)
        wait_blocked(a, senders=1)
        a.close()
        assert out.recv() == "send on closed channel"
    run1(main)


def test_timeout_with_after() -> None:
    def main():
        ch = Chan()
        i, v = select(ch.recv, after(0.01).recv)
        assert i == 1 and isinstance(v, float)
        ch2 = Chan(1)
        ch2.send("fast")
        assert select(ch2.recv, after(60).recv) == (0, "fast")
    run1(main)


def test_select_with_no_case_blocks_forever() -> None:
    def main():
        go(select)
        wait_reason("select (no cases)")
        return runtime.num_goroutine()
    assert run1(main) == 2

    with pytest.raises(DeadlockError) as info:
        run1(select)
    assert "select (no cases)" in info.value.stack


@pytest.mark.parametrize("bad", [
    1, "x", None, lambda: 0, (1, 2), (1,), [], print,
])
def test_bad_case_is_type_error(bad: object) -> None:
    def main():
        ch = Chan(1)
        with pytest.raises(TypeError):
            select(ch.recv, bad, default)
        assert len(ch) == 0
    run1(main)


def test_malformed_channel_cases_are_type_errors() -> None:
    def main():
        ch = Chan(1)
        for bad in (ch.send, (ch.recv, 1), (ch.send,), (ch.send, 1, 2), ch.close, ch):
            with pytest.raises(TypeError):
                select(bad, default)
        with pytest.raises(ValueError):
            select(default, default)
        assert len(ch) == 0
    run1(main)


def test_same_channel_twice_in_one_select() -> None:
    def main():
        c = Chan(2)
        c.send(1)
        c.send(2)
        seen = {select(c.recv, c.recv)[1] for _ in range(2)}
        assert seen == {1, 2}
    run1(main)


# ---------------------------------------------------------------- fairness (statistical)

# Bounds: with n trials and k equally likely ready cases, the count of each case is
# Binomial(n, 1/k); a deviation of 6 standard deviations happens with probability < 2e-9.


def _within_six_sigma(counts: Counter, n: int, k: int) -> None:
    mean = n / k
    sd = math.sqrt(n * (1 / k) * (1 - 1 / k))
    for case in range(k):
        assert abs(counts[case] - mean) <= 6 * sd, (counts, mean, sd)


def test_select_fairness_among_ready_receives() -> None:
    n = 6000

    def main():
        chans = [Chan(1) for _ in range(3)]
        counts: Counter = Counter()
        for ch in chans:
            ch.send(0)
        for _ in range(n):
            i, _v = select(*(c.recv for c in chans))
            counts[i] += 1
            chans[i].send(0)  # keep every case ready
        return counts
    counts = run1(main)
    assert sum(counts.values()) == n
    _within_six_sigma(counts, n, 3)
    # chi-square with 2 degrees of freedom: P(X > x) = exp(-x / 2); x = 41.4 gives 1e-9
    chi2 = sum((counts[i] - n / 3) ** 2 / (n / 3) for i in range(3))
    assert chi2 < 41.4, counts


def test_select_fairness_ignores_unready_cases() -> None:
    n = 4000

    def main():
        ready = [Chan(1), Chan(1)]
        never = [Chan(), Chan(1)]
        never[1].send("full")
        counts: Counter = Counter()
        for ch in ready:
            ch.send(0)
        for _ in range(n):
            i, _v = select(never[0].recv, ready[0].recv, (never[1].send, 0), ready[1].recv)
            counts[i] += 1
            ready[(i - 1) // 2].send(0)
        return counts
    counts = run1(main)
    assert set(counts) == {1, 3}
    _within_six_sigma(Counter({0: counts[1], 1: counts[3]}), n, 2)


@pytest.mark.parametrize("cap", [0, 100])
def test_pseudo_random_send(cap: int) -> None:
    """TestPseudoRandomSend: two send cases on one channel; both values appear often."""
    n = 400

    def main():
        c = Chan(cap)
        got = Chan(1)

        def receiver():
            vals = []
            for _ in range(n):
                runtime.gosched()
                vals.append(c.recv())
            got.send(vals)

        go(receiver)
        for _ in range(n):
            select((c.send, 1), (c.send, 0))
        return got.recv()
    vals = run1(main)
    ones = sum(vals)
    _within_six_sigma(Counter({0: n - ones, 1: ones}), n, 2)


# ---------------------------------------------------------------- Go's select tests ported


@pytest.mark.parametrize("cap", [0, 10])
def test_self_select(cap: int) -> None:
    """TestSelfSelect: send and receive on one channel in one select never match each other."""
    def main():
        c = Chan(cap)
        wg = WaitGroup()
        self_receives = []

        def worker(p):
            for i in range(1000):
                if p == 0 or i % 2 == 0:
                    idx, v = select((c.send, p), c.recv)
                    got = v if idx == 1 else None
                else:
                    idx, v = select(c.recv, (c.send, p))
                    got = v if idx == 0 else None
                if cap == 0 and got == p:
                    self_receives.append((p, i))

        for p in range(2):
            wg.go(worker, p)
        wg.wait()
        return self_receives
    assert run1(main) == []


@pytest.mark.stress
def test_select_stress() -> None:
    """TestSelectStress: plain and select senders/receivers on 4 channels; no deadlock, no loss."""
    N = 10_000

    def main():
        c = [Chan(), Chan(), Chan(2), Chan(3)]
        wg = WaitGroup()
        received = Counter()
        for k in range(4):
            wg.go(lambda k=k: [c[k].send(k) for _ in range(N)])

            def plain_recv(k=k):
                for _ in range(N):
                    received[c[k].recv()] += 1
            wg.go(plain_recv)

        def select_sender():
            n = [0] * 4
            c1 = list(c)
            for _ in range(4 * N):
                i, _ = select((c1[3].send, 3), (c1[2].send, 2), (c1[0].send, 0), (c1[1].send, 1))
                k = (3, 2, 0, 1)[i]
                n[k] += 1
                if n[k] == N:
                    c1[k] = nilchan

        def select_receiver():
            n = [0] * 4
            c1 = list(c)
            for _ in range(4 * N):
                k, v = select(*(ch.recv for ch in c1))
                received[v] += 1
                n[k] += 1
                if n[k] == N:
                    c1[k] = nilchan

        wg.go(select_sender)
        wg.go(select_receiver)
        wg.wait()
        return received
    received = run1(main)
    assert received == Counter({k: 2 * N for k in range(4)})


def test_select_wait_reason_is_select() -> None:
    def main():
        a, b = Chan(), Chan()
        go(select, a.recv, b.recv)
        wait_reason("select")
        wait_until(lambda: a.stats().receivers_waiting == 1)
    run1(main)
