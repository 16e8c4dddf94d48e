"""CPU work that balances over the Ps: a go() an idle P can take at once, goroutines not
started that stay stealable, a P that does not start queued goroutines beside a running one
while another P could take them."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import mp_helpers as H
import pytest

import csp_mp
from csp_mp import Chan, atomic, go, runtime
from csp_mp._hub import hooks
from csp_mp._mp import ctx as C
from csp_mp._mp import tasks
from csp_mp._mp.balance import STARVE
from csp_mp._proc import proc


def _set(flag: atomic.Int64, out: Chan) -> None:
    flag.store(1)
    out.send(runtime.current_p())


def _spin_until(flag: atomic.Int64, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if flag.load():
            return True
    return False


def _go_then_spin() -> tuple[bool, int]:
    H.go_on(1, H.noop)  # P1 is up (then idle again)
    flag, out = atomic.Int64(0), Chan(1)
    go(_set, flag, out)
    seen = _spin_until(flag, H.DEADLINE)  # never yields: preemption is off
    return seen, out.recv()


def test_a_go_with_an_idle_p_runs_there_while_the_spawner_keeps_its_p(monkeypatch) -> None:
    """Go's newproc + wakep: the goroutine is in a run queue other Ps see, and an idle P is
    rung, whatever the spawner does next (here: spin without yielding its P)."""
    monkeypatch.setenv("CSP_MP_PREEMPT", "0")
    seen, p = csp_mp.run(_go_then_spin, procs=2)
    assert seen and p == 1


def _timed(i: int, n: int, out: Chan) -> None:
    t0 = time.monotonic()
    H.spin(n)
    out.send((i, runtime.current_p(), t0, time.monotonic()))


def _fan_out(k: int, n: int) -> list[tuple]:
    H.go_on(1, H.noop)
    out: Chan = Chan(k)
    for i in range(k):
        go(_timed, i, n, out)
    return [out.recv() for _ in range(k)]


def _spins_for(seconds: float) -> int:
    n = 20_000
    while True:
        t0 = time.perf_counter()
        H.spin(n)
        if time.perf_counter() - t0 >= seconds / 4:
            return int(n * seconds / (time.perf_counter() - t0))
        n *= 2


def test_queued_cpu_goroutines_start_one_at_a_time_per_p_and_spread() -> None:
    """Six CPU-bound goroutines on two Ps: each P runs them one after the other (a thief does
    not start everything it took, a preempted goroutine does not get company while the other
    P could take the work), and both Ps run some."""
    got = csp_mp.run(_fan_out, 6, _spins_for(0.06), procs=2)
    assert sorted(i for i, *_ in got) == list(range(6))  # each ran once
    assert {p for _, p, *_ in got} == {0, 1}
    for p in (0, 1):
        spans = sorted((a, b) for _, q, a, b in got if q == p)
        for (before, end), (start, _) in zip(spans, spans[1:], strict=False):
            # (on a loaded machine one may run so long that the queued one starves: then it
            # starts beside it, but not before STARVE)
            assert start >= end or start - before >= STARVE, \
                f"P{p} started a goroutine beside a running one: {spans}"


def _chain(i: int, n: int, out: Chan) -> None:
    if i + 1 < n:
        go(_chain, i + 1, n, out)
    H.spin(2000)
    out.send(i)


def _many(rounds: int, width: int) -> list[int]:
    out: Chan = Chan(rounds * width)
    for r in range(rounds):
        for w in range(width):
            go(_chain, 0, 5 + (r + w) % 7, out)
    return [out.recv() for _ in range(sum(5 + (r + w) % 7 for r in range(rounds)
                                              for w in range(width)))]


@pytest.mark.stress
def test_chains_and_fan_outs_lose_and_repeat_nothing_under_stealing() -> None:
    """Goroutines stolen, left in the thief's ring, stolen again: each runs exactly once."""
    for _ in range(20):
        got = csp_mp.run(_many, 8, 16, procs=2)
        expect = sorted(i for r in range(8) for w in range(16) for i in range(5 + (r + w) % 7))
        assert sorted(got) == expect


