"""Stress across Ps: exactly-once delivery with per-producer FIFO, select exclusivity, and the
CPU parallelism the multi-process runtime exists for.

Conservation checks, not timings: every value sent is received exactly once. The one ratio
asserted (2 Ps vs 1 P on CPU-bound goroutines) is the issue's explicit requirement.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import mp_helpers as H
import psutil
import pytest

import csp_mp
from csp_mp import Chan, WaitGroup
from csp_mp._mp import ctx as C


def _placed(procs: int, i: int) -> int:
    return i % procs


@pytest.mark.stress
@pytest.mark.parametrize("cap", [0, 1, 64])
@pytest.mark.parametrize("procs", [2, 4])
def test_every_value_received_exactly_once_in_per_producer_order(procs: int, cap: int) -> None:
    producers, consumers = 4, 4
    per = 8000 if cap else 2500
    if procs == 4:
        per //= 2
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    order = list(range(producers + consumers))
    rng.shuffle(order)  # which roles go to which P, and the order they start in

    def main():
        ch, out, wg = Chan(cap), Chan(consumers), WaitGroup()
        wg.add(producers)
        for i in order:
            if i < producers:
                H.go_on(_placed(procs, i), H.produce, ch, i, per, wg)
            else:
                H.go_on(_placed(procs, i), H.consume, ch, out)
        wg.wait()
        ch.close()
        return [out.recv() for _ in range(consumers)]

    done = csp_mp.run(main, procs=procs)
    lists = [lst for _, lst in done]
    got = Counter(v for lst in lists for v in lst)
    assert len(got) == producers * per, "values lost"
    assert set(got.values()) == {1}, "values received twice"
    for lst in lists:  # per-producer FIFO as each consumer saw it
        last = {}
        for me, i in lst:
            assert i > last.get(me, -1), (me, i, last.get(me))
            last[me] = i
    # the consumers ran where they were placed, on every P; which of them got values is not
    # asserted: Go promises receivers no fairness (one may drain the channel while the others
    # wait, as under the sanitizer's slowdown)
    assert {p for p, _ in done} == {_placed(procs, i) for i in range(producers, producers +
                                                                      consumers)}


@pytest.mark.stress
@pytest.mark.parametrize("caps", [(0, 0, 0), (1, 0, 4)], ids=["unbuffered", "mixed"])
def test_select_exclusivity_across_ps(caps: tuple[int, ...]) -> None:
    procs, senders, receivers, per = 2, 4, 4, 2000
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    roles = [("s", i) for i in range(senders)] + [("r", i) for i in range(receivers)]
    rng.shuffle(roles)

    def main():
        chans = [Chan(c) for c in caps]
        sent, got, wg = Chan(senders), Chan(receivers), WaitGroup()
        wg.add(senders)
        for kind, i in roles:
            if kind == "s":
                H.go_on(i % procs, H.select_sender, chans, i, per, sent, wg)
            else:
                H.go_on(i % procs, H.select_receiver, chans, got)
        wg.wait()
        for c in chans:
            c.close()
        return [sent.recv() for _ in range(senders)], [got.recv() for _ in range(receivers)]

    sent, got = csp_mp.run(main, procs=procs)
    chosen = {(me, i): k for me, ks in sent for i, k in enumerate(ks)}
    assert len(chosen) == senders * per
    received = Counter((v[0], v[1]) for lst in got for _k, v in lst)
    assert len(received) == senders * per, "values lost"
    assert set(received.values()) == {1}, "a value was taken by two cases"
    for lst in got:
        for k, (me, i, tag) in lst:
            assert k == tag, "received on a channel the value was not sent on"
            assert chosen[(me, i)] == k, "the sender's select reports another case"
    per_chan = Counter(k for k in chosen.values())
    assert len(per_chan) == len(caps), per_chan  # every case won sometimes
    assert sum(1 for lst in got if lst) >= 2


# ---------------------------------------------------------------- CPU parallelism


STARVED = 0.5  # CPUs taken by other processes during the 2-P job, as a share of one CPU


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        c = psutil.Process(pid).cpu_times()
        total += c.user + c.system
    return total


def _cpu_job(n: int, tasks: int):
    """A main that runs ``tasks`` CPU-bound goroutines of ``spin(n)`` and returns (seconds from
    the first go to the last result, the Ps they ran on, the CPUs other processes of the machine
    took meanwhile, on average)."""
    def main():
        ctx = C.current()
        if ctx is None:
            pids = [os.getpid()]
        else:
            H.wait_until(lambda: all(ctx.pload(q, C.P_PID) for q in range(ctx.nprocs)),
                         "every P published its pid")
            pids = [ctx.pload(q, C.P_PID) for q in range(ctx.nprocs)]
        out = Chan(tasks)
        busy0, ours0 = _busy_seconds(), _cpu_of(pids)
        t0 = time.perf_counter()
        for _ in range(tasks):
            csp_mp.go(H.timed_spin, n, out)
        got = [out.recv() for _ in range(tasks)]
        dt = time.perf_counter() - t0
        others = (_busy_seconds() - busy0) - (_cpu_of(pids) - ours0)
        assert len({c for _p, c, *_x in got}) == 1
        return dt, {p for p, *_x in got}, max(0.0, others) / dt

    return main


@pytest.mark.skipif(_usable_cpus() < 2, reason="needs 2 usable CPUs")
def test_cpu_bound_goroutines_run_in_parallel_on_two_ps() -> None:
    n = 0
    t = 0.0
    while t < 0.05:  # calibrate: one spin of ~0.15 s
        n = max(n * 2, 20000)
        t0 = time.perf_counter()
        H.spin(n)
        t = time.perf_counter() - t0
    n = int(n * 0.15 / t)
    rounds = []
    for _ in range(3):  # interleaved rounds; the machine is shared with other work
        dt1, ps1, _ = csp_mp.run(_cpu_job(n, 8), procs=1)
        dt2, ps2, others = csp_mp.run(_cpu_job(n, 8), procs=2)
        assert ps1 == {0} and ps2 == {0, 1}
        rounds.append((dt2 / dt1, dt1, dt2, others))
        print("8 CPU-bound goroutines: 1 P {1:.2f}s, 2 Ps {2:.2f}s, ratio {0:.2f}; other "
              "processes took {3:.2f} CPUs meanwhile".format(*rounds[-1]))
        if dt2 / dt1 <= 0.75:
            return
    fed = [r for r in rounds if r[3] < STARVED]
    if not fed:
        pytest.skip(f"other processes held the CPUs during every 2-P run "
                    f"({min(r[3] for r in rounds):.2f} CPUs at least)")
    assert min(r[0] for r in fed) <= 0.75, rounds


def _send_index(i: int, out: Chan) -> None:
    out.send(i)


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_no_goroutine_lost_while_a_trace_function_runs() -> None:
    """A trace function is user code the interpreter calls from inside the runtime's own frames.
    Preemption used to switch there, between two steps of go() or of a steal, and a goroutine
    was lost: the result channel then waited forever (DeadlockError)."""
    import sys

    window, n, rounds = 4096, 8000, 3  # lost in about one round of two before the fix
    seen: Counter = Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True

        def local(frame, event, arg):
            seen[frame.f_code.co_name] += 1  # slow enough that preemption often lands here
            return local

        return local

    def main() -> int:
        out: Chan = Chan(window)
        sys.settrace(tracer)
        for i in range(window):
            csp_mp.go(_send_index, i, out)
        nxt = window
        total = 0
        for _ in range(n):
            total += out.recv()
            if nxt < n:
                csp_mp.go(_send_index, nxt, out)
                nxt += 1
        sys.settrace(None)
        return total

    for _ in range(rounds):
        assert csp_mp.run(main, procs=2) == n * (n - 1) // 2


def _send_index_and_p(i: int, out: Chan) -> None:
    out.send((i, csp_mp.runtime.current_p()))


@pytest.mark.timeout(120)
def test_a_fan_out_larger_than_the_run_queue_runs_every_goroutine_once() -> None:
    """More go() frames than P0's stealable ring holds: what does not fit waits to be published
    (still stealable) instead of becoming P0's own goroutines; each runs exactly once."""
    from csp_mp._mp import ctx as C

    n = 40_000  # ~1 MiB ring of ~150-byte frames: several times over

    def main() -> tuple[list[int], set[int], int]:
        out = Chan(n)
        for i in range(n):
            csp_mp.go(_send_index_and_p, i, out)
        got = [out.recv() for _ in range(n)]
        return sorted(i for i, _ in got), {p for _, p in got}, C.RUNQ_BYTES

    got, ps, ring = csp_mp.run(main, procs=2)
    assert got == list(range(n))
    assert n * 100 > ring  # the fan-out did not fit
    assert ps == {0, 1}
