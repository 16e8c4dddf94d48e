"""csp_mp.time on one P: sleep, after, tick, Timer, Ticker, after_func (Go 1.23 semantics)."""

from __future__ import annotations

import time

import pytest
from helpers import run1, wait_until

import csp_mp
from csp_mp import (
    Chan,
    Ticker,
    Timer,
    after,
    after_func,
    default,
    go,
    nilchan,
    runtime,
    select,
    tick,
)
from csp_mp import sleep as csp_sleep


def _empty(ch: Chan) -> bool:
    return select(ch.recv, default)[0] == 1


def test_sleep_parks_only_the_calling_goroutine() -> None:
    def main():
        spins = 0
        stop = False

        def spinner():
            nonlocal spins
            while not stop:
                spins += 1
                runtime.gosched()

        go(spinner)
        t0 = time.monotonic()
        csp_sleep(0.02)
        assert time.monotonic() >= t0 + 0.02
        stop = True
        return spins
    assert run1(main) > 0


def test_sleep_of_zero_or_less_just_yields() -> None:
    def main():
        ran = []
        go(ran.append, 1)
        csp_sleep(0)
        csp_sleep(-1)
        wait_until(lambda: ran == [1])
    run1(main)


@pytest.mark.csp_mp(fake_time=True)
def test_many_sleepers_wake_in_deadline_order_at_their_times() -> None:
    out = Chan(10)
    t0 = after(0).recv()
    for d in (30, 10, 20):
        go(lambda d=d: (csp_sleep(d), out.send((d, after(0).recv() - t0))))
    assert [out.recv() for _ in range(3)] == [(10, 10), (20, 20), (30, 30)]


def test_after_delivers_a_monotonic_time_once() -> None:
    def main():
        t0 = time.monotonic()
        c = after(0.02)
        v = c.recv()
        assert isinstance(v, float)
        assert t0 + 0.02 <= v <= time.monotonic()
        assert select(c.recv, after(0.02).recv)[0] == 1  # nothing more arrives on c
    run1(main)


def test_tick_delivers_repeatedly() -> None:
    def main():
        c = tick(0.005)
        vals = [c.recv() for _ in range(4)]
        assert vals == sorted(set(vals))
    run1(main)
    assert tick(0) is nilchan
    assert tick(-1) is nilchan


def test_timer_fires_once() -> None:
    def main():
        t0 = time.monotonic()
        t = Timer(0.01)
        v = t.c.recv()
        assert v >= t0 + 0.01
        assert t.stop() is False  # already fired and received
        assert t.stop() is False
    run1(main)


@pytest.mark.csp_mp(fake_time=True)
def test_timer_stop_before_firing() -> None:
    t = Timer(20)
    assert t.stop() is True
    assert t.stop() is False
    csp_sleep(40)  # past the original deadline
    assert _empty(t.c)


def test_timer_stop_after_fire_discards_the_unreceived_value() -> None:
    def main():
        t = Timer(0.001)
        wait_until(lambda: len(t.c) == 1, "the timer fired")
        assert t.stop() is True  # Go 1.23: an unreceived value counts as not yet expired
        assert _empty(t.c)
    run1(main)


def test_timer_reset_of_active_timer() -> None:
    def main():
        t = Timer(60)
        t0 = time.monotonic()
        assert t.reset(0.01) is True
        v = t.c.recv()
        assert v >= t0 + 0.01
    run1(main)


def test_timer_reset_after_fire_gives_no_stale_value() -> None:
    def main():
        t = Timer(0.001)
        wait_until(lambda: len(t.c) == 1, "the timer fired")
        t0 = time.monotonic()
        t.reset(0.02)
        v = t.c.recv()
        assert v >= t0 + 0.02, "received the value from before reset()"
    run1(main)


def test_timer_reset_after_receive_fires_again() -> None:
    def main():
        t = Timer(0.001)
        t.c.recv()
        assert t.reset(0.001) is False
        assert isinstance(t.c.recv(), float)
    run1(main)


@pytest.mark.csp_mp(fake_time=True)
def test_ticker_stop_and_reset() -> None:
    tk = Ticker(1)
    a = tk.c.recv()
    assert tk.c.recv() == a + 1
    csp_sleep(1.5)  # a tick is buffered meanwhile
    assert len(tk.c) == 1
    tk.stop()
    assert _empty(tk.c)  # the buffered tick from before stop() is gone
    csp_sleep(10)
    assert _empty(tk.c)  # and no new one comes
    t0 = after(0).recv()
    tk.reset(5)
    assert tk.c.recv() == t0 + 5
    tk.stop()


def test_ticker_needs_a_positive_interval() -> None:
    def main():
        with pytest.raises(ValueError):
            Ticker(0)
        tk = Ticker(1)
        with pytest.raises(ValueError):
            tk.reset(-1)
        tk.stop()
    run1(main)


def test_after_func_runs_in_its_own_goroutine() -> None:
    def main():
        out = Chan()
        me = runtime.goid()
        t = after_func(0.005, lambda: out.send(runtime.goid()))  # may block: it is a goroutine
        assert t.c is nilchan
        gid = out.recv()
        assert gid != me
        assert t.stop() is False
    run1(main)


def test_after_func_stopped_never_runs() -> None:
    def main():
        ran = []
        t = after_func(0.01, lambda: ran.append(1))
        assert t.stop() is True
        csp_sleep(0.03)
        return ran
    assert run1(main) == []


def test_after_func_reset_postpones() -> None:
    def main():
        out = Chan(1)
        t0 = time.monotonic()
        t = after_func(60, lambda: out.send(time.monotonic()))
        assert t.reset(0.01) is True
        assert out.recv() >= t0 + 0.01
    run1(main)


def test_after_func_needs_a_callable() -> None:
    def main():
        with pytest.raises(TypeError):
            after_func(1, 5)
    run1(main)


def test_time_module_exports() -> None:
    assert csp_mp.time.sleep is csp_sleep and csp_mp.time.Timer is Timer
    assert csp_mp.after is after and csp_mp.after_func is after_func


def test_timer_stop_leaves_a_blocked_receiver_blocked() -> None:
    def main():
        t = Timer(0.01)
        out = Chan(1)
        go(lambda: out.send(select(t.c.recv, after(0.05).recv)[0]))
        wait_until(lambda: t.c.stats().receivers_waiting == 1, "receiver parked on t.c")
        assert t.stop() is True
        return out.recv()
    assert run1(main) == 1  # only the other case could complete

