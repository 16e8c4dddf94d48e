"""What time-slice preemption costs: CPU-bound throughput with it on against off, in one run.

Two goroutines on one P each run the same pure-Python loop. With preemption on they are
switched every ~10 ms (sysmon trips, the handler checks the safe point and yields); with it off
they run one after the other. Three modes, interleaved over several rounds:

- ``on``: sysmon preempts and watches for blocking calls (the default);
- ``off``: ``CSP_MP_PREEMPT=0``: sysmon only watches for blocking calls;
- ``none``: no sysmon thread at all (what the runtime cost before sysmon existed).

And what it buys: the delay from a due timer to its goroutine running beside a CPU-bound
goroutine on the same P (p50, p99 and max over several runs; bar p99 <= 15 ms), against
sysmon alone marking slices. ``--trace`` prints where one run's slowest wakes waited: each
preemption request, refusal and switch (``csp_mp._hub.preempt.start_recording``).

The cost bar: ``on`` at most 2 % slower than ``off`` (docs/design.md's table keeps only the latency
bar). Writes
``benchmarks/results/preempt.json``; ``python -m benchmarks.bench_preempt [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import csp_mp
from csp_mp._hub import preempt, sysmon

from ._common import at_least, at_most, burn, calibrate_burn, median, pick, row

FAMILY = "preempt"
BAR_RATIO = 0.98  # on / off throughput
RESULTS = Path(__file__).resolve().parent / "results" / "preempt.json"
GOROUTINES = 2


def _one(mode: str, n: int) -> tuple[float, float, int]:
    """(iterations per wall second, per CPU second of the process, preemptions) for one run of
    the workload in ``mode``."""
    s = sysmon.settings
    saved = (s.preempt, s.detect_blocking)
    s.preempt = mode == "on"
    s.detect_blocking = mode != "none"
    stats: dict[str, int] = {}

    def main() -> tuple[float, float]:
        from csp_mp._hub import current_hub

        wg = csp_mp.WaitGroup()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(GOROUTINES):
            wg.go(burn, n)
        wg.wait()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        sm = current_hub().sysmon
        if sm is not None:
            stats.update(sm.stats())
        return dt, dc

    try:
        dt, dc = csp_mp.run(main, procs=1)
    finally:
        s.preempt, s.detect_blocking = saved
    return GOROUTINES * n / dt, GOROUTINES * n / dc, stats.get("preempted", 0)


def run(quick: bool) -> list[dict]:
    """Measure every mode over interleaved rounds; return the result rows.

    Ratios are paired: each round runs the three modes back to back and the reported ratio is
    the median of the per-round ratios, which cancels most of the drift of a shared machine.
    """
    per_goroutine_s = pick(quick, 0.25, 0.15, 0.05)
    rounds = pick(quick, 21, 9, 1)
    n = calibrate_burn(per_goroutine_s)
    modes = ("on", "off", "none")
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    preempts: list[float] = []
    for r in range(rounds):
        order = modes if r % 2 == 0 else tuple(reversed(modes))
        for m in order:
            w, c, p = _one(m, n)
            wall[m].append(w)
            cpu[m].append(c)
            if m == "on":
                preempts.append(p * w / (GOROUTINES * n))
    per_s = median(preempts) or 0.0

    def paired(d: dict[str, list[float]], a: str, b: str) -> float | None:
        return median([x / y for x, y in zip(d[a], d[b], strict=True) if y])

    def mk(name: str, figure: str, unit: str, d: dict[str, list[float]], base: str,
           base_label: str, note: str) -> dict:
        rt = paired(d, "on", base)
        r = row(FAMILY, name, figure, unit, median(d["on"]), baseline=base_label,
                baseline_value=median(d[base]), higher_is_better=True,
                bar=f"on/{base} >= {BAR_RATIO}", met=at_least(rt, BAR_RATIO), note=note,
                repeats=rounds)
        r["ratio"] = rt  # the paired median, not the ratio of the two medians
        return r

    work = f"{GOROUTINES} goroutines x {per_goroutine_s:g} s of pure-Python work on one P"
    rows = [
        mk("cpu_on_vs_off", "CPU-bound throughput (CPU time), preempt on", "iter/cpu-s", cpu,
           "off", "preemption off (CSP_MP_PREEMPT=0)",
           f"{work}; {per_s:.0f} preemptions/s; process CPU time, steady on a shared machine"),
        mk("wall_on_vs_off", "CPU-bound throughput (wall), preempt on", "iter/s", wall, "off",
           "preemption off (CSP_MP_PREEMPT=0)", "wall clock: noisy when others share the CPUs"),
        mk("cpu_on_vs_none", "CPU-bound throughput (CPU time), preempt on", "iter/cpu-s", cpu,
           "none", "no sysmon thread", "the whole cost of sysmon, blocking detection included"),
        mk("wall_on_vs_none", "CPU-bound throughput (wall), preempt on", "iter/s", wall, "none",
           "no sysmon thread", "the whole cost of sysmon, wall clock"),
    ]
    lat_rows, lat = _latency_rows(quick)
    rows.extend(lat_rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "wall": wall, "cpu": cpu,
                                   "preemptions_per_s": preempts, "latency_s": lat},
                                  indent=2) + "\n")
    return rows


LATENCY_SLEEP = 0.010  # the timer each sample waits on
LATENCY_BAR_MS = 15.0  # p99, about one time slice (10 ms) plus scheduling


def _latency(samples: int, cpu_clock: bool) -> list[float]:
    """Seconds from a due timer to its goroutine running, ``samples`` times, while a CPU-bound
    goroutine shares the P (``cpu_clock``: the kernel's CPU-time signal marks slices too)."""
    s = sysmon.settings
    saved = s.cpu_clock
    s.cpu_clock = cpu_clock

    def main() -> list[float]:
        done: list[bool] = []

        def hog() -> None:
            x = 0
            while not done:
                x += 1

        csp_mp.go_local(hog)
        out = []
        recording = preempt.recording()
        for _ in range(samples):
            due = time.monotonic() + LATENCY_SLEEP
            csp_mp.sleep(LATENCY_SLEEP)
            out.append(time.monotonic() - due)
            if recording:
                preempt.note("woke", out[-1])
        done.append(True)
        return out

    try:
        return csp_mp.run(main, procs=1)
    finally:
        s.cpu_clock = saved


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def _latency_rows(quick: bool) -> tuple[list[dict], dict[str, list[float]]]:
    samples = pick(quick, 500, 200, 20)
    runs = pick(quick, 5, 3, 1)
    lat: dict[str, list[float]] = {"cpu_clock": [], "sysmon_only": []}
    per_run_p99: list[float] = []
    loads = []
    for _ in range(runs):  # each run a fresh runtime: the promise holds in every run
        loads.append(_loadavg())
        xs = _latency(samples, True)
        per_run_p99.append(_pct(xs, 0.99) or 0.0)
        lat["cpu_clock"].extend(xs)
        lat["sysmon_only"].extend(_latency(samples, False))
    fig = "due timer to its goroutine running, beside a CPU-bound goroutine"
    base = "sysmon thread only (no CPU-time signal)"
    note = (f"{runs} runs x {samples} sleeps of {LATENCY_SLEEP * 1000:g} ms on one P beside a "
            "pure-Python loop; the delay from the timer's due time to the sleeper's next line; "
            f"p99 per run {', '.join(f'{v:.1f}' for v in per_run_p99)} ms; load average "
            f"{', '.join(f'{v:.1f}' for v in loads)} (the bar is for a quiet machine)")
    rows = []
    p99_bar = f"<= {LATENCY_BAR_MS:g} ms"
    for q, name, bar in ((0.50, "latency_p50", ""), (0.99, "latency_p99", p99_bar),
                         (1.0, "latency_max", "")):
        v = _pct(lat["cpu_clock"], q)
        label = "max" if q == 1.0 else f"p{int(q * 100)}"
        rows.append(row(FAMILY, name, f"{fig}, {label}", "ms", v, baseline=base,
                        baseline_value=_pct(lat["sysmon_only"], q), higher_is_better=False,
                        bar=bar or "(reference)",
                        met=at_most(v, LATENCY_BAR_MS) if bar else None,
                        note=note if q == 0.5 else "", repeats=runs * samples))
    return rows, lat


def _loadavg() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _table(rows: list[dict]) -> str:
    lines = [f"{'figure':<44} {'value':>10} {'baseline':<34} {'base value':>10} {'ratio':>6} "
             f"{'bar':<16} met"]
    for r in rows:
        v = f"{r['value']:.4g}" if r["value"] else "n/a"
        b = f"{r['baseline_value']:.4g}" if r["baseline_value"] else "n/a"
        q = f"{r['ratio']:.3f}" if r["ratio"] else "n/a"
        lines.append(f"{r['figure']:<44} {v:>10} {r['baseline']:<34} {b:>10} {q:>6} "
                     f"{r['bar']:<16} {r['met']}")
    return "\n".join(lines)


def _trace(samples: int = 200, shown: int = 3) -> None:
    """Print the preemption events before each of the ``shown`` slowest wakes of one run."""
    preempt.start_recording()
    try:
        _latency(samples, True)
    finally:
        rec = preempt.stop_recording()
    wakes = [i for i, e in enumerate(rec) if e[2] == "woke"]
    print(f"load {_loadavg():.1f}; {len(wakes)} wakes; events: time ms, process CPU ms, event")
    for k in sorted(range(len(wakes)), key=lambda k: rec[wakes[k]][3])[-shown:]:
        start = wakes[k - 1] + 1 if k else 0
        t0, c0 = rec[start][0], rec[start][1]
        print(f"--- wake {k}: {rec[wakes[k]][3] * 1000:.1f} ms late")
        for e in rec[start:wakes[k] + 1]:
            print(f"{(e[0] - t0) * 1000:8.2f} {(e[1] - c0) * 1000:8.2f}  "
                  + " ".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in e[2:]))


def main() -> None:
    """Command line: print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trace", action="store_true", help="trace one latency run instead")
    args = ap.parse_args()
    if args.trace:
        _trace()
        return
    rows = run(args.quick)
    print(_table(rows))
    for r in rows:
        if r["note"]:
            print(f"  {r['name']}: {r['note']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
