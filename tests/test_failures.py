"""Failure as the user sees it on one P: deadlock, panic, interrupt, misuse."""

from __future__ import annotations

import pickle

import pytest
from helpers import run1, wait_reason

import csp_mp
from csp_mp import (
    Chan,
    ClosedChannelError,
    DeadlockError,
    Mutex,
    Panic,
    WaitGroup,
    after_func,
    go,
    select,
)
from csp_mp import sleep as csp_sleep

# ---------------------------------------------------------------- deadlock


def test_deadlock_of_main_alone() -> None:
    with pytest.raises(DeadlockError) as info:
        run1(lambda: Chan().recv())
    err = info.value
    assert str(err).startswith("all goroutines are asleep - deadlock!")
    assert isinstance(err, RuntimeError)
    assert "[chan receive]" in err.stack
    assert err.stack in str(err)  # the message carries the dump


def _recv_forever(ch: Chan) -> None:
    ch.recv()


def test_deadlock_dump_names_every_goroutine_and_its_wait_reason() -> None:
    def main():
        mu = Mutex()
        mu.lock()
        wg = WaitGroup()
        wg.add(1)
        go(_recv_forever, Chan())
        go(Chan().send, 1)
        go(mu.lock)
        go(select, Chan().recv, Chan(1).recv)
        wg.wait()

    with pytest.raises(DeadlockError) as info:
        run1(main)
    stack = info.value.stack
    heads = [line for line in stack.splitlines() if line.startswith("goroutine ")]
    assert len(heads) == 5
    for reason in ("chan receive", "chan send", "sync.Mutex.Lock", "select",
                   "sync.WaitGroup.Wait"):
        assert any(f"[{reason}]" in h for h in heads), (reason, stack)
    assert "_recv_forever" in stack
    assert "goroutine 1 [sync.WaitGroup.Wait]" in stack


def test_deadlock_error_pickles_with_its_stack() -> None:
    with pytest.raises(DeadlockError) as info:
        run1(lambda: Chan().send(1))
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.stack == info.value.stack


def test_pending_timer_is_not_a_deadlock() -> None:
    def main():
        c = Chan()
        after_func(0.01, lambda: c.send("woken"))
        return c.recv()  # every goroutine parked, but a timer will wake one
    assert run1(main) == "woken"


def test_sleeping_goroutine_is_not_a_deadlock() -> None:
    def main():
        c = Chan()
        go(lambda: (csp_sleep(0.01), c.send("late")))
        return c.recv()
    assert run1(main) == "late"


def test_deadlock_after_goroutines_finish() -> None:
    def main():
        wg = WaitGroup()
        wg.add(2)  # one done() too few
        wg.go(lambda: None)
        wg.done()
        wg.wait()
    with pytest.raises(DeadlockError, match="deadlock"):
        run1(main)


# ---------------------------------------------------------------- panic


def _fails(msg: str) -> None:
    raise ValueError(msg)


def test_panic_names_the_goroutine_and_chains_the_cause() -> None:
    def main():
        go(_fails, "bad value")
        Chan().recv()

    with pytest.raises(Panic) as info:
        run1(main)
    err = info.value
    assert isinstance(err.__cause__, ValueError)
    assert str(err.__cause__) == "bad value"
    assert "_fails" in str(err) and "goroutine 2" in str(err)
    assert "bad value" in str(err)
    assert "_fails" in err.goroutine


def test_panic_in_main_goroutine() -> None:
    def main():
        raise KeyError("main broke")
    with pytest.raises(Panic) as info:
        run1(main)
    assert isinstance(info.value.__cause__, KeyError)
    assert "main" in str(info.value)


def test_panic_stops_every_other_goroutine() -> None:
    unwound = []

    def parked():
        try:
            Chan().recv()
        finally:
            unwound.append("parked")

    def sleeper():
        try:
            csp_sleep(60)
        finally:
            unwound.append("sleeper")

    def main():
        go(parked)
        go(sleeper)
        wait_reason("chan receive")
        wait_reason("sleep")
        go(_fails, "stop everything")
        Chan().recv()

    with pytest.raises(Panic):
        run1(main)
    assert sorted(unwound) == ["parked", "sleeper"]


def test_first_panic_wins() -> None:
    def main():
        go(_fails, "one")
        go(_fails, "two")
        Chan().recv()
    with pytest.raises(Panic) as info:
        run1(main)
    assert str(info.value.__cause__) in ("one", "two")


def test_misuse_in_a_goroutine_panics_with_go_wording() -> None:
    def main():
        c = Chan()
        c.close()
        go(c.close)
        Chan().recv()
    with pytest.raises(Panic) as info:
        run1(main)
    assert isinstance(info.value.__cause__, ClosedChannelError)
    assert str(info.value.__cause__) == "close of closed channel"


def test_panic_pickles_with_its_fields() -> None:
    def main():
        go(_fails, "x")
        Chan().recv()
    with pytest.raises(Panic) as info:
        run1(main)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.goroutine == info.value.goroutine


def test_keyboard_interrupt_in_a_goroutine_ends_run() -> None:
    def interrupt():
        raise KeyboardInterrupt

    def main():
        go(interrupt)
        Chan().recv()
    with pytest.raises(KeyboardInterrupt):
        run1(main)


def test_runtime_usable_after_a_failure() -> None:
    with pytest.raises(Panic):
        run1(lambda: _fails("x"))
    with pytest.raises(DeadlockError):
        run1(lambda: Chan().recv())
    assert run1(lambda: 7) == 7
    assert csp_mp._hub.peek() is None


def test_no_goroutine_runs_after_main_returns() -> None:
    ran: list[int] = []

    def main() -> None:
        csp_mp.go_local(ran.append, 1)  # runnable, never run: main returns first (Go's exit)

    csp_mp.run(main, procs=1)
    assert ran == []


def test_no_goroutine_runs_after_a_panic() -> None:
    ran: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    def main() -> None:
        csp_mp.go_local(boom)
        csp_mp.go_local(ran.append, 1)  # queued behind the panicking goroutine
        csp_mp.Chan().recv()

    with pytest.raises(csp_mp.Panic, match="boom"):
        csp_mp.run(main, procs=1)
    assert ran == []
