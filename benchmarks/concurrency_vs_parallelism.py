"""The parallelism-vs-concurrency benchmark behind ``python -m csp_mp bench``.

It lives beside the micro-benchmark families, outside the package: ``csp_mp/__main__.py`` parses
the command line and imports this module from the source tree (a checkout, or an editable
install of one); an installed wheel has no ``benchmarks/`` and the command says how to get it.

Two workloads, each run the same way by six executors:

- CPU-bound: ``tasks`` pure-Python computations of about ``task_s`` seconds each.
- I/O-bound: ``tasks`` waits of ``task_s`` seconds each (a sleep: the task holds no CPU).

Executors: sequential, a ``ThreadPoolExecutor``, ``asyncio``, ``csp_mp.run(procs=1)`` (concurrency:
every goroutine on one P), ``csp_mp.run(procs=N)`` (parallelism: goroutines spread over N Ps) and a
``multiprocessing.Pool(N)``. Every task returns a checksum and the pid that ran it, so each run is
checked for correctness and reports how many processes really did the work.

The work functions are module-level so that they pickle by reference: a goroutine stolen by
another P, or a task sent to a pool worker, carries only their names (``__main__.py`` puts the
source tree on ``sys.path`` before any P starts, so every P imports this module too).

CPU accounting: the CPU time of this process, of its reaped children, and of every descendant
process sampled while a run is in progress (the Ps of csp_mp and the workers of a pool may be
grandchildren, started by a fork server), divided by the wall time.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import psutil

import csp_mp

# ---------------------------------------------------------------------------------- the work

_MASK = 0xFFFFFFFF


def spin(iters: int, seed: int = 0) -> int:
    """Pure-Python arithmetic: ``iters`` rounds of a 32-bit hash; deterministic for checks."""
    acc = seed
    for i in range(iters):
        acc = (acc * 31 + i) & _MASK
    return acc


def cpu_task(i: int, iters: int) -> tuple[int, int, int]:
    """One CPU-bound task: ``(i, checksum, pid)``."""
    return i, spin(iters, i), os.getpid()


def io_task(i: int, seconds: float) -> tuple[int, int, int]:
    """One I/O-bound task, blocking the OS thread: ``(i, i, pid)``."""
    time.sleep(seconds)
    return i, i, os.getpid()


def io_task_csp(i: int, seconds: float) -> tuple[int, int, int]:
    """One I/O-bound task that parks only its goroutine: ``(i, i, pid)``."""
    csp_mp.sleep(seconds)
    return i, i, os.getpid()


def _cpu_star(args: tuple[int, int]) -> tuple[int, int, int]:
    return cpu_task(*args)


def _io_star(args: tuple[int, float]) -> tuple[int, int, int]:
    return io_task(*args)


def goroutine(fn: Callable[..., tuple[int, int, int]], args: tuple, out: csp_mp.Chan) -> None:
    """Goroutine body: run ``fn(*args)`` and send its result on ``out``."""
    out.send(fn(*args))


def csp_main(fn: Callable[..., tuple[int, int, int]], arglist: list[tuple]) -> list[tuple]:
    """The main goroutine: fan every task out with ``go()``, fan the results back in."""
    out: csp_mp.Chan = csp_mp.Chan(len(arglist))
    for args in arglist:
        csp_mp.go(goroutine, fn, args, out)
    return [out.recv() for _ in arglist]


# ---------------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """What one workload runs: ``tasks`` tasks, each ``fn(i, param)``."""

    key: str
    title: str
    tasks: int
    task_s: float
    param: Any
    fn: Callable[..., tuple[int, int, int]]
    fn_csp: Callable[..., tuple[int, int, int]]
    star: Callable[[tuple], tuple[int, int, int]]
    expected: int
    thread_workers: int

    def arglist(self) -> list[tuple]:
        return [(i, self.param) for i in range(self.tasks)]


def calibrate(task_s: float) -> int:
    """Iterations of ``spin`` that take about ``task_s`` seconds on this machine."""
    iters = 20_000
    while True:
        t0 = time.perf_counter()
        spin(iters)
        dt = time.perf_counter() - t0
        if dt >= 0.01 or iters >= 1 << 26:
            break
        iters *= 4
    best = dt
    for _ in range(2):
        t0 = time.perf_counter()
        spin(iters)
        best = min(best, time.perf_counter() - t0)
    return max(1000, int(iters * task_s / best))


def cpu_workload(tasks: int, task_s: float, procs: int) -> Workload:
    """The CPU-bound workload, calibrated to ``task_s`` seconds per task."""
    iters = calibrate(task_s)
    # the expected checksum is taken from the sequential run and checked against every other run
    return Workload("cpu", f"CPU-bound: {tasks} tasks x ~{task_s * 1e3:.0f} ms of pure-Python "
                    "arithmetic", tasks, task_s, iters, cpu_task, cpu_task, _cpu_star,
                    expected=-1, thread_workers=procs)


def io_workload(tasks: int, task_s: float) -> Workload:
    """The I/O-bound workload: ``tasks`` sleeps of ``task_s`` seconds."""
    return Workload("io", f"I/O-bound: {tasks} tasks x {task_s * 1e3:.0f} ms of waiting "
                    "(sleep)", tasks, task_s, task_s, io_task, io_task_csp, _io_star,
                    expected=sum(range(tasks)), thread_workers=tasks)


# ---------------------------------------------------------------------------------- executors


def run_sequential(wl: Workload, procs: int) -> list[tuple]:
    return [wl.fn(*a) for a in wl.arglist()]


def run_threads(wl: Workload, procs: int) -> list[tuple]:
    with ThreadPoolExecutor(max_workers=wl.thread_workers) as ex:
        return list(ex.map(wl.star, wl.arglist()))


async def _async_main(wl: Workload) -> list[tuple]:
    if wl.key == "io":
        async def one(i: int, d: float) -> tuple[int, int, int]:
            await asyncio.sleep(d)
            return i, i, os.getpid()
    else:
        async def one(i: int, iters: int) -> tuple[int, int, int]:
            return cpu_task(i, iters)
    return list(await asyncio.gather(*(one(*a) for a in wl.arglist())))


def run_asyncio(wl: Workload, procs: int) -> list[tuple]:
    return asyncio.run(_async_main(wl))


def run_csp(wl: Workload, procs: int) -> list[tuple]:
    return csp_mp.run(csp_main, wl.fn_csp, wl.arglist(), procs=procs)


def write_trace(wl: Workload, procs: int, trace_dir: str) -> tuple[str, str]:
    """Run ``wl`` once on csp_mp with ``procs`` Ps under a trace; the trace and its viewer."""
    from csp_mp import _traceview, trace

    os.makedirs(trace_dir, exist_ok=True)
    path = os.path.join(trace_dir, f"{wl.key}-trace.json")

    def main(fn: Callable[..., tuple[int, int, int]], arglist: list[tuple]) -> list[tuple]:
        with trace.tracing(path):
            return csp_main(fn, arglist)

    csp_mp.run(main, wl.fn_csp, wl.arglist(), procs=procs)
    html = os.path.join(trace_dir, f"{wl.key}-trace.html")
    with open(html, "w", encoding="utf-8") as f:
        f.write(_traceview.render(_traceview.load(path), title=f"csp_mp bench: {wl.title}"))
    return path, html


def run_pool(wl: Workload, procs: int) -> list[tuple]:
    ctx = multiprocessing.get_context("forkserver")
    pool = ctx.Pool(procs)
    try:
        return pool.map(wl.star, wl.arglist(), chunksize=1)
    finally:
        pool.close()
        pool.join()


@dataclass
class Mode:
    """One way of running a workload."""

    key: str
    label: str
    run: Callable[[Workload, int], list[tuple]]
    workers: Callable[[int], int]  # processes it may use, given N


def modes(procs: int) -> list[Mode]:
    """The six executors, in table order."""
    return [
        Mode("sequential", "sequential", run_sequential, lambda n: 1),
        Mode("threads", "threads (ThreadPoolExecutor)", run_threads, lambda n: 1),
        Mode("asyncio", "asyncio", run_asyncio, lambda n: 1),
        Mode("csp_mp_procs1", "csp_mp procs=1 (concurrency)", lambda wl, n: run_csp(wl, 1),
             lambda n: 1),
        Mode("csp_mp_procsN", f"csp_mp procs={procs} (parallelism)", run_csp, lambda n: n),
        Mode("mp_pool", f"multiprocessing.Pool({procs})", run_pool, lambda n: n),
    ]


# ---------------------------------------------------------------------------------- CPU time


class CpuMeter:
    """CPU seconds used by this process and every descendant between ``start`` and ``stop``."""

    def __init__(self, interval: float = 0.05) -> None:
        self._me = psutil.Process()
        self._interval = interval
        self._seen: dict[int, tuple[float, int]] = {}  # pid -> (cpu seconds, parent pid)
        self._base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = (0.0, 0.0)

    def _own(self) -> tuple[float, float]:
        t = self._me.cpu_times()  # children times: clock ticks; our own: the precise clock
        return time.process_time(), t.children_user + t.children_system

    def _sample(self) -> None:
        try:
            kids = self._me.children(recursive=True)
        except psutil.Error:
            return
        for p in kids:
            try:
                t = p.cpu_times()
                self._seen[p.pid] = (t.user + t.system, p.ppid())
            except psutil.Error:
                continue

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._base = {pid: cpu for pid, (cpu, _pp) in self._seen.items()}
        self._t0 = self._own()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="csp_mp-bench-cpu", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop sampling; CPU seconds used since ``start``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        own, reaped = self._own()
        total = (own - self._t0[0]) + (reaped - self._t0[1])
        me = self._me.pid
        alive = {p.pid for p in self._me.children(recursive=True)}
        for pid, (cpu, ppid) in self._seen.items():
            if pid not in alive and ppid == me:
                continue  # a child of ours that exited: its time is in ``reaped`` already
            total += cpu - self._base.get(pid, 0.0)
        self._seen.clear()
        return max(total, 0.0)


# ---------------------------------------------------------------------------------- running


@dataclass
class Result:
    """One mode of one workload: median wall time over the repeats and what it cost."""

    mode: str
    label: str
    walls: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    workers: int = 1
    ps_used: int = 1
    ok: bool = True
    error: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    speedup: float = 0.0
    cores: float = 0.0
    util_per_p: float = 0.0


def measure_once(wl: Workload, mode: Mode, procs: int, res: Result) -> None:
    """Run ``mode`` on ``wl`` once, check the results and record the run in ``res``."""
    meter = CpuMeter()
    meter.start()
    t0 = time.perf_counter()
    try:
        out = mode.run(wl, procs)
    except Exception as exc:  # a failing executor is reported, the others still run
        meter.stop()
        res.ok, res.error = False, f"{type(exc).__name__}: {exc}"
        return
    wall = time.perf_counter() - t0
    cpu = meter.stop()
    total, pids, order = sum(r[1] for r in out), len({r[2] for r in out}), [r[0] for r in out]
    if wl.expected < 0:
        wl.expected = total
    if total != wl.expected or sorted(order) != list(range(wl.tasks)):
        res.ok, res.error = False, "wrong results"
    res.walls.append(wall)
    res.cpu.append(cpu)
    res.ps_used = max(res.ps_used, pids)


def measure(wl: Workload, procs: int, repeat: int,
            progress: Callable[[str], None]) -> list[Result]:
    """Every mode on ``wl``, ``repeat`` rounds; the rounds interleave the modes so that a
    change in the machine's load touches them all alike."""
    ms = modes(procs)
    results = [Result(m.key, m.label, workers=m.workers(procs)) for m in ms]
    for r in range(repeat):
        for m, res in zip(ms, results, strict=True):
            progress(f"{wl.key:>3}: {m.label}  run {r + 1}/{repeat}")
            if res.ok:
                measure_once(wl, m, procs, res)
    for res in results:
        if res.walls:
            res.wall_s = statistics.median(res.walls)
            res.cpu_s = statistics.median(res.cpu)
            res.cores = res.cpu_s / res.wall_s if res.wall_s else 0.0
            res.util_per_p = res.cores / res.workers
    base = results[0].wall_s
    for res in results:
        res.speedup = base / res.wall_s if res.ok and res.wall_s else 0.0
    return results


