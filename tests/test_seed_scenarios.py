"""The seed article's scenarios (Go concurrency basics), run on csp_mp with one P."""

from __future__ import annotations

import pytest
from helpers import run1, wait_goroutines, wait_reason, wait_until

from csp_mp import Chan, Mutex, WaitGroup, context, go, runtime, select
from csp_mp import sleep as csp_sleep
from csp_mp.atomic import Bool, Int64


def _order_of_ten() -> list[int]:
    mu = Mutex()
    order: list[int] = []
    wg = WaitGroup()
    wg.add(10)
    for i in range(10):
        def work(i=i):
            try:
                with mu:
                    order.append(i)
            finally:
                wg.done()
        go(work)
    wg.wait()
    return order


def test_goroutine_order_is_not_guaranteed(monkeypatch: pytest.MonkeyPatch) -> None:
    """TestGoroutineNonDeterministicOrder: every goroutine runs once, in no promised order."""
    orders = []
    for seed in range(8):
        monkeypatch.setenv("CSP_MP_SCHED_SEED", str(seed))
        orders.append(tuple(run1(_order_of_ten)))
    for order in orders:
        assert sorted(order) == list(range(10))
    assert len(set(orders)) > 1, "the seeded shuffle never changed the order"
    monkeypatch.setenv("CSP_MP_SCHED_SEED", "3")
    assert tuple(run1(_order_of_ten)) == orders[3]  # a seed reproduces its order


def test_main_exit_kills_goroutines() -> None:
    """TestMainExitKillsGoroutines: main does not wait, so the goroutine never completes."""
    completed = Bool()
    unwound = []

    def slow():
        try:
            csp_sleep(0.1)
            completed.store(True)
        finally:
            unwound.append(True)

    def main():
        go(slow)
        return completed.load()

    assert run1(main) is False
    assert completed.load() is False
    assert unwound in ([], [True])  # stopped, never completed


def test_waitgroup_solution() -> None:
    """TestWaitGroupSolution: waiting on a WaitGroup lets the goroutine complete."""
    def main():
        completed = Bool()
        wg = WaitGroup()
        wg.add(1)

        def work():
            try:
                csp_sleep(0.05)
                completed.store(True)
            finally:
                wg.done()

        go(work)
        wg.wait()
        return completed.load()
    assert run1(main) is True


@pytest.mark.stress
def test_ten_thousand_goroutines_on_an_atomic_counter() -> None:
    """TestGoroutineLightweight: 10,000 goroutines each add 1."""
    n = 10_000

    def main():
        counter = Int64()
        wg = WaitGroup()
        wg.add(n)

        def work():
            try:
                counter.add(1)
            finally:
                wg.done()

        for _ in range(n):
            go(work)
        wg.wait()
        return counter.load()
    assert run1(main) == n


def test_ten_thousand_parked_goroutines_all_complete() -> None:
    """The same 10,000 goroutines, all parked at once before any finishes."""
    n = 10_000

    def main():
        counter = Int64()
        gate = Chan()
        wg = WaitGroup()
        for _ in range(n):
            wg.go(lambda: (gate.recv(), counter.add(1)))
        wait_until(lambda: gate.stats().receivers_waiting == n, "all parked")
        assert runtime.num_goroutine() == n + 1
        gate.close()
        wg.wait()
        return counter.load(), runtime.num_goroutine()
    assert run1(main) == (n, 1)


def test_gomaxprocs() -> None:
    """TestGOMAXPROCS: gomaxprocs(0) reports without changing; gomaxprocs(n) returns the old."""
    def main():
        current = runtime.gomaxprocs(0)
        assert runtime.num_cpu() >= 1
        assert runtime.gomaxprocs(1) == current
        assert runtime.gomaxprocs(0) == 1
        return current
    assert run1(main) == 1


def _leaky_func() -> Chan:
    ch = Chan()
    go(ch.send, 42)  # nobody ever receives: the goroutine blocks forever
    return ch


def test_goroutine_leak_is_visible() -> None:
    """TestGoroutineLeak: the abandoned sender stays alive, blocked in chan send."""
    def main():
        initial = runtime.num_goroutine()
        _ = _leaky_func()
        wait_reason("chan send")
        return initial, runtime.num_goroutine()
    initial, leaked = run1(main)
    assert leaked == initial + 1


@pytest.mark.parametrize("cap", [1, 0])
def test_goroutine_leak_prevented_with_context(cap: int) -> None:
    """TestGoroutineLeakPrevention_WithContext: cancel gives the goroutine its way out."""
    def safe_func(ctx) -> Chan:
        ch = Chan(cap)

        def body():
            try:
                select((ch.send, 42), ctx.done().recv)
            finally:
                ch.close()

        go(body)
        return ch

    def main():
        initial = runtime.num_goroutine()
        ctx, cancel = context.with_cancel(context.background())
        ch = safe_func(ctx)
        if cap == 0:
            wait_reason("select")
            assert runtime.num_goroutine() == initial + 1  # parked until cancelled
        else:
            wait_goroutines(initial)  # the buffered send never blocks: no leak even uncancelled
        cancel()
        wait_goroutines(initial)
        return list(ch)
    got = run1(main)
    assert got == ([42] if cap == 1 else [])
