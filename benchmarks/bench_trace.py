"""Execution tracing: what tracing costs when off, and per recorded event when on.

Two workloads: 100 k-style tiny tasks (``go()`` of an empty function on 2 Ps, waited for with a
WaitGroup) and unbuffered ping-pong on one P. Each runs in three modes, interleaved so that
machine noise hits them alike: never traced; after a ``trace.start``/``trace.stop`` in the same
run (tracing off again: the hub must be exactly as fast as one never traced, bar <= 2 %); and
traced, where the extra time divided by the events the trace holds is the cost per event (the
writing at ``stop`` is reported separately). The best run of each mode is compared: on a shared
machine the medians of identical code differ by more than the 2 % bar. The bytecode counts of
the hot paths with tracing off are checked by
``python -m benchmarks.instr tiny-p0 shared-send shared-recv``.

``python -m benchmarks.bench_trace`` prints this family's rows.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time

import csp_mp
from csp_mp import Chan, WaitGroup, go, go_local, runtime, trace

from ._common import at_most, median, pick, row

FAMILY = "trace"
BAR_OFF = 1.02  # tracing off: at most 2 % slower than never traced
MODES = ("never", "after", "on")


def _noop(wg: WaitGroup) -> None:
    wg.done()


def _tiny(n: int, mode: str, path: str) -> tuple[float, float]:
    """Seconds for ``n`` tiny tasks on 2 Ps, and seconds spent writing the trace."""

    def main() -> tuple[float, float]:
        if mode == "after":
            trace.start(path)
            trace.stop()
        runtime.stack()  # every mode: P1 is up and has answered P0 (as after a trace's stop)
        wg = WaitGroup()
        wg.add(n)
        if mode == "on":
            trace.start(path)
        t0 = time.perf_counter()
        for _ in range(n):
            go(_noop, wg)
        wg.wait()
        t = time.perf_counter() - t0
        w0 = time.perf_counter()
        if mode == "on":
            trace.stop()
        return t, time.perf_counter() - w0

    return csp_mp.run(main, procs=2)


def _pingpong(n: int, mode: str, path: str) -> tuple[float, float]:
    """Seconds for ``n`` round trips on one P, and seconds spent writing the trace."""

    def main() -> tuple[float, float]:
        if mode == "after":
            trace.start(path)
            trace.stop()
        ping, pong = Chan(), Chan()

        def echo() -> None:
            for _ in range(n):
                pong.send(ping.recv())

        go_local(echo)
        if mode == "on":
            trace.start(path)
        t0 = time.perf_counter()
        for i in range(n):
            ping.send(i)
            pong.recv()
        t = time.perf_counter() - t0
        w0 = time.perf_counter()
        if mode == "on":
            trace.stop()
        return t, time.perf_counter() - w0

    return csp_mp.run(main, procs=1)


def _events(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for e in json.load(f)["traceEvents"] if e["ph"] != "M")


def _measure(fn, n: int, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Best time of each mode over ``repeats`` runs, modes alternating in order; the events
    and the writing time of the traced runs."""
    times: dict[str, list[float]] = {m: [] for m in MODES}
    writes: list[float] = []
    events = 0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.json")
        for r in range(repeats):
            for mode in (MODES if r % 2 else MODES[::-1]):
                gc.collect()
                t, w = fn(n, mode, path)
                times[mode].append(t)
                if mode == "on":
                    writes.append(w)
                    events = _events(path)
    out = {m: min(times[m]) for m in MODES}
    out["write"] = median(writes) or 0.0
    out["events"] = float(events)
    return out


def run(quick: bool) -> list[dict]:
    """Measure both workloads; return the result rows."""
    repeats = pick(quick, 15, 7, 1)
    rows = []
    for name, fn, n, what in (
            ("tiny", _tiny, pick(quick, 50_000, 20_000, 2_000), "go() of a tiny task, 2 Ps"),
            ("pingpong", _pingpong, pick(quick, 50_000, 20_000, 2_000),
             "ping-pong round trip, 1 P")):
        m = _measure(fn, n, repeats)
        never, after, on = m["never"], m["after"], m["on"]
        per = 1e6 / n
        over = (after / never - 1) * 100
        rows.append(row(FAMILY, f"trace_off_{name}", f"{what}, tracing off", "µs",
                        after * per, baseline="never traced", baseline_value=never * per,
                        higher_is_better=False, bar="<= 2 % slower",
                        met=at_most(after / never, BAR_OFF),
                        note=f"best of {repeats}; off after a start/stop: {over:+.1f} %",
                        repeats=repeats))
        events = m["events"] or 1.0
        rows.append(row(FAMILY, f"trace_on_event_{name}", f"{what}, tracing on: per event",
                        "ns", (on - never) / events * 1e9, higher_is_better=False,
                        note=f"{events:.0f} events; writing them at stop: "
                             f"{(m['write'] or 0) / events * 1e9:.0f} ns each; "
                             f"{on / never:.2f}x the untraced time", repeats=repeats))
    return rows


def main() -> None:
    """Command line: print the rows."""
    for r in run(quick=False):
        base = f" vs {r['baseline_value']:.3f} {r['baseline']}" if r["baseline_value"] else ""
        print(f"{r['figure']}: {r['value']:.3f} {r['unit']}{base} ({r['note']}; "
              f"met: {r['met']})")


if __name__ == "__main__":
    main()
