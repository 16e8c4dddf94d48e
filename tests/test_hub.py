"""The hub's entrance and scheduling rule: ``Hub.post``, ``Hub.has_work``, ``Hub.runqget``."""

from __future__ import annotations

import threading

from helpers import run1, wait_until

import csp_mp
from csp_mp import go_local, runtime
from csp_mp._hub import current_hub
from csp_mp._hub.timers import VirtualClock

# ---------------------------------------------------------------- post


def test_posts_from_many_threads_at_once_all_run_once_on_the_hub_thread() -> None:
    threads, per_thread = 8, 500

    def main() -> tuple[list[tuple[int, int]], set[int]]:
        hub = current_hub()
        ran: list[tuple[int, int]] = []
        where: set[int] = set()
        start = threading.Barrier(threads)

        def call(t: int, i: int) -> None:
            ran.append((t, i))
            where.add(threading.get_ident())

        def poster(t: int) -> None:
            start.wait()  # every thread posts at the same moment
            for i in range(per_thread):
                hub.post(lambda t=t, i=i: call(t, i))

        # blocking calls complete through the same inbox while the threads post
        done = []
        for k in range(4):
            go_local(lambda k=k: done.append(csp_mp.blocking(lambda: k)))
        ts = [threading.Thread(target=poster, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        wait_until(lambda: len(ran) == threads * per_thread and len(done) == 4,
                   "every posted call and every completion")
        csp_mp.blocking(lambda: [t.join() for t in ts])
        assert sorted(done) == [0, 1, 2, 3]
        return ran, where

    ran, where = run1(main)
    assert sorted(ran) == [(t, i) for t in range(threads) for i in range(per_thread)]
    assert len(where) == 1 and threading.get_ident() in where  # run1's hub runs on this thread


def test_a_post_wakes_a_hub_idle_on_a_blocking_call() -> None:
    def main() -> list[str]:
        hub = current_hub()
        seen: list[str] = []

        def on_m_thread() -> None:
            ev = threading.Event()
            hub.post(lambda: (seen.append("posted"), ev.set()))
            if not ev.wait(10):  # the hub sleeps in its waker until the post rings it
                raise AssertionError("the posted call did not run")

        csp_mp.blocking(on_m_thread)
        return seen

    assert run1(main) == ["posted"]


# ---------------------------------------------------------------- has_work


def test_has_work_sees_runnable_goroutines_and_the_hub_runs_them() -> None:
    def main() -> list[object]:
        hub = current_hub()
        out: list[object] = [hub.has_work()]
        ran = []
        go_local(lambda: ran.append(1))
        out.append(hub.has_work())
        runtime.gosched()
        out += [ran, hub.has_work()]
        return out

    assert run1(main) == [False, True, [1], False]


def test_has_work_sees_a_due_timer_on_the_hubs_own_clock() -> None:
    def main() -> list[object]:
        hub = current_hub()
        clock = VirtualClock(1000.0)
        hub.timers.swap_clock(clock)
        fired = []
        hub.timers.add(5.0, fired.append, "timer")
        out: list[object] = [hub.has_work()]  # due in 5 virtual seconds: none yet
        clock.advance(5.0)
        out.append(hub.has_work())  # due now, though no real time passed
        wait_until(lambda: bool(fired), "the timer fired")  # a pass of the hub that polls
        out += [fired, hub.has_work()]
        return out

    assert run1(main) == [False, True, ["timer"], False]


def test_has_work_from_another_thread_agrees_with_the_idle_hub() -> None:
    def main() -> tuple[bool, bool, bool]:
        hub = current_hub()

        def on_m_thread() -> tuple[bool, bool]:
            before = hub.has_work()  # the only goroutine waits for this call: the hub idles
            ev = threading.Event()
            hub.post(ev.set)
            after = hub.has_work()  # a posted call waits (or ran already)
            ev.wait(10)
            return before, after or ev.is_set()

        before, after = csp_mp.blocking(on_m_thread)
        return before, after, hub.has_work()

    assert run1(main) == (False, True, False)


# ---------------------------------------------------------------- runqget


def test_runnext_goes_first_until_its_streak_ends_then_the_run_queue_gets_a_turn() -> None:
    """Two goroutines handing a value back and forth through ``runnext`` run ahead of the run
    queue, but at most 64 times in a row: a third goroutine waiting there gets a turn."""

    def main() -> int:
        ping, pong = csp_mp.Chan(), csp_mp.Chan()
        rounds = 1000
        seen_at: list[int] = []
        count = [0]

        def echo() -> None:
            for _ in range(rounds):
                pong.send(ping.recv())

        go_local(echo)
        runtime.gosched()  # echo parks on ping

        def third() -> None:
            seen_at.append(count[0])

        go_local(third)  # in the run queue, behind the ping-pong's runnext hand-offs
        for i in range(rounds):
            ping.send(i)
            pong.recv()
            count[0] += 1
        assert seen_at, "the run queue never got a turn"
        return seen_at[0]

    assert run1(main) <= 64


def test_installing_a_picker_keeps_the_goroutine_waiting_in_runnext() -> None:
    from csp_mp._hub import hooks

    def main() -> list[int]:
        hub = current_hub()
        ch = csp_mp.Chan()
        got: list[int] = []
        go_local(lambda: got.append(ch.recv()))
        runtime.gosched()  # it parks on ch
        ch.send(7)  # hands it the value and puts it in runnext
        assert hub.runnext is not None
        seeded = hooks.Seeded(1)
        hooks.install(hub, seeded)  # the picker sees only the run queue: runnext moves there
        try:
            wait_until(lambda: got == [7], "the readied goroutine ran")
        finally:
            hooks.uninstall(hub, seeded)
        return got

    assert run1(main) == [7]


# ---------------------------------------------------------------- fields


def test_every_field_of_a_running_hub_is_a_slot() -> None:
    """A field set outside the hub's slots would land in its instance dict and slow every read
    of it on the hot paths: after goroutines on both Ps, a local and a shared channel, a timer
    and a blocking call, P0's hub has an empty dict."""
    from csp_mp import Chan, after, go, select

    def main() -> dict:
        ch, shared = Chan(), Chan()
        go_local(lambda: ch.send(csp_mp.blocking(lambda: 1)))
        assert ch.recv() == 1
        assert select(after(0.001).recv, ch.recv)[0] == 0
        for i in range(4):
            go(shared.send, i)
        assert sorted(shared.recv() for _ in range(4)) == [0, 1, 2, 3]
        return dict(vars(current_hub()))

    assert csp_mp.run(main, procs=2) == {}


def _remaining_depth(n: int = 0) -> int:
    """Calls left before ``RecursionError`` from here."""
    try:
        return _remaining_depth(n + 1)
    except RecursionError:
        return n


def test_goroutines_start_at_the_recursion_depth_of_the_hub_however_many_parked_before() -> None:
    """A new worker greenlet takes the recursion depth of whatever first switches into it: were
    it a parking goroutine, each goroutine started that way would be deeper than the last, and a
    program parking goroutines round after round would end in ``RecursionError``."""

    def sender(ch: csp_mp.Chan, seen: list[int]) -> None:
        seen.append(_remaining_depth())
        ch.send(1)

    def main() -> tuple[int, int]:
        top = _remaining_depth()
        ch = csp_mp.Chan()
        seen: list[int] = []
        for _ in range(20):
            for _ in range(300):
                go_local(sender, ch, seen)
            for _ in range(300):
                ch.recv()
        return top, min(seen)

    top, worst = csp_mp.run(main, procs=1)
    assert worst >= top - 10, (top, worst)