@dataclass
class Config:
    """Sizes of one benchmark run."""

    procs: int
    repeat: int
    cpu_tasks: int
    cpu_task_s: float
    io_tasks: int
    io_task_s: float


def config(quick: bool = False, tiny: bool = False, procs: int | None = None,
           repeat: int | None = None) -> Config:
    """Default sizes (under a minute on 2 cores), ``quick`` (under 15 s) or ``tiny`` (tests)."""
    n = procs if procs is not None else csp_mp.runtime.num_cpu()
    if tiny:
        c = Config(n, 1, 8, 0.002, 8, 0.002)
    elif quick:
        c = Config(n, 1, 32, 0.02, 64, 0.01)
    else:
        c = Config(n, 3, 64, 0.02, 128, 0.01)
    if repeat is not None:
        c.repeat = repeat
    return c


def run_bench(cfg: Config, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run both workloads under every mode; a JSON-ready report."""
    started = time.time()
    workloads = [
        cpu_workload(cfg.cpu_tasks, cfg.cpu_task_s, cfg.procs),
        io_workload(cfg.io_tasks, cfg.io_task_s),
    ]
    report: dict[str, Any] = {
        "csp_mp": csp_mp.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": csp_mp.runtime.num_cpu(),
        "procs": cfg.procs,
        "repeat": cfg.repeat,
        "workloads": {},
    }
    for wl in workloads:
        results = measure(wl, cfg.procs, cfg.repeat, progress)
        report["workloads"][wl.key] = {
            "title": wl.title,
            "tasks": wl.tasks,
            "task_s": wl.task_s,
            "thread_workers": wl.thread_workers,
            "modes": {r.mode: asdict(r) for r in results},
        }
    report["summary"] = summary(report)
    report["elapsed_s"] = round(time.time() - started, 3)
    return report


# ---------------------------------------------------------------------------------- output


def summary(report: dict[str, Any]) -> str:
    """One line saying what the numbers show, derived from them."""
    n = report["procs"]
    io = report["workloads"]["io"]["modes"]
    cpu = report["workloads"]["cpu"]["modes"]
    best_conc = max(io[k]["speedup"] for k in ("threads", "asyncio", "csp_mp_procs1"))
    parts = [f"concurrency helps I/O (up to {best_conc:.1f}x in one process)"]
    conc_cpu = max(cpu[k]["speedup"] for k in ("threads", "asyncio", "csp_mp_procs1"))
    par, pool = cpu["csp_mp_procsN"], cpu["mp_pool"]
    if n == 1:
        parts.append("parallelism needs more than one CPU: this machine has one")
    elif par["ps_used"] <= 1:
        parts.append(f"CPU-bound work is not helped by concurrency ({conc_cpu:.2f}x at best), "
                     f"and csp_mp procs={n} ran every task in one process here "
                     "(no parallelism measured)")
    elif par["speedup"] >= 1.2 * max(conc_cpu, 1.0):
        parts.append(f"only parallelism helps CPU-bound work (csp_mp {par['speedup']:.2f}x on "
                     f"{par['ps_used']} Ps, Pool {pool['speedup']:.2f}x, vs {conc_cpu:.2f}x at "
                     "best in one process)")
    else:
        cores = par.get("cores", 0.0)
        why = (f"its {par['ps_used']} processes got only {cores:.2f} CPU cores between them "
               "(is the machine busy with other work?)" if cores < 0.75 * n else
               "at this size, starting processes and moving tasks cost about what the "
               "parallel work saved")
        parts.append(f"CPU-bound work is not helped by concurrency ({conc_cpu:.2f}x at best); "
                     f"csp_mp spread it over {par['ps_used']} Ps but reached only "
                     f"{par['speedup']:.2f}x (Pool {pool['speedup']:.2f}x): {why}")
    return "; ".join(parts) + "."


def _fmt_row(cols: list[str], widths: list[int]) -> str:
    first = cols[0].ljust(widths[0])
    rest = [c.rjust(w) for c, w in zip(cols[1:], widths[1:], strict=True)]
    return "  ".join([first, *rest]).rstrip()


def format_table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [f"csp_mp {report['csp_mp']} bench: {report['cpus']} usable CPUs, "
             f"N = {report['procs']}, Python {report['python']}, "
             f"median of {report['repeat']} run(s)"]
    head = ["mode", "wall s", "speedup", "CPU cores", "util/P", "procs used", "check"]
    for wl in report["workloads"].values():
        rows = [head]
        for r in wl["modes"].values():
            if not r["walls"]:
                rows.append([r["label"], "-", "-", "-", "-", "-", "FAILED: " + r["error"]])
                continue
            rows.append([
                r["label"], f"{r['wall_s']:.3f}", f"{r['speedup']:.2f}x",
                f"{r['cores']:.2f}", f"{r['util_per_p'] * 100:.0f}%",
                f"{r['ps_used']}/{r['workers']}", "ok" if r["ok"] else r["error"]])
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines += ["", wl["title"], _fmt_row(rows[0], widths),
                  _fmt_row(["-" * w for w in widths], widths)]
        lines += [_fmt_row(row, widths) for row in rows[1:]]
    lines += ["", "speedup: sequential wall time / this mode's; CPU cores: CPU seconds of every "
              "process involved / wall seconds;",
              "util/P: CPU cores / processes the mode may use; procs used: distinct processes "
              "that ran a task / processes allowed.",
              "", "What it shows: " + report["summary"]]
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: str) -> None:
    """A bar chart of wall time per mode, one panel per workload (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = list(report["workloads"].values())
    fig, axes = plt.subplots(1, len(wls), figsize=(6 * len(wls), 4.5))
    for ax, wl in zip(axes, wls, strict=True):
        ms = [m for m in wl["modes"].values() if m["walls"]]
        labels = [m["label"].replace(" (", "\n(") for m in ms]
        walls = [m["wall_s"] for m in ms]
        bars = ax.barh(labels, walls, color=["#888888", "#4c72b0", "#55a868", "#c44e52",
                                             "#8172b2", "#ccb974"][: len(ms)])
        for bar, m in zip(bars, ms, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f" {m['speedup']:.2f}x", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("wall time (s), lower is better")
        ax.set_title(wl["title"], fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"csp_mp bench, N = {report['procs']} ({report['cpus']} usable CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def have_matplotlib() -> bool:
    """True when ``--plot`` can work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """Progress of a run: one line redrawn in place on a terminal, else one line per step (as a
    CI log shows it); silent when not ``enabled``."""

    def __init__(self, stream: TextIO, total: int, enabled: bool, redraw: bool = True) -> None:
        self._stream = stream
        self._total = total
        self._done = 0
        self._enabled = enabled
        self._redraw = redraw
        self._width = 0

    def __call__(self, text: str) -> None:
        if not self._enabled:
            return
        self._done += 1
        line = f"[{self._done}/{self._total}] {text}"
        if self._redraw:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def clear(self) -> None:
        if self._enabled and self._redraw and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()


def main(quick: bool = False, tiny: bool = False, procs: int | None = None,
         repeat: int | None = None, json_path: str | None = None,
         plot_path: str | None = None, out: TextIO | None = None,
         trace_dir: str | None = None) -> int:
    """Run the benchmark, print the table, write the JSON, plot and trace asked for; an exit
    status."""
    out = out or sys.stdout
    if plot_path and not have_matplotlib():
        print("csp_mp bench: --plot needs matplotlib; install it with "
              "`pip install 'csp_mp[plot]'` (or `pip install matplotlib`).", file=sys.stderr)
        return 2
    cfg = config(quick=quick, tiny=tiny, procs=procs, repeat=repeat)
    json_to_stdout = json_path == "-"
    progress = Progress(out, 2 * len(modes(cfg.procs)) * cfg.repeat, enabled=not json_to_stdout,
                        redraw=out.isatty())
    try:
        report = run_bench(cfg, progress)
    finally:
        progress.clear()
    if json_to_stdout:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        print(format_table(report), file=out)
        if json_path:
            with open(json_path, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            print(f"JSON written to {json_path}", file=out)
    if plot_path:
        write_plot(report, plot_path)
        print(f"chart written to {plot_path}", file=sys.stderr if json_to_stdout else out)
    if trace_dir:
        path, html = write_trace(cpu_workload(cfg.cpu_tasks, cfg.cpu_task_s, cfg.procs),
                                 cfg.procs, trace_dir)
        print(f"trace of the CPU job (csp_mp procs={cfg.procs}) written to {path}; "
              f"viewer: {html}", file=sys.stderr if json_to_stdout else out)
    failed = [m["mode"] for wl in report["workloads"].values() for m in wl["modes"].values()
              if not m["ok"]]
    return 1 if failed else 0
