"""sync, atomic, context, errgroup and runtime across Ps, parametrized over ``procs``.

Goroutines are spread over every P (``go_on``); shared counters check the invariants.
"""

from __future__ import annotations

import os
from typing import Any

import mp_helpers as H
from mp_helpers import run

from csp_mp import (
    Chan,
    Cond,
    Mutex,
    Once,
    RWMutex,
    WaitGroup,
    atomic,
    context,
    errgroup,
    go,
    runtime,
)
from csp_mp._mp import ctx as C


def on_every_p(procs: int, per_p: int, fn, *args) -> None:
    """Start ``per_p`` goroutines running ``fn(*args)`` on each P."""
    for p in range(procs):
        for _ in range(per_p):
            H.go_on(p, fn, *args)


# ---------------------------------------------------------------- WaitGroup


def test_waitgroup_done_from_every_p(procs4: int) -> None:
    def worker(wg: WaitGroup, n: atomic.Int64) -> None:
        n.add(1)
        wg.done()

    def main():
        wg, n = WaitGroup(), atomic.Int64(0)
        wg.add(procs4)
        on_every_p(procs4, 1, worker, wg, n)
        wg.wait()
        return n.load()

    assert run(main, procs4) == procs4


def test_waitgroup_waiters_in_every_p_are_released(procs: int) -> None:
    def waiter(wg: WaitGroup, out: Chan) -> None:
        wg.wait()
        out.send(runtime.current_p())

    def main():
        wg, out = WaitGroup(), Chan(4 * procs)
        wg.add(1)
        on_every_p(procs, 2, waiter, wg, out)
        H.wait_reason("sync.WaitGroup.Wait", 2 * procs)
        assert len(out) == 0
        wg.done()
        return sorted(out.recv() for _ in range(2 * procs))

    assert run(main, procs) == sorted(list(range(procs)) * 2)


def test_waitgroup_go_runs_on_any_p(procs: int) -> None:
    def main():
        wg, out = WaitGroup(), Chan(64)
        for _ in range(64):
            wg.go(H.report_p, out)
        wg.wait()
        return len(out)

    assert run(main, procs) == 64


def test_waitgroup_negative_counter_in_a_remote_p(procs: int) -> None:
    def bad(wg: WaitGroup, out: Chan) -> None:
        try:
            wg.done()
        except ValueError as exc:
            out.send(str(exc))

    def main():
        wg, out = WaitGroup(), Chan(1)
        H.go_on(H.other_p(procs), bad, wg, out)
        return out.recv()

    assert run(main, procs) == "sync: negative WaitGroup counter"


# ---------------------------------------------------------------- Mutex / RWMutex


def test_mutex_excludes_across_ps(procs: int) -> None:
    def main():
        mu, counter, wg = Mutex(), atomic.Int64(0), WaitGroup()
        wg.add(2 * procs)
        on_every_p(procs, 2, H.locked_increments, mu, counter, 50, wg)
        wg.wait()
        return counter.load()

    assert run(main, procs) == 2 * procs * 50


def test_mutex_held_remotely_try_lock_and_unlock_errors(procs: int) -> None:
    def holder(mu: Mutex, locked: Chan, release: Chan) -> None:
        mu.lock()
        locked.send(None)
        release.recv()
        mu.unlock()
        locked.send(None)

    def main():
        mu, locked, release = Mutex(), Chan(), Chan()
        H.go_on(H.other_p(procs), holder, mu, locked, release)
        locked.recv()
        busy = mu.try_lock()
        release.send(None)
        locked.recv()
        free = mu.try_lock()
        mu.unlock()
        try:
            mu.unlock()
        except RuntimeError as exc:
            err = str(exc)
        return busy, free, err

    busy, free, err = run(main, procs)
    assert (busy, free) == (False, True)
    assert "unlock of unlocked mutex" in err.lower()


