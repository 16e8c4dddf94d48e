"""The benchmark runner: every family, one table, one JSON file.

``python -m benchmarks [--quick] [--only FAMILY[,FAMILY]] [--json PATH]`` (or
``python benchmarks/run.py ...``) imports each family module, calls its ``run(quick)``, prints one
table (each figure, its baseline, the ratio, the docs/design.md bar and whether it is met) and
writes ``benchmarks/results/latest.json``. A family module without ``run`` is run as a
subprocess and its output kept verbatim; a family that fails becomes an error row, never a crash
of the runner.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks._common import (  # noqa: E402
    PATH_LABELS,
    PATHS_ENV,
    ROW_KEYS,
    child_env,
    csp_paths,
    path_unavailable,
    row,
    run_child,
    tiny,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAMILIES = {"local": "bench_local", "transport": "bench_transport", "parallel": "bench_parallel",
            "preempt": "bench_preempt", "testing": "bench_testing",
            "futures": "bench_futures", "trace": "bench_trace",
            "lifetime": "bench_lifetime", "large": "bench_large", "balance": "bench_balance"}
DEFAULT_JSON = HERE / "results" / "latest.json"


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.2f} G"
    if a >= 1e6:
        return f"{v / 1e6:.2f} M"
    if a >= 1e4:
        return f"{v / 1e3:.1f} k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _met(r: dict) -> str:
    met = r.get("met")
    if met is True:
        return "met"
    if met is False:
        return "NOT met"
    if not r.get("bar") or r.get("bar") == "(reference)":
        return ""
    return "n/a"


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown pipe table (readable on a terminal, pasteable into a README)."""
    head = ["family", "figure", "unit", "csp_mp", "baseline", "baseline value", "ratio", "bar",
            "bar met"]
    lines = [head]
    for r in rows:
        rt = r.get("ratio")
        lines.append([
            str(r.get("family", "")), str(r.get("figure", r.get("name", ""))),
            str(r.get("unit", "")), _num(r.get("value")), str(r.get("baseline", "")),
            _num(r.get("baseline_value")), "n/a" if rt is None else f"{rt:.2f}x",
            str(r.get("bar", "")), _met(r),
        ])
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = []
    for k, cells in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r['family']} / {r.get('figure', r.get('name'))} vs {r.get('baseline', '')}: "
             f"{r['note']}" for r in rows if r.get("note")]
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(dict.fromkeys(notes))
    return "\n".join(out)


def print_table(rows: list[dict]) -> None:
    """Print the rows as one table, ratios reading "times better than the baseline"."""
    print(format_table(rows), flush=True)


def _normalise(family: str, r: dict) -> dict:
    out = {k: r.get(k) for k in ROW_KEYS}
    out.update(r)
    out["family"] = out.get("family") or family
    for k in ("name", "figure", "unit", "baseline", "bar", "note"):
        out[k] = "" if out.get(k) is None else out[k]
    return out


def _run_subprocess(family: str, module: str, quick: bool) -> tuple[list[dict], str]:
    _, env = child_env()
    timeout = 120.0 if tiny() else (300.0 if quick else 900.0)
    base = [sys.executable, str(HERE / f"{module}.py")]
    cmd = base + (["--quick"] if quick else [])
    # on a timeout SIGTERM first: the script removes its shared-memory names on it (a SIGKILL
    # would leave them in /dev/shm)
    rc, out, err = run_child(cmd, env, ROOT, timeout, term_first=True)
    if quick and rc == 2 and "unrecognized arguments" in err:
        cmd = base  # the script has no --quick: run it as it is
        rc, out, err = run_child(cmd, env, ROOT, timeout, term_first=True)
    text = out + (f"\n[stderr]\n{err}" if rc != 0 else "")
    shown = " ".join(["python", str(Path(cmd[1]).relative_to(ROOT))] + cmd[2:])
    how = f"timed out after {timeout:g} s" if rc is None else f"exit {rc}"
    note = f"run as a subprocess ({shown}), {how}; its output is printed below"
    return [row(family, "raw", f"{module}.py (no run() API)", "", None, higher_is_better=True,
                note=note)], text


