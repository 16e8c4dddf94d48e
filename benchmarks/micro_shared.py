"""Micro-measurements behind the shared-memory and multi-P fast paths (not a family: no bars).

``python -m benchmarks.micro_shared`` prints, each as the best of several repeats:

- a shared word read and written through ``Words.load``/``store`` (bound method-wrappers) and
  by subscripting ``Words.view``;
- a ring's lock hold time for a batch of 64 small frames, frame by frame and as one copy;
- a send and a receive on a shared channel in one process (no contention);
- ``go(fn, i, out)``'s task frame packed and unpacked;
- a 64 MiB array sent to another P, the first transfers and then the steady state.
"""

from __future__ import annotations

import os
import sys
import time
import timeit
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import csp_mp  # noqa: E402
from benchmarks._common import pick  # noqa: E402
from benchmarks.bench_parallel import _tiny_task  # noqa: E402
from benchmarks.parallel_cross import _array_sink, place_on  # noqa: E402
from csp_mp._shm import codec  # noqa: E402
from csp_mp._shm.arena import Arena  # noqa: E402
from csp_mp._shm.ring import Ring  # noqa: E402


def best(fn: Any, number: int, repeat: int = 7) -> float:
    """Seconds per call, best of ``repeat`` timings of ``number`` calls (tiny runs: a few)."""
    number = pick(False, number, number, 10)
    return min(timeit.repeat(fn, number=number, repeat=pick(False, repeat, repeat, 1))) / number


def words_and_ring() -> None:
    arena = Arena.create(64 << 20)
    try:
        w, i = arena.words, 100
        q, load, store = w.view, w.load, w.store

        def by_call() -> None:
            store(i, load(i) + 1)

        def by_subscript() -> None:
            q[i] = q[i] + 1

        print(f"word load+store, bound methods   {best(by_call, 200_000) * 1e9:7.0f} ns")
        print(f"word load+store, view subscript  {best(by_subscript, 200_000) * 1e9:7.0f} ns")

        ring = Ring.create(arena, 1 << 16)
        items = [codec.encode([k, "chan-7", {"op": "send", "v": k}]) for k in range(64)]
        rq = ring._q
        held_frames: list[float] = []
        held_copy: list[float] = []
        got_frames: list[float] = []
        got_copy: list[float] = []
        for _ in range(pick(False, 500, 500, 3)):
            t, h = rq[ring._tw], rq[ring._hw]
            t0 = time.perf_counter()
            nt, _n = ring._write_run(t, h, items, 0)
            rq[ring._tw] = nt
            held_frames.append(time.perf_counter() - t0)
            h, t = rq[ring._hw], rq[ring._tw]
            t0 = time.perf_counter()
            rq[ring._hw] = ring._read_run(h, t, 256, [])
            got_frames.append(time.perf_counter() - t0)
            blob, k = ring._pack_run(items, 0)
            t, h = rq[ring._tw], rq[ring._hw]
            t0 = time.perf_counter()
            rq[ring._tw] = ring._put_blob(t, h, blob, k)
            held_copy.append(time.perf_counter() - t0)
            h, t = rq[ring._hw], rq[ring._tw]
            t0 = time.perf_counter()
            raw, rq[ring._hw] = ring._take(h, t, 256)
            got_copy.append(time.perf_counter() - t0)
            ring._split(raw, [])
        for name, xs in (("put, frame by frame", held_frames), ("put, one copy", held_copy),
                         ("get, frame by frame", got_frames), ("get, one copy", got_copy)):
            xs.sort()
            print(f"ring lock held for 64 frames, {name:<20} {xs[len(xs) // 2] * 1e6:6.1f} µs"
                  " (median)")
        ring.destroy()
    finally:
        arena.sems.seal()
        arena.close()


def _noop(ch: Any) -> None:
    pass


def multi_p() -> None:
    def main() -> None:
        from csp_mp._hub import current_hub
        from csp_mp._mp import tasks

        cmds = csp_mp.Chan(16)
        if place_on(1, cmds, 10) is None:
            print("no goroutine reached P1: multi-P figures skipped")
            return
        arena = current_hub().broker.arena
        ch = csp_mp.Chan(1000)
        cmds.send((_noop, (ch,)))  # the handle leaves P0: the channel is promoted
        while not getattr(ch._st, "shared", False):
            csp_mp.runtime.gosched()

        def send_recv() -> None:
            ch.send(1)
            ch.recv()

        print(f"shared channel send + recv, one P    {best(send_recv, 20_000) * 1e6:6.2f} µs")
        frame = tasks.pack(1, 0, _tiny_task, (5, ch), {}, arena)
        pack = best(lambda: tasks.pack(1, 0, _tiny_task, (5, ch), {}, arena), 5000)
        print(f"go(fn, i, out) frame: pack           {pack * 1e6:6.2f} µs")
        print(f"go(fn, i, out) frame: unpack         "
              f"{best(lambda: tasks.unpack(frame, arena), 5000) * 1e6:6.2f} µs")

        arr = np.arange(pick(False, 64 << 20, 64 << 20, 1 << 20) // 8, dtype=np.int64)
        big, ready, done = csp_mp.Chan(), csp_mp.Chan(1), csp_mp.Chan(1)
        cmds.send((_array_sink, (big, ready, done)))
        ready.recv()
        rates = []
        for _ in range(6):
            t0 = time.monotonic()
            big.send(arr)
            t1, _last = done.recv()
            rates.append(arr.nbytes / (t1 - t0) / 1e9)
        shown = ", ".join(f"{r:.2f}" for r in rates)
        print(f"{arr.nbytes >> 20} MiB array to P1, transfers 1-6   {shown} GB/s")
        big.send(None)
        cmds.close()

    csp_mp.run(main, procs=2)


if __name__ == "__main__":
    words_and_ring()
    multi_p()
