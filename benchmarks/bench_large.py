"""Values of any size: a NumPy array too large for the arena, P0 -> P1 -> P0, on the default arena.

main on P0 sends the array on an unbuffered channel to a goroutine on P1, which sends it back;
the figure is the round trip's wall time. The array's buffer travels in a memfd segment of its
own (``_shm/segment.py``). Baseline: the same round trip through a ``multiprocessing.Pipe`` to a
child process (pickled in band). A second row gives the shared memory in use at the peak of
the round trip (``/proc/meminfo``'s Shmem above what it was before), in arrays: bar <= 2.2x.

``python -m benchmarks.bench_large [--quick]`` (1 GiB; --quick: 256 MiB).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time

from ._common import (
    at_most,
    csp_paths,
    family_main,
    json_child,
    median,
    on_path,
    pick,
    row,
)

FAMILY = "large"
REPEATS = 3
BAR_SHMEM = 2.2


def _shmem() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    return 0


def _csp_round_trips(nbytes: int, repeats: int) -> dict[str, list[float]]:
    import numpy as np

    import csp_mp
    from csp_mp import Chan, atomic, runtime

    def echo(inp: Chan, out: Chan) -> None:
        for _ in range(repeats):
            a = inp.recv()
            out.send(_shmem())
            out.send(a)

    def probe(won: atomic.Int64, inp: Chan, out: Chan, reply: Chan) -> None:
        if runtime.current_p() == 1 and won.compare_and_swap(0, 1):
            reply.send(True)
            echo(inp, out)
        else:
            reply.send(False)

    def main() -> dict[str, list[float]]:
        inp, out, reply = Chan(), Chan(), Chan(8)
        won = atomic.Int64(0)
        while not won.load():  # until a goroutine runs on P1
            for _ in range(8):
                csp_mp.go(probe, won, inp, out, reply)
            [reply.recv() for _ in range(8)]
        a = np.arange(nbytes // 8, dtype=np.int64)
        times, peaks = [], []
        for _ in range(repeats):
            base = _shmem()
            t0 = time.perf_counter()
            inp.send(a)
            peak = out.recv()
            b = out.recv()
            times.append(time.perf_counter() - t0)
            peaks.append((max(peak, _shmem()) - base) / nbytes)
            assert b.shape == a.shape and b[-1] == a[-1]
            del b
        return {"seconds": times, "shmem": peaks}

    return csp_mp.run(main, procs=2)


def _pipe_echo(conn: object, repeats: int) -> None:
    for _ in range(repeats):
        conn.send(conn.recv())  # type: ignore[attr-defined]


def _pipe_round_trips(nbytes: int, repeats: int) -> list[float]:
    import numpy as np

    a = np.arange(nbytes // 8, dtype=np.int64)
    ours, theirs = mp.get_context("fork").Pipe()
    child = mp.get_context("fork").Process(target=_pipe_echo, args=(theirs, repeats))
    child.start()
    times = []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ours.send(a)
            b = ours.recv()
            times.append(time.perf_counter() - t0)
            del b
    finally:
        child.join(60)
    return times


def _child(nbytes: int) -> None:
    print(json.dumps(_csp_round_trips(nbytes, REPEATS)))


def run(quick: bool) -> list[dict]:
    """The rows: round-trip time against a Pipe, and the peak of shared memory in use."""
    nbytes = pick(quick, 1 << 30, 256 << 20, 16 << 20)
    pipe = median(_pipe_round_trips(nbytes, REPEATS))
    rows = []
    for path in csp_paths():
        cmd = [sys.executable, "-m", "benchmarks.bench_large", "--child", str(nbytes)]
        res = json_child(cmd, 600, path)
        why = res.get("error", "")
        got = None if why else res
        size = f"{nbytes >> 20} MiB"
        secs = median(got["seconds"]) if got else None
        rows.append(row(FAMILY, "large_round_trip",
                        on_path(f"{size} NumPy array P0 -> P1 -> P0, default arena", path), "s",
                        secs, baseline="multiprocessing.Pipe round trip", baseline_value=pipe,
                        higher_is_better=False, bar="works", met=got is not None,
                        note=why or f"median of {REPEATS}", repeats=REPEATS))
        rows[-1]["path"] = path
        peak = max(got["shmem"]) if got else None
        rows.append(row(FAMILY, "large_shmem",
                        on_path(f"shared memory in use during that round trip, in {size} "
                                "arrays", path), "x", peak, higher_is_better=False,
                        bar=f"<= {BAR_SHMEM}x", met=at_most(peak, BAR_SHMEM),
                        note=why or f"largest of {REPEATS}", repeats=REPEATS))
        rows[-1]["path"] = path
    return rows


def main() -> None:
    """Command line: the child, or print the rows."""
    family_main(run, _child)


if __name__ == "__main__":
    main()
