"""csp_mp.sync on one P: WaitGroup, Mutex, RWMutex, Once, Cond."""

from __future__ import annotations

import pytest
from helpers import count_reason, run1, wait_reason, wait_until

from csp_mp import Chan, Cond, Mutex, Once, RWMutex, WaitGroup, go, runtime, sync

# ---------------------------------------------------------------- WaitGroup


def test_waitgroup_waits_for_every_goroutine() -> None:
    def main():
        wg = WaitGroup()
        done = []
        for i in range(50):
            wg.add(1)

            def work(i=i):
                runtime.gosched()
                done.append(i)
                wg.done()
            go(work)
        wg.wait()
        return sorted(done)
    assert run1(main) == list(range(50))


def test_waitgroup_go_adds_runs_and_marks_done() -> None:
    def main():
        wg = WaitGroup()
        out = []
        for i in range(10):
            wg.go(out.append, i)
        wg.go(lambda *a, **k: out.append((a, k)), 1, 2, key="v")
        wg.wait()
        return out
    out = run1(main)
    assert sorted(x for x in out if isinstance(x, int)) == list(range(10))
    assert ((1, 2), {"key": "v"}) in out


def test_waitgroup_wait_at_zero_returns_at_once_and_is_reusable() -> None:
    def main():
        wg = WaitGroup()
        wg.wait()
        for _round in range(3):
            wg.add(2)
            wg.go(lambda: None)
            wg.go(lambda: None)
            wg.done()
            wg.done()
            wg.wait()
    run1(main)


def test_waitgroup_releases_every_waiter() -> None:
    def main():
        wg = WaitGroup()
        wg.add(1)
        out = Chan(5)
        for i in range(5):
            go(lambda i=i: (wg.wait(), out.send(i)))
        wait_reason("sync.WaitGroup.Wait", 5)
        wg.done()
        return sorted(out.recv() for _ in range(5))
    assert run1(main) == list(range(5))


def test_negative_waitgroup_counter_is_value_error() -> None:
    def main():
        wg = WaitGroup()
        with pytest.raises(ValueError, match="negative WaitGroup counter"):
            wg.done()
        wg.add(1)
        with pytest.raises(ValueError, match="negative WaitGroup counter"):
            wg.add(-2)
        wg.done()  # the failed call changed nothing: the counter is still 1
        wg.wait()
    run1(main)


def test_waitgroup_go_needs_a_callable() -> None:
    def main():
        wg = WaitGroup()
        with pytest.raises(TypeError):
            wg.go(42)
        wg.wait()  # the counter was not left raised
    run1(main)


# ---------------------------------------------------------------- Mutex


def test_mutex_excludes_across_yields() -> None:
    def main():
        mu = Mutex()
        inside = 0
        worst = 0
        total = 0
        wg = WaitGroup()

        def work():
            nonlocal inside, worst, total
            for _ in range(50):
                with mu:
                    inside += 1
                    worst = max(worst, inside)
                    runtime.gosched()  # another goroutine runs while we hold the lock
                    total += 1
                    inside -= 1

        for _ in range(8):
            wg.go(work)
        wg.wait()
        return worst, total
    assert run1(main) == (1, 400)


def test_mutex_lock_parks_the_goroutine_not_the_p() -> None:
    def main():
        mu = Mutex()
        mu.lock()
        got = Chan(1)
        go(lambda: (mu.lock(), got.send("locked"), mu.unlock()))
        wait_reason("sync.Mutex.Lock")
        # the P still runs other goroutines meanwhile
        ping = Chan()
        go(ping.send, "pong")
        assert ping.recv() == "pong"
        mu.unlock()
        assert got.recv() == "locked"
        assert mu.try_lock()
        mu.unlock()
    run1(main)


def test_mutex_try_lock() -> None:
    def main():
        mu = Mutex()
        assert mu.try_lock() is True
        assert mu.try_lock() is False
        mu.unlock()
        assert mu.try_lock() is True
        mu.unlock()
    run1(main)


def test_unlock_of_unlocked_mutex_is_runtime_error() -> None:
    def main():
        mu = Mutex()
        with pytest.raises(RuntimeError, match="unlock of unlocked mutex"):
            mu.unlock()
        mu.lock()
        mu.unlock()
        with pytest.raises(RuntimeError, match="unlock of unlocked mutex"):
            mu.unlock()
        assert mu.try_lock()  # still usable
        mu.unlock()
    run1(main)


# ---------------------------------------------------------------- RWMutex