def test_mutex_waiter_on_another_p_gets_it_on_unlock(procs: int) -> None:
    def taker(mu: Mutex, out: Chan) -> None:
        mu.lock()
        out.send(runtime.current_p())
        mu.unlock()

    def main():
        mu, out = Mutex(), Chan(1)
        mu.lock()
        H.go_on(H.other_p(procs), taker, mu, out)
        H.wait_reason("sync.Mutex.Lock")
        mu.unlock()
        return out.recv()

    assert run(main, procs) == H.other_p(procs)


def test_rwmutex_readers_share_writers_exclude_across_ps(procs: int) -> None:
    def main():
        rw, wg = RWMutex(), WaitGroup()
        inside, writers, bad, peak = (atomic.Int64(0) for _ in range(4))
        wg.add(3 * procs)
        for p in range(procs):
            H.go_on(p, H.reader, rw, inside, writers, bad, peak, 30, wg)
            H.go_on(p, H.reader, rw, inside, writers, bad, peak, 30, wg)
            H.go_on(p, H.writer, rw, inside, writers, bad, 10, wg)
        wg.wait()
        return bad.load(), inside.load(), writers.load(), peak.load()

    bad, inside, writers, peak = run(main, procs)
    assert (bad, inside, writers) == (0, 0, 0)
    assert peak >= 1


def test_rwmutex_two_readers_in_different_ps_hold_it_together(procs: int) -> None:
    def reader(rw: RWMutex, held: Chan, release: Chan) -> None:
        rw.rlock()
        held.send(runtime.current_p())
        release.recv()
        rw.runlock()

    def main():
        rw, held, release = RWMutex(), Chan(), Chan()
        H.go_on(0, reader, rw, held, release)
        H.go_on(H.other_p(procs), reader, rw, held, release)
        ps = sorted([held.recv(), held.recv()])  # both hold the read lock at once
        writer_blocked = not rw.try_lock()
        release.send(None)
        release.send(None)
        rw.lock()  # both readers left
        rw.unlock()
        return ps, writer_blocked

    assert run(main, procs) == ([0, H.other_p(procs)], True)


# ---------------------------------------------------------------- Once / Cond


def test_once_runs_once_across_every_p(procs: int) -> None:
    def main():
        once, calls, finished, out = Once(), atomic.Int64(0), atomic.Int64(0), Chan(3 * procs)
        on_every_p(procs, 3, H.once_caller, once, calls, finished, out)
        seen = [out.recv() for _ in range(3 * procs)]
        return calls.load(), seen

    calls, seen = run(main, procs)
    assert calls == 1
    assert seen == [1] * (3 * procs)


def test_once_that_raises_still_counts_as_done(procs: int) -> None:
    def first(once: Once, out: Chan) -> None:
        try:
            once.do(lambda: H.raise_value_error("once failed"))
        except ValueError as exc:
            out.send(str(exc))

    def main():
        once, out = Once(), Chan(1)
        H.go_on(H.other_p(procs), first, once, out)
        msg = out.recv()
        ran = []
        once.do(lambda: ran.append(1))
        return msg, ran

    assert run(main, procs) == ("once failed", [])


def test_cond_broadcast_wakes_waiters_in_every_p(procs: int) -> None:
    def main():
        mu = Mutex()
        cond, ready, out = Cond(mu), atomic.Int64(0), Chan(4 * procs)
        on_every_p(procs, 2, H.cond_waiter, cond, ready, out)
        H.wait_reason("sync.Cond.Wait", 2 * procs)
        with mu:
            ready.store(1)
            cond.broadcast()
        return sorted(out.recv() for _ in range(2 * procs))

    assert run(main, procs) == sorted(list(range(procs)) * 2)


def test_cond_signal_wakes_one_at_a_time(procs: int) -> None:
    def waiter(cond: Cond, out: Chan) -> None:
        with cond.L:
            cond.wait()
        out.send(runtime.current_p())

    def main():
        cond, out = Cond(Mutex()), Chan(2)
        H.go_on(0, waiter, cond, out)
        H.go_on(H.other_p(procs), waiter, cond, out)
        H.wait_reason("sync.Cond.Wait", 2)
        cond.signal()
        first = out.recv()
        still = H.count_reason("sync.Cond.Wait")
        cond.signal()
        second = out.recv()
        return sorted([first, second]), still

    ps, still = run(main, procs)
    assert ps == [0, H.other_p(procs)] and still == 1


