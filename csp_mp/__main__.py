"""Command line: ``python -m csp_mp bench [options]``, ``python -m csp_mp trace FILE.json``
and ``python -m csp_mp info``.

Argument parsing only. The benchmark lives outside the package, in the source tree's
``benchmarks/concurrency_vs_parallelism.py`` (:func:`bench_module` finds it); the trace viewer
is ``csp_mp._traceview``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

BENCH_MODULE = "benchmarks.concurrency_vs_parallelism"
NO_BENCH = (
    "python -m csp_mp bench: the benchmark is not part of an installed csp_mp; it lives in the "
    "benchmarks/ directory of the csp_mp source tree. Run it from a clone of the repository: "
    "`make run`, or `python -m csp_mp bench` with the clone installed (`pip install -e .`) or "
    "as the current directory."
)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m csp_mp`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m csp_mp",
        description="csp_mp: Go's goroutines, channels and select for Python, across processes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser(
        "bench", help="compare concurrency with parallelism on a CPU-bound and an I/O-bound job",
        description="Run a CPU-bound and an I/O-bound workload sequentially, with threads, "
                    "asyncio, csp_mp procs=1 (concurrency), csp_mp procs=N (parallelism) and "
                    "multiprocessing.Pool(N); print wall time, speedup and CPU use of each.")
    bench.add_argument("--quick", action="store_true",
                       help="smaller workloads and one run per mode (under 15 s on 2 cores)")
    bench.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    bench.add_argument("--procs", type=_positive, default=None, metavar="N",
                       help="number of Ps / pool processes (default: the usable CPUs)")
    bench.add_argument("--repeat", type=_positive, default=None, metavar="R",
                       help="runs per mode, the median is reported (default 3, --quick 1)")
    bench.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                       help="write the results as JSON to FILE (to stdout, without the table, "
                            "when FILE is omitted or '-')")
    bench.add_argument("--plot", default=None, metavar="FILE.png",
                       help="draw a chart of the results (needs the 'plot' extra: matplotlib)")
    bench.add_argument("--trace", default=None, metavar="DIR",
                       help="also trace one run of the CPU job on csp_mp procs=N into "
                            "DIR/cpu-trace.json, with its viewer DIR/cpu-trace.html")
    trace = sub.add_parser(
        "trace", help="turn an execution trace (csp_mp.trace) into a self-contained HTML viewer",
        description="Write one HTML page, needing no network, with a zoomable timeline of the "
                    "trace (a lane per P and per M thread) and a per-P summary table.")
    trace.add_argument("file", metavar="FILE.json", help="a trace written by csp_mp.trace")
    trace.add_argument("-o", "--output", default=None, metavar="FILE.html",
                       help="where to write the page (default: FILE.html)")
    sub.add_parser("info", help="print the version, the core in use, the default procs, the "
                                "arena size and how Ps start")
    return parser


def info() -> str:
    """What ``python -m csp_mp info`` prints: version, core, default procs, arena, start."""
    from importlib.metadata import PackageNotFoundError, version

    from . import _run, runtime
    from ._mp import procs
    from ._shm import native

    try:
        ver = version("csp_mp")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    if runtime.native():
        core = "compiled (csp_mp._shm._core)"
    elif native.built():
        core = "pure Python (CSP_MP_NATIVE=0)"
    else:
        core = "pure Python (the compiled core is not built)"
    try:
        nprocs = f"{_run.resolve_procs(None)}"
    except (TypeError, ValueError) as exc:
        nprocs = f"invalid GOMAXPROCS ({exc})"
    start = "forkserver (CSP_MP_START=forkserver)" if os.environ.get(
        "CSP_MP_START", "") == "forkserver" else (
        "fork of P0 while it has one thread, else forkserver (csp_mp preloaded)")
    lines = [
        ("version", ver),
        ("core", core),
        ("default procs", f"{nprocs} (GOMAXPROCS, else the usable CPUs: {runtime.num_cpu()})"),
        ("arena", f"{procs.ARENA_BYTES >> 20} MiB (CSP_MP_ARENA_MB), a memfd: nothing named"),
        ("Ps start by", start),
        ("python", sys.version.split()[0]),
    ]
    return "\n".join(f"{k + ':':15}{v}" for k, v in lines)


def bench_module(root: Path | None = None) -> ModuleType | None:
    """The benchmark module of the source tree at ``root`` (default: the one this package was
    imported from, a checkout or an editable install), else of ``sys.path``; None when neither
    has one (an installed wheel). The tree goes first on ``sys.path``, where the Ps the
    benchmark starts find its work functions."""
    if root is None:
        root = Path(__file__).resolve().parent.parent
    if (root / "benchmarks" / "concurrency_vs_parallelism.py").is_file():
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return importlib.import_module(BENCH_MODULE)
    try:
        return importlib.import_module(BENCH_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks", BENCH_MODULE):
            raise  # the module is there but something it imports is not
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m csp_mp``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    if args.command == "trace":
        from . import _traceview

        return _traceview.main(args.file, args.output)
    if args.command != "bench":
        parser.print_help()
        return 2
    bench = bench_module()
    if bench is None:
        print(NO_BENCH, file=sys.stderr)
        return 2
    try:
        return bench.main(quick=args.quick, tiny=args.tiny, procs=args.procs,
                          repeat=args.repeat, json_path=args.json, plot_path=args.plot,
                          trace_dir=args.trace)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
