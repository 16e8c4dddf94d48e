"""csp_mp.testing: fake time (a virtual clock that jumps when every goroutine is blocked) and
wait_all_blocked."""

from __future__ import annotations

import time

import pytest
from helpers import run1

import csp_mp
from csp_mp import Chan, Ticker, Timer, after, context, go, select, sleep
from csp_mp.testing import fake_time, wait_all_blocked


def test_with_timeout_expires_after_exactly_30_virtual_seconds_without_sleeping() -> None:
    def main():
        before = time.monotonic()
        with fake_time() as clock:
            t0 = clock.now()
            ctx, cancel = context.with_timeout(context.background(), 30)
            deadline, ok = ctx.deadline()
            assert ok and deadline == t0 + 30
            ctx.done().recv()
            assert isinstance(ctx.err(), context.DeadlineExceeded)
            assert clock.now() - t0 == 30
            cancel()
        return time.monotonic() - before
    assert run1(main) < 30  # the real clock did not wait for the deadline


def test_sleepers_wake_in_deadline_order_at_their_virtual_times() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            out = Chan(10)
            for d in (3, 1, 2):
                go(lambda d=d: (sleep(d), out.send((d, clock.now() - t0))))
            got = [out.recv() for _ in range(3)]
        assert got == [(1, 1), (2, 2), (3, 3)]
    run1(main)


def test_timer_and_after_deliver_virtual_readings() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            assert after(2.5).recv() == t0 + 2.5
            t = Timer(10)
            assert t.stop() is True
            i, v = select(t.c.recv, after(4).recv)
            assert (i, v) == (1, t0 + 6.5)
    run1(main)


def test_ticker_ticks_on_exact_virtual_periods() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            tk = Ticker(0.25)
            ticks = [tk.c.recv() - t0 for _ in range(4)]
            tk.stop()
        assert ticks == [0.25, 0.5, 0.75, 1.0]
    run1(main)


def test_no_timer_pending_is_still_a_deadlock() -> None:
    def main():
        with fake_time():
            sleep(1)
            Chan().recv()
    with pytest.raises(csp_mp.DeadlockError, match="all goroutines are asleep"):
        run1(main)


def test_clock_does_not_move_while_a_goroutine_can_run() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            done = Chan()

            def busy():
                for _ in range(100):
                    csp_mp.runtime.gosched()
                done.send(clock.now() - t0)

            go(busy)
            i, v = select(done.recv, after(5).recv)
            assert (i, v) == (0, 0)
    run1(main)


def test_blocking_call_in_flight_holds_the_clock() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            release = Chan(1)
            go(lambda: release.send(csp_mp.blocking(time.sleep, 0.01)))
            i, _ = select(release.recv, after(1).recv)
            assert i == 0 and clock.now() == t0
    run1(main)


def test_advance_moves_the_clock_by_hand() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            c = after(5)
            clock.advance(5)
            assert c.recv() == t0 + 5
            with pytest.raises(ValueError):
                clock.advance(-1)
    run1(main)


def test_timers_keep_their_remaining_delay_across_the_block() -> None:
    def main():
        with fake_time():
            c = after(0.05)
        assert c.recv() >= time.monotonic() - 1  # a real reading again, not a virtual one
    run1(main)


def test_fake_time_refuses_several_ps_and_nesting() -> None:
    def nested():
        with fake_time(), pytest.raises(RuntimeError, match="already active"):
            with fake_time():
                pass
    run1(nested)

    def two():
        with pytest.raises(RuntimeError, match="one P"):
            with fake_time():
                pass
    csp_mp.run(two, procs=2)


def test_wait_all_blocked_returns_once_the_others_park() -> None:
    def main():
        ch = Chan()
        steps = []

        def worker():
            for i in range(50):
                steps.append(i)
                csp_mp.runtime.gosched()
            ch.recv()

        go(worker)
        go(worker)
        wait_all_blocked()
        assert len(steps) == 100
        ch.send(None)
        ch.send(None)
    run1(main)


def test_wait_all_blocked_under_fake_time_sees_sleepers_before_the_clock_moves() -> None:
    def main():
        with fake_time() as clock:
            t0 = clock.now()
            woke = []
            go(lambda: (sleep(1), woke.append(clock.now() - t0)))
            wait_all_blocked()
            assert woke == [] and clock.now() == t0
            sleep(2)
            assert woke == [1]
    run1(main)


def test_wait_all_blocked_times_out_on_a_busy_goroutine() -> None:
    def main():
        stop = []

        def spin():
            while not stop:
                csp_mp.runtime.gosched()

        go(spin)
        with pytest.raises(TimeoutError, match="still running"):
            wait_all_blocked(timeout=0.05)
        stop.append(1)
    run1(main)


def test_wait_all_blocked_on_two_ps() -> None:
    def main():
        ch = Chan()
        for _ in range(3):
            go(ch.recv)
        wait_all_blocked(timeout=30)
        assert csp_mp.runtime.num_goroutine() == 4
        for _ in range(3):
            ch.send(None)
    csp_mp.run(main, procs=2)