# ---------------------------------------------------------------- atomics


def test_int64_add_from_every_p_loses_nothing(procs4: int) -> None:
    def main():
        n, wg = atomic.Int64(0), WaitGroup()
        wg.add(2 * procs4)
        on_every_p(procs4, 2, H.adder, n, 2000, wg)
        wg.wait()
        return n.load()

    assert run(main, procs4) == 2 * procs4 * 2000


def test_compare_and_swap_has_one_winner_across_ps(procs: int) -> None:
    def main():
        word, flag, out = atomic.Int64(0), atomic.Bool(False), Chan(4 * procs)
        me = 0
        for p in range(procs):
            for _ in range(4):
                me += 1
                H.go_on(p, H.cas_racer, word, flag, me, out)
        got = [out.recv() for _ in range(4 * procs)]
        return got, word.load(), flag.load()

    got, word, flag = run(main, procs)
    assert sum(w for w, _ in got) == 1 and sum(f for _, f in got) == 1
    assert 1 <= word <= 4 * procs and flag is True


def test_int64_and_bool_operations_seen_by_another_p(procs: int) -> None:
    def remote(n: atomic.Int64, b: atomic.Bool, out: Chan) -> None:
        out.send((n.load(), n.swap(-5), n.add(2**62), b.load(), b.swap(False)))

    def main():
        n, b, out = atomic.Int64(0), atomic.Bool(False), Chan(1)
        n.store(2**63 - 1)
        b.store(True)
        H.go_on(H.other_p(procs), remote, n, b, out)
        got = out.recv()
        return got, n.load(), b.load(), n.add(2**63 - 1)

    got, n, b, wrapped = run(main, procs)
    assert got == (2**63 - 1, 2**63 - 1, -5 + 2**62, True, True)
    assert (n, b) == (-5 + 2**62, False)
    assert wrapped == ((-5 + 2**62 + 2**63 - 1 + 2**63) % 2**64) - 2**63  # wraps as in Go


# ---------------------------------------------------------------- context


def test_cancel_in_p0_closes_done_in_every_p(procs4: int) -> None:
    def main():
        ctx, cancel = context.with_cancel(context.background())
        child, _cancel_child = context.with_cancel(ctx)
        out = Chan(4 * procs4)
        on_every_p(procs4, 1, H.wait_done, ctx, out)
        on_every_p(procs4, 1, H.wait_done, child, out)
        H.wait_until(lambda: ctx.done().stats().receivers_waiting >= procs4, "parked on done")
        cancel()
        return sorted(out.recv() for _ in range(2 * procs4))

    got = run(main, procs4)
    assert got == sorted([(p, "Canceled") for p in range(procs4)] * 2)


def test_cancel_in_another_p_closes_done_in_p0(procs: int) -> None:
    def canceller(cancel) -> None:
        cancel()

    def main():
        ctx, cancel = context.with_cancel(context.background())
        H.go_on(H.other_p(procs), canceller, cancel)
        ctx.done().recv()
        return type(ctx.err()).__name__

    assert run(main, procs) == "Canceled"


def test_cancel_in_another_p_reaches_children_made_in_p0(procs: int) -> None:
    def canceller(cancel) -> None:
        cancel()

    def main():
        ctx, cancel = context.with_cancel(context.background())
        child, _ = context.with_cancel(ctx)
        grandchild = context.with_value(child, "k", "v")
        H.go_on(H.other_p(procs), canceller, cancel)
        grandchild.done().recv()
        return type(child.err()).__name__, grandchild.value("k")

    assert run(main, procs) == ("Canceled", "v")


def test_timeout_and_values_seen_in_another_p(procs: int) -> None:
    def remote(ctx, out: Chan) -> None:
        ctx.done().recv()
        t, ok = ctx.deadline()
        out.send((type(ctx.err()).__name__, ctx.value("user"), ok, isinstance(t, float)))

    def main():
        base = context.with_value(context.background(), "user", "gopher")
        ctx, cancel = context.with_timeout(base, 0.05)
        out = Chan(1)
        H.go_on(H.other_p(procs), remote, ctx, out)
        got = out.recv()
        cancel()
        return got

    assert run(main, procs) == ("DeadlineExceeded", "gopher", True, True)