def run_family(family: str, quick: bool) -> tuple[list[dict], str]:
    """Run one family: its rows, plus raw text when it could only be run as a subprocess."""
    module = FAMILIES[family]
    if not (HERE / f"{module}.py").exists():
        return [row(family, "missing", f"{module}.py not present", "", None,
                    higher_is_better=True, note="family not written yet")], ""
    try:
        mod = importlib.import_module(f"benchmarks.{module}")
    except Exception as exc:  # a broken family must not hide the others
        traceback.print_exc()
        return [row(family, "error", f"import of {module} failed", "", None,
                    higher_is_better=True, note=f"{type(exc).__name__}: {exc}")], ""
    fn = getattr(mod, "run", None)
    if not callable(fn):
        return _run_subprocess(family, module, quick)
    try:
        return [_normalise(family, r) for r in fn(quick)], ""
    except Exception as exc:
        traceback.print_exc()
        return [row(family, "error", f"{module}.run failed", "", None, higher_is_better=True,
                    note=f"{type(exc).__name__}: {exc}")], ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=10).stdout.strip()
    except Exception:
        return ""


def _multi_process_active() -> bool:
    """Whether ``run(procs=N>1)`` has a multi-process layer to hand over to."""
    try:
        from csp_mp import _run
    except Exception:
        return False
    multi = getattr(_run, "_multi", None)
    if isinstance(multi, dict) and multi.get("run") is not None:
        return True
    try:
        mod = importlib.import_module("csp_mp._mp")
    except Exception:
        return False
    return callable(getattr(mod, "run_multi", None))


def _load(avg: Any) -> str:
    return "n/a" if not avg else "/".join(f"{x:.2f}" for x in avg)


def meta(args: argparse.Namespace, argv: list[str]) -> dict:
    """Where and how the numbers were taken."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv),
        "quick": args.quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_runtime_changes": bool(_git("status", "--porcelain", "--", "csp_mp")),
        "multi_process_layer": _multi_process_active(),
        "paths": [PATH_LABELS[p] for p in csp_paths()],
        "compiled_core_built": not path_unavailable("1"),
    }


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point; returns what it wrote to the JSON file."""
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="Run csp_mp's benchmarks against their peers.")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--only", action="append", default=[], metavar="FAMILY",
                    help=f"run only these families ({', '.join(FAMILIES)}); repeat or comma")
    ap.add_argument("--json", default=str(DEFAULT_JSON), metavar="PATH",
                    help="where to write the results (default: benchmarks/results/latest.json)")
    ap.add_argument("--native", choices=("both", "1", "0"), default=None,
                    help="the runtime path(s) csp_mp is measured on in the parallel and transport "
                         "families: compiled core (1), pure Python (0) or both (the default; "
                         f"also {PATHS_ENV})")
    args = ap.parse_args(argv)
    only = [f.strip() for item in args.only for f in item.split(",") if f.strip()]
    unknown = [f for f in only if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    families = only or list(FAMILIES)
    old_paths = os.environ.get(PATHS_ENV)
    if args.native is not None:
        os.environ[PATHS_ENV] = args.native  # read by the families, inherited by their children
    try:
        return _run(args, argv, families)
    finally:
        if old_paths is None:
            os.environ.pop(PATHS_ENV, None)
        else:
            os.environ[PATHS_ENV] = old_paths


def _run(args: argparse.Namespace, argv: list[str], families: list[str]) -> dict:
    info = meta(args, argv)
    rows: list[dict] = []
    raw: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    for fam in families:
        print(f"== {fam} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        got, text = run_family(fam, args.quick)
        elapsed[fam] = round(time.perf_counter() - t0, 2)
        rows.extend(got)
        if text:
            raw[fam] = text
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["elapsed_s"] = elapsed

    print(f"csp_mp benchmarks - {info['command']} - {info['date']} - Python {info['python']}, "
          f"{info['cpus']} CPUs, load {_load(info['loadavg_start'])}, commit {info['commit']}"
          f"{'+uncommitted' if info['uncommitted_runtime_changes'] else ''}, "
          f"multi-process layer {'on' if info['multi_process_layer'] else 'off'}, "
          f"csp_mp paths: {', '.join(info['paths'])}"
          f"{'' if info['compiled_core_built'] else ' (compiled core not built)'}")
    print("ratio = times better than the baseline (time: baseline/csp_mp; rate: csp_mp/baseline)")
    print()
    print_table(rows)
    for fam, text in raw.items():
        print(f"\n== {fam} (raw output)\n{text}")

    result = {"meta": info, "rows": rows, "raw": raw}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main()
