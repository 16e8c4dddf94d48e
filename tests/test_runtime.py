"""run(), go, go_local, blocking(), the implicit runtime and csp_mp.runtime on one P."""

from __future__ import annotations

import os
import threading

import pytest
from helpers import count_reason, run1, wait_goroutines, wait_reason

import csp_mp
from csp_mp import Chan, Mutex, Panic, WaitGroup, go, go_local, runtime, select
from csp_mp import sleep as csp_sleep
from csp_mp._testing.stacks import parse_stack

# ---------------------------------------------------------------- run()


def test_run_returns_mains_value_and_passes_arguments() -> None:
    def main(a, b, *, c):
        return a + b + c
    assert run1(main, 1, 2, c=3) == 6
    assert csp_mp.run(main, 1, 2, c=3, procs=1) == 6


def test_run_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        csp_mp.run(42, procs=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        csp_mp.run(lambda: None, procs=0)
    with pytest.raises(TypeError):
        csp_mp.run(lambda: None, procs="2")  # type: ignore[arg-type]


def test_run_procs_none_reads_gomaxprocs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMAXPROCS", "1")
    assert csp_mp.run(runtime.gomaxprocs) == 1
    monkeypatch.setenv("GOMAXPROCS", "many")
    with pytest.raises(ValueError):
        csp_mp.run(lambda: None)


def test_run_inside_run_is_refused() -> None:
    def main():
        with pytest.raises(RuntimeError):
            csp_mp.run(lambda: None, procs=1)
    run1(main)


def test_go_and_go_local_pass_arguments_and_share_memory() -> None:
    def main():
        shared = []
        wg = WaitGroup()
        wg.add(2)
        go(lambda x, *, y: (shared.append(x + y), wg.done()), 1, y=2)
        go_local(lambda x, *, y: (shared.append(x * y), wg.done()), 3, y=4)
        wg.wait()
        return sorted(shared)
    assert run1(main) == [3, 12]


def test_go_needs_a_callable() -> None:
    def main():
        with pytest.raises(TypeError):
            go(None)
        with pytest.raises(TypeError):
            go_local("f")
    run1(main)


# ---------------------------------------------------------------- blocking()


def test_blocking_returns_value_while_other_goroutines_run() -> None:
    def main():
        ev = threading.Event()
        # The M thread waits for an event that only a goroutine sets: the P must keep running.
        go(lambda: ev.set())
        assert csp_mp.blocking(ev.wait, 10) is True
        assert csp_mp.blocking(lambda a, *, b: a * b, 6, b=7) == 42
    run1(main)


def test_blocking_propagates_the_exception() -> None:
    class Boom(Exception):
        pass

    def fail():
        raise Boom("in a thread")

    def main():
        with pytest.raises(Boom, match="in a thread"):
            csp_mp.blocking(fail)
        with pytest.raises(TypeError):
            csp_mp.blocking(5)
    run1(main)


def test_concurrent_blocking_calls_each_get_their_result() -> None:
    def main():
        barrier = threading.Barrier(4, timeout=10)
        out = Chan(4)
        for i in range(4):
            # four calls that can only finish together: each runs on its own M thread
            go(lambda i=i: out.send((i, csp_mp.blocking(barrier.wait) is not None)))
        return sorted(out.recv() for _ in range(4))
    assert run1(main) == [(i, True) for i in range(4)]


def test_pending_blocking_call_is_not_a_deadlock() -> None:
    def main():
        ev = threading.Event()
        c = Chan()
        go(lambda: c.send(csp_mp.blocking(ev.wait, 10)))
        wait_reason("blocking call")
        threading.Timer(0.01, ev.set).start()
        return c.recv()  # every goroutine is parked, but a blocking call can still wake one
    assert run1(main) is True


# ---------------------------------------------------------------- csp_mp.runtime


def test_num_goroutine_goid_current_p() -> None:
    def main():
        assert runtime.num_goroutine() == 1
        assert runtime.current_p() == 0
        ids = Chan(10)
        block = Chan()
        for _ in range(3):
            go(lambda: (ids.send(runtime.goid()), block.recv()))
        got = {ids.recv() for _ in range(3)}
        assert runtime.goid() not in got and len(got) == 3
        wait_goroutines(4)
        block.close()
        wait_goroutines(1)
    run1(main)


def test_stack_shows_every_goroutine_with_its_wait_reason() -> None:
    def parked_on_receive(ch):
        ch.recv()

    def main():
        mu = Mutex()
        mu.lock()
        go(parked_on_receive, Chan())
        go(Chan().send, 1)
        go(mu.lock)
        go(csp_sleep, 60)
        go(select, Chan().recv, Chan().recv)
        for reason in ("chan receive", "chan send", "sync.Mutex.Lock", "sleep", "select"):
            wait_reason(reason)
        text = runtime.stack()
        assert text.count("\ngoroutine ") + text.startswith("goroutine ") == 6
        assert "parked_on_receive" in text  # names the function and shows its Python stack
        assert "[running]" in text and "on P0" in text
        assert count_reason("chan receive") == 1
    run1(main)


def test_gomaxprocs_returns_the_previous_value() -> None:
    def main():
        assert runtime.gomaxprocs() == 1
        assert runtime.gomaxprocs(0) == 1
        assert runtime.gomaxprocs(1) == 1
        with pytest.raises(TypeError):
            runtime.gomaxprocs(1.5)
    run1(main)
    assert runtime.num_cpu() == len(os.sched_getaffinity(0))


def test_gomaxprocs_outside_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMAXPROCS", "3")
    assert runtime.gomaxprocs() == 3
    assert runtime.gomaxprocs(2) == 3
    assert runtime.gomaxprocs() == 2


def test_gosched_lets_others_run() -> None:
    def main():
        order = []
        go(order.append, "other")
        for _ in range(1000):  # under a seeded shuffle the other may need a few turns
            runtime.gosched()
            if order:
                break
        order.append("main")
        return order
    assert run1(main) == ["other", "main"]


# ---------------------------------------------------------------- the implicit runtime


def test_implicit_runtime_at_top_level() -> None:
    ch = Chan()
    go(lambda: ch.send(runtime.goid()))
    gid = ch.recv()
    assert gid != runtime.goid()
    wait_goroutines(1)  # the sender ends after its send (on another P, maybe a little later)
    csp_mp.shutdown()
    assert runtime.num_goroutine() == 0  # no runtime now


def test_shutdown_stops_the_other_goroutines_and_is_idempotent() -> None:
    stopped = []

    def parked():
        try:
            Chan().recv()
        finally:
            stopped.append(True)

    go_local(parked)  # shares `stopped` with this test: it must not migrate
    go_local(parked)
    wait_reason("chan receive", 2)
    assert runtime.num_goroutine() == 3
    csp_mp.shutdown()
    assert stopped == [True, True]
    csp_mp.shutdown()


def test_implicit_runtime_restarts_after_shutdown() -> None:
    c = Chan(1)
    c.send(1)
    csp_mp.shutdown()
    c2 = Chan()
    go(c2.send, "again")
    assert c2.recv() == "again"


def test_run_after_implicit_use_replaces_it() -> None:
    c = Chan()
    go(c.send, 1)
    assert c.recv() == 1
    assert run1(lambda: runtime.num_goroutine()) == 1


def test_implicit_panic_surfaces_at_mains_next_blocking_point() -> None:
    def bad():
        raise LookupError("lost")

    go(bad)
    with pytest.raises(Panic) as info:
        Chan().recv()
    assert isinstance(info.value.__cause__, LookupError)
    assert "lost" in str(info.value)


def test_implicit_deadlock_is_reported() -> None:
    with pytest.raises(csp_mp.DeadlockError, match="all goroutines are asleep - deadlock!"):
        Chan().recv()


def test_implicit_sleep_and_timers() -> None:
    csp_sleep(0.001)
    assert isinstance(csp_mp.after(0.001).recv(), float)


def test_blocking_call_in_the_implicit_runtime() -> None:
    assert csp_mp.blocking(sum, [1, 2, 3]) == 6


def test_runtime_objects_from_a_foreign_thread_raise() -> None:
    c = Chan(1)
    c.send(1)
    errors = []

    def other():
        try:
            Chan().recv()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert len(errors) == 1


def test_implicit_deadlock_dump_lists_the_other_goroutines() -> None:
    go(_park_forever)
    with pytest.raises(csp_mp.DeadlockError) as info:
        Chan().recv()
    assert count_reason_in(info.value.stack, "chan receive") == 2
    assert "_park_forever" in info.value.stack


def _park_forever() -> None:
    Chan().recv()


def count_reason_in(stack: str, reason: str) -> int:
    return sum(e.count for e in parse_stack(stack) if e.state == reason)


def test_hub_looks_around_every_16th_switch_while_goroutines_stay_runnable() -> None:
    """Two goroutines handing a value back and forth never leave the run queue empty; the hub
    must still run its timers and ask the other Ps (a lost P, wake-ups) every 16th switch."""
    from csp_mp import _hub

    def main() -> tuple[int, int, int]:
        hub = _hub.peek()
        looks = [0]
        run_due = hub.timers.run_due

        def counting() -> None:
            looks[0] += 1
            run_due()

        hub.timers.run_due = counting
        a, b, done = csp_mp.Chan(), csp_mp.Chan(), csp_mp.Chan(1)
        rounds = 3200

        def ping() -> None:
            for _ in range(rounds):
                b.send(a.recv() + 1)

        def pong() -> None:
            for i in range(rounds):
                v = b.recv() + 1
                (done if i == rounds - 1 else a).send(v)

        csp_mp.go_local(ping)
        csp_mp.go_local(pong)
        t0 = hub.tick
        a.send(0)
        total = done.recv()
        return hub.tick - t0, looks[0], total

    switches, looks, total = csp_mp.run(main, procs=1)
    assert total == 2 * 3200
    assert switches >= 2 * 3200
    assert looks >= switches // 16 * 0.9