# ---------------------------------------------------------------- errgroup


def test_errgroup_collects_goroutines_of_every_p(procs: int) -> None:
    def main():
        g, out = errgroup.Group(), Chan(40)
        for _ in range(40):
            g.go(H.ok_task, out)
        g.wait()
        return len(out)

    assert run(main, procs) == 40


def test_errgroup_first_error_from_another_p(procs: int) -> None:
    def main():
        g, out, started = errgroup.Group(), Chan(10), Chan(1)
        for _ in range(10):
            g.go(H.ok_task, out)
        H.go_on(H.other_p(procs), H.group_member, g, started, H.failing_task, "from afar")
        where = started.recv()
        try:
            g.wait()
        except KeyError as exc:
            return where, exc.args[0], len(out)
        return where, None, len(out)

    assert run(main, procs) == (H.other_p(procs), "from afar", 10)


def test_errgroup_with_context_cancels_on_error_in_another_p(procs: int) -> None:
    def main():
        g, ctx = errgroup.with_context(context.background())
        out, started = Chan(procs), Chan(1)
        for p in range(procs):
            H.go_on(p, H.wait_done, ctx, out)
        for _ in range(5):
            g.go(H.ok_task, Chan(1))
        H.go_on(H.other_p(procs), H.group_member, g, started, H.failing_task, "boom")
        started.recv()
        err = None
        try:
            g.wait()
        except KeyError as exc:
            err = exc.args[0]
        got = sorted(out.recv() for _ in range(procs))
        return err, got

    err, got = run(main, procs)
    assert err == "boom"
    assert got == [(p, "Canceled") for p in range(procs)]


def test_errgroup_limit_holds_across_ps(procs: int) -> None:
    def task(inside: atomic.Int64, peak: atomic.Int64) -> None:
        n = inside.add(1)
        while True:
            p = peak.load()
            if n <= p or peak.compare_and_swap(p, n):
                break
        for _ in range(5):
            runtime.gosched()
        inside.add(-1)

    def main():
        g = errgroup.Group()
        g.set_limit(2)
        inside, peak = atomic.Int64(0), atomic.Int64(0)
        for _ in range(30):
            g.go(task, inside, peak)
        g.wait()
        return peak.load(), inside.load()

    peak, inside = run(main, procs)
    assert 1 <= peak <= 2 and inside == 0


# ---------------------------------------------------------------- runtime


def test_num_goroutine_counts_every_p(procs: int) -> None:
    def main():
        ch = Chan()
        on_every_p(procs, 2, H.block_forever, ch)
        want = 1 + 2 * procs
        H.wait_until(lambda: runtime.num_goroutine() == want, f"{want} goroutines")
        ch.close()
        H.wait_until(lambda: runtime.num_goroutine() == 1, "only main left")
        return True

    assert run(main, procs)


def test_stack_shows_goroutines_of_every_p_with_wait_reasons(procs: int) -> None:
    def main():
        ch, mu = Chan(), Mutex()
        mu.lock()
        for p in range(procs):
            H.go_on(p, H.block_forever, ch)
            H.go_on(p, mu.lock)
        H.wait_reason("chan receive", procs)
        H.wait_reason("sync.Mutex.Lock", procs)
        text = runtime.stack()
        ch.close()
        mu.unlock()
        return text

    text = run(main, procs)
    blocks = ["goroutine " + b for b in ("\n" + text).split("\ngoroutine ")[1:]]
    for p in range(procs):
        mine = [b for b in blocks if f" on P{p}:" in b.splitlines()[0]]
        assert any("[chan receive]" in b.splitlines()[0] and "block_forever" in b
                   for b in mine), text
        assert any("[sync.Mutex.Lock]" in b.splitlines()[0] for b in mine), text
    assert blocks[0].startswith("goroutine 1 [running] on P0"), text
    assert "mp_helpers.py" in text  # Python stacks too