def test_chains_lose_and_repeat_nothing() -> None:
    got = csp_mp.run(_many, 3, 8, procs=2)
    assert sorted(got) == sorted(i for r in range(3) for w in range(8)
                                 for i in range(5 + (r + w) % 7))


# ---------------------------------------------------------------- the compiled go()


def _spawner_publishing() -> dict:
    """A compiled Spawner on a ring and a hint word of the test's own: when it publishes."""
    from csp_mp._hub import current_hub
    from csp_mp._shm import make_ring
    from csp_mp._shm.native import core

    hub = current_hub()
    b: Any = hub.broker
    arena = b.arena
    ring = make_ring(arena, 1 << 12)
    hint = arena.alloc(8)
    arena.words.store(hint // 8, 0)
    frames: deque = deque()
    entries: deque = deque()
    published: deque = deque()
    flushes: list[int] = []
    wakes: list[int] = []
    sp = core().Spawner(b.runq.encode_plain.__self__, hub, 0, frames, entries,
                        lambda fn, args, kwargs: None, lambda: flushes.append(len(frames)), 4,
                        hint=hint, ring=ring.offset, published=published,
                        wake=lambda: wakes.append(len(ring)))
    sp.fn_last, sp.entry = H.noop, tasks.pickle_fn(H.noop)
    steps = []
    sp.go(H.noop, (0,), {})  # the ring is empty: straight in
    steps.append((len(ring), len(frames), len(published)))
    sp.go(H.noop, (1,), {})  # the ring holds one: queued, flushed at the batch's end
    sp.go(H.noop, (2,), {})
    steps.append((len(ring), len(frames), len(published)))
    arena.words.store(hint // 8, 1)  # a P is hungry: flush after every frame
    sp.go(H.noop, (3,), {})
    steps.append((len(ring), len(frames), len(published), list(flushes)))
    ring.get_many(10)
    frames.clear()
    entries.clear()
    sp.go(H.noop, (4,), {})  # empty ring, hungry: straight in, and wake
    steps.append((len(ring), len(frames), [e[2][0] for e in published], list(wakes)))
    for f in ring.get_many(10):
        tasks.own_frame(f, arena)
    # with the Ps' doorbells, the hungry P named by the hint is rung from C
    from csp_mp._shm.doorbell import NativeDoorbell

    bell = NativeDoorbell.create(arena)
    sp2 = core().Spawner(b.runq.encode_plain.__self__, hub, 0, deque(), deque(),
                         lambda fn, args, kwargs: None, lambda: None, 4, hint=hint,
                         ring=ring.offset, published=published, wake=lambda: wakes.append(-1),
                         bells=(bell.offset,))
    sp2.fn_last, sp2.entry = H.noop, tasks.pickle_fn(H.noop)
    arena.words.store(hint // 8, 1)  # P0 + 1
    sp2.go(H.noop, (5,), {})
    steps.append((len(ring), arena.words.load(hint // 8), bell.wait(0), bell.wait(0), wakes))
    for f in ring.get_many(10):
        tasks.own_frame(f, arena)
    ring.destroy()
    arena.decref(hint)
    return {"steps": steps}


def test_the_compiled_go_publishes_at_once_into_an_empty_ring_or_for_a_hungry_p() -> None:
    if not csp_mp.runtime.native():
        pytest.skip("the compiled core's Spawner (the Python path is place() itself)")
    got = csp_mp.run(_spawner_publishing, procs=2)
    assert got["steps"] == [
        (1, 0, 1),
        (1, 2, 1),
        (1, 3, 1, [3]),
        (1, 0, [0, 4], [1]),
        (1, 0, True, False, [1]),  # rung once, by C; wake() not called
    ]


def test_the_hungry_hint_has_its_own_line() -> None:
    assert C.G_HUNGRY * 8 % 64 == 0 and C.G_HUNGRY >= 8


def _give_back_case() -> dict:
    from csp_mp._hub import current_hub

    hub = current_hub()
    b: Any = hub.broker
    out: Chan = Chan(8)
    created = runtime.metrics()["goroutines_created"]
    movable = [hub.new_g(H.report_p, (out,), {}, False) for _ in range(3)]
    pinned = hub.new_g(H.report_p, (out,), {}, True)
    hub.fresh.extend([*movable, pinned])
    b.balance.give_back(hub)
    left = list(hub.fresh)
    gone = [g.id in hub.allgs for g in movable]
    got = sorted(out.recv()[0] for _ in range(4))  # the three handed on, and the pinned one
    return {"left": [g is pinned for g in left], "in_allgs": gone, "ran": len(got),
            "created": runtime.metrics()["goroutines_created"] - created}


def test_goroutines_not_started_go_back_to_the_queue_between_ps() -> None:
    """give_back: the movable ones leave this P's goroutines and run once each where they are
    taken; a pinned one stays; creation is counted once."""
    got = csp_mp.run(_give_back_case, procs=2)
    assert got == {"left": [True], "in_allgs": [False, False, False], "ran": 4, "created": 0}


def _busy_until(flag: atomic.Int64) -> None:
    end = time.monotonic() + H.DEADLINE
    while not flag.load() and time.monotonic() < end:
        pass


def _send_p(i: int, out: Chan) -> None:
    out.send((i, runtime.current_p()))


class _Parks(hooks.Instrument):
    def __init__(self, g: Any) -> None:
        self.g, self.count = g, 0

    def parked(self, g: Any, reason: str) -> None:
        self.count += g is self.g


def _receiver_runs_its_own_queue() -> tuple[list, int]:
    flag = atomic.Int64(0)
    H.go_on(1, _busy_until, flag)  # P1 runs and never goes idle: nothing is stolen
    out: Chan = Chan(64)
    for i in range(64):
        go(_send_p, i, out)
    hub = proc.hub
    watch = _Parks(hub.current)
    hooks.install(hub, watch)
    try:
        got = [out.recv() for _ in range(64)]
    finally:
        hooks.uninstall(hub, watch)
        flag.store(1)
    return got, watch.count


def test_a_receiver_runs_its_ps_queued_goroutines_before_it_parks() -> None:
    """Go's order: a goroutine that would wait on a shared channel while goroutines of its P
    are queued and no P is idle to take them lets them run first, and never parks (a parked
    receiver costs every sender a wake-up across processes)."""
    got, parked = csp_mp.run(_receiver_runs_its_own_queue, procs=2)
    assert sorted(i for i, _ in got) == list(range(64))
    assert {p for _, p in got} == {0}
    assert parked == 0


def _receiver_finds_batches(n: int) -> tuple[list, int]:
    flag = atomic.Int64(0)
    H.go_on(1, _busy_until, flag)  # P1 runs and never goes idle: nothing is stolen
    out: Chan = Chan(n)
    for i in range(n):  # more than the ring takes: the rest waits unpublished, on P0
        go(_send_p, i, out)
    found = []
    try:
        for _ in range(n):
            found.append(out.stats().buffered)  # what the receiver finds when it looks
            out.recv()
    finally:
        flag.store(1)
    return found, n


def test_a_receiver_lets_a_batch_taken_back_run_back_to_back() -> None:
    """A fan-out larger than the ring leaves frames unpublished, which the P takes back
    ``OWN_BATCH`` at a time: the receiver that would wait lets the whole batch run before it
    looks again, so it finds the batch's results buffered, not one result per look."""
    from csp_mp._mp.runq import OWN_BATCH

    found, n = csp_mp.run(_receiver_finds_batches, 20_000, procs=2)
    assert len(found) == n
    assert max(found) >= OWN_BATCH - 1, max(found)