def test_rwmutex_readers_share_writers_exclude() -> None:
    def main():
        rw = RWMutex()
        readers = 0
        max_readers = 0
        writer_in = False
        violations = 0
        wg = WaitGroup()

        def reader():
            nonlocal readers, max_readers, violations
            for _ in range(20):
                with rw.rlocker():
                    readers += 1
                    max_readers = max(max_readers, readers)
                    violations += writer_in
                    runtime.gosched()
                    readers -= 1

        def writer():
            nonlocal writer_in, violations
            for _ in range(10):
                with rw:
                    violations += writer_in or readers > 0
                    writer_in = True
                    runtime.gosched()
                    writer_in = False

        for _ in range(4):
            wg.go(reader)
        for _ in range(2):
            wg.go(writer)
        wg.wait()
        return max_readers, violations
    max_readers, violations = run1(main)
    assert violations == 0
    assert max_readers > 1


def test_rwmutex_writer_waits_for_readers_and_blocks_new_ones() -> None:
    def main():
        rw = RWMutex()
        order = []
        rw.rlock()
        go(lambda: (rw.lock(), order.append("writer"), rw.unlock()))
        wait_reason("sync.RWMutex.Lock")
        go(lambda: (rw.rlock(), order.append("late reader"), rw.runlock()))
        wait_reason("sync.RWMutex.RLock")  # a waiting writer holds new readers back (Go)
        order.append("first reader leaves")
        rw.runlock()
        wait_until(lambda: len(order) == 3)
        return order
    assert run1(main) == ["first reader leaves", "writer", "late reader"]


def test_rwmutex_misuse_and_try_locks() -> None:
    def main():
        rw = RWMutex()
        with pytest.raises(RuntimeError):
            rw.unlock()
        with pytest.raises(RuntimeError):
            rw.runlock()
        rw.rlock()
        assert not rw.try_lock()
        rw.runlock()
        assert rw.try_lock()
        assert not rw.try_rlock()
        rw.unlock()
        locker = rw.rlocker()
        locker.lock()
        locker.unlock()
    run1(main)


# ---------------------------------------------------------------- Once


def test_once_runs_once_and_later_callers_wait() -> None:
    def main():
        once = Once()
        calls = []
        gate = Chan()
        finished = Chan(10)

        def slow_init():
            calls.append(1)
            gate.recv()  # parks inside do(): others must wait for it

        for i in range(5):
            go(lambda i=i: (once.do(slow_init), finished.send(i)))
        wait_reason("sync.Mutex.Lock", 4)
        assert select_nothing(finished)
        gate.send(None)
        return sorted(finished.recv() for _ in range(5)), len(calls)
    assert run1(main) == ([0, 1, 2, 3, 4], 1)


def select_nothing(ch: Chan) -> bool:
    """True when ``ch`` has nothing to receive right now."""
    from csp_mp import default, select
    return select(ch.recv, default)[0] == 1


def test_once_counts_as_done_when_fn_raises() -> None:
    def main():
        once = Once()
        with pytest.raises(KeyError):
            once.do(lambda: {}["missing"])
        calls = []
        once.do(lambda: calls.append(1))
        return calls
    assert run1(main) == []


# ---------------------------------------------------------------- Cond


def test_cond_signal_wakes_one_broadcast_wakes_all() -> None:
    def main():
        mu = Mutex()
        cond = Cond(mu)
        woken = []
        wg = WaitGroup()
        generation = 0

        def waiter(i):
            with mu:
                start = generation
                while generation == start:
                    cond.wait()
                woken.append(i)

        for i in range(4):
            wg.go(waiter, i)
        wait_reason("sync.Cond.Wait", 4)
        with mu:
            generation += 1
            cond.signal()
        wait_until(lambda: len(woken) == 1, "one waiter woken")
        assert count_reason("sync.Cond.Wait") == 3
        with mu:
            generation += 1
            cond.broadcast()
        wg.wait()
        return sorted(woken)
    assert run1(main) == [0, 1, 2, 3]


def test_cond_signal_without_waiters_is_a_no_op() -> None:
    def main():
        cond = Cond(Mutex())
        cond.signal()
        cond.broadcast()
    run1(main)


def test_cond_needs_a_locker() -> None:
    with pytest.raises(TypeError):
        Cond(object())


def test_sync_module_exports_the_same_classes() -> None:
    assert (sync.WaitGroup, sync.Mutex, sync.RWMutex, sync.Once, sync.Cond) == (
        WaitGroup, Mutex, RWMutex, Once, Cond)


def test_cond_with_a_read_locker() -> None:
    def main():
        rw = RWMutex()
        cond = Cond(rw.rlocker())
        ready = []
        wg = WaitGroup()

        def waiter():
            with rw.rlocker():
                while not ready:
                    cond.wait()

        for _ in range(3):
            wg.go(waiter)
        wait_reason("sync.Cond.Wait", 3)
        with rw:
            ready.append(True)
        cond.broadcast()
        wg.wait()
    run1(main)