def test_runtime_queries_from_another_p_see_every_p(procs: int) -> None:
    def remote(out: Chan) -> None:
        # main parked on out: what the stack must show (not main woken by go_on's replies);
        # P0 publishes its count when it next idles, which it then does
        H.wait_until(lambda: out.stats().receivers_waiting >= 1, "main parked on out")
        H.wait_until(lambda: runtime.num_goroutine() >= 3, "P0's goroutines counted")
        out.send((runtime.current_p(), runtime.num_goroutine(), runtime.stack(),
                  runtime.gomaxprocs()))

    def main():
        ch, out = Chan(), Chan(1)
        H.go_on(0, H.block_forever, ch)
        H.wait_reason("chan receive", 1)
        H.go_on(H.other_p(procs), remote, out)
        got = out.recv()
        ch.close()
        return got

    p, n, text, maxprocs = run(main, procs)
    assert p == H.other_p(procs) and maxprocs == procs
    assert n >= 3  # main, the blocked goroutine, the caller
    assert "goroutine 1 [chan receive] on P0: main\n" in text, text
    assert "block_forever" in text and f"[running] on P{p}:" in text, text


def test_gomaxprocs_inside_a_run(procs: int) -> None:
    def main():
        return runtime.gomaxprocs(), runtime.num_cpu() >= 1

    assert run(main, procs) == (procs, True)


def test_gomaxprocs_shrinks_and_grows_a_running_runtime() -> None:
    def main():
        assert runtime.gomaxprocs(1) == 2
        out = Chan(40)
        for _ in range(40):
            go(H.report_p, out)
        shrunk = {out.recv()[0] for _ in range(40)}
        assert runtime.gomaxprocs(2) == 1
        back = Chan(1)
        H.go_on(1, H.report_p, back)
        return shrunk, back.recv()[0]

    shrunk, back = run(main, 2)
    assert shrunk == {0}
    assert back == 1


def test_gomaxprocs_adds_ps_to_a_running_runtime() -> None:
    def main():
        assert runtime.gomaxprocs(3) == 2
        out = Chan(1)
        H.go_on(2, H.report_p, out)
        p2, pid2 = out.recv()
        assert runtime.gomaxprocs(2) == 3
        shrunk = Chan(40)
        for _ in range(40):
            go(H.report_p, shrunk)
        return p2, pid2, {shrunk.recv()[0] for _ in range(40)}

    p2, pid2, ps = run(main, 2)
    assert p2 == 2 and pid2 != os.getpid()
    assert 2 not in ps  # a drained P takes no new work


def _lock_then_report(mu: Mutex, out: Chan) -> None:
    mu.lock()
    out.send(runtime.current_p())
    mu.unlock()


def _owes_when_granting() -> tuple[list[tuple[int, int]], int, int]:
    from csp_mp._hub import current_hub

    b: Any = current_hub().broker
    mu, out = Mutex(), Chan(1)
    mu.lock()
    H.go_on(1, _lock_then_report, mu, out)
    H.wait_reason("sync.Mutex.Lock")
    seen: list[tuple[int, int]] = []
    deliver = b.deliver

    def spy(p: int, *args: Any) -> None:  # the grant's wake-up, before it is queued
        seen.append((p, b.ctx.pload(b.p, C.P_OWES)))
        deliver(p, *args)

    b.deliver = spy
    try:
        mu.unlock()
    finally:
        del b.deliver
    got = out.recv()
    H.wait_until(lambda: not b.wakes_out, "the grant sent")
    return seen, got, b.ctx.pload(b.p, C.P_OWES)


def test_a_grant_to_another_p_is_owed_from_before_its_claim() -> None:
    """A shared semaphore's release (Mutex.unlock here) sets P_OWES before it claims a waiter
    of another P, as a channel's hand-off does, and leaves it 0 once the grant is sent."""
    seen, p, owes_after = run(_owes_when_granting, 2)
    assert seen == [(1, 1)] and p == 1 and owes_after == 0
