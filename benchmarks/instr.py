"""Machine-independent costs of the hot paths: instructions and bytecodes per operation.

Wall-clock figures on a shared 2-vCPU machine move by ±25 % between runs; these do not. Use them
to tell whether a change to a hot path made it cheaper, then confirm with the timed families.

- ``pingpong``, ``spawn``: CPU instructions per unbuffered hand-off and per ``go_local``
  spawn+finish on one P, counted by ``valgrind --tool=callgrind`` (runs of two sizes; the
  difference divided by the extra operations, so start-up cancels out).
- ``tiny-p0``: Python bytecodes P0 executes per task of the windowed tiny-task fan-out on two Ps
  (``go(fn, i, out)`` plus the ``recv`` of its result), counted by an opcode trace function, with
  the functions that execute the most.

    .venv/bin/python -m benchmarks.instr [pingpong spawn tiny-p0]

``pingpong`` and ``spawn`` need ``valgrind`` on the PATH.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
from typing import Any

SIZES = {"pingpong": (2_000, 12_000), "spawn": (2_000, 12_000)}
OPS_PER_UNIT = {"pingpong": 2, "spawn": 1}  # hand-offs per round trip; goroutines per spawn


def _child(kind: str, n: int) -> None:
    from benchmarks.bench_local import csp_pingpong, csp_spawn

    if kind == "pingpong":
        csp_pingpong(n)
    else:
        csp_spawn(n, 1)


def _instructions(kind: str, n: int) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           "-m", "benchmarks.instr", "--child", kind, str(n)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=900)
    counts = [int(m) for m in re.findall(r"Collected : (\d+)", out.stderr)]
    if out.returncode != 0 or not counts:
        raise RuntimeError(f"callgrind failed: {out.stderr.strip()[-500:]}")
    return max(counts)  # the measured process (forked helpers count far less)


def per_op(kind: str) -> float:
    """Instructions per operation of ``kind`` (``pingpong`` or ``spawn``)."""
    small, large = SIZES[kind]
    delta = _instructions(kind, large) - _instructions(kind, small)
    return delta / ((large - small) * OPS_PER_UNIT[kind])


def tiny_p0(n: int = 20_000, window: int = 4096) -> tuple[float, list[tuple[str, float]]]:
    """Bytecodes P0 runs per windowed tiny task, and the ten functions running the most."""
    import csp_mp
    from benchmarks.bench_parallel import _tiny_task

    counts: collections.Counter = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                code = frame.f_code
                counts[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
            return local

        return local

    def main() -> None:
        out = csp_mp.Chan(window)
        for i in range(window):  # warm-up: the callable's bytes cached, the channel shared
            csp_mp.go(_tiny_task, i, out)
        for _ in range(window):
            out.recv()
        sys.settrace(tracer)
        for i in range(window):
            csp_mp.go(_tiny_task, i, out)
        nxt = window
        for _ in range(n):
            out.recv()
            if nxt < n:
                csp_mp.go(_tiny_task, nxt, out)
                nxt += 1
        sys.settrace(None)

    csp_mp.run(main, procs=2)
    top = [(name, c / n) for name, c in counts.most_common(10)]
    return sum(counts.values()) / n, top


def main(argv: list[str] | None = None) -> None:
    """Command line: print the costs asked for (all three by default)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kinds", nargs="*", metavar="KIND",
                    help="pingpong, spawn or tiny-p0 (default: all three)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    for kind in args.kinds or ["pingpong", "spawn", "tiny-p0"]:
        if kind not in ("pingpong", "spawn", "tiny-p0"):
            ap.error(f"unknown kind {kind!r}")
        if kind == "tiny-p0":
            total, top = tiny_p0()
            print(f"tiny-p0    {total:8.0f} bytecodes per task on P0")
            for name, c in top:
                print(f"             {c:6.1f}  {name}")
        elif shutil.which("valgrind") is None:
            print(f"{kind:10s} skipped: valgrind is not installed")
        else:
            unit = "hand-off" if kind == "pingpong" else "goroutine"
            print(f"{kind:10s} {per_op(kind):8.0f} instructions per {unit}")


if __name__ == "__main__":
    main()
