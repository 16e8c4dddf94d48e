"""What every benchmark family shares: the result row, sizes, medians and small helpers.

A row is one figure of csp_mp against one baseline measured in the same run. ``ratio`` always
reads "how many times better csp_mp is" (time: baseline / csp_mp; rate: csp_mp / baseline), so a
ratio above 1 favours csp_mp whatever the unit. ``value`` or ``baseline_value`` is None when the
figure could not be measured ("n/a"), and ``note`` then says why.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROW_KEYS = ("family", "name", "figure", "unit", "value", "baseline", "baseline_value", "ratio",
            "higher_is_better", "bar", "met", "note", "repeats")

TINY_ENV = "CSP_MP_BENCH_TINY"

#: The runtime's switch between its compiled core ("1") and its pure-Python path ("0").
NATIVE_ENV = "CSP_MP_NATIVE"
#: Which of those paths the families measure: "both" (the default), "1" or "0".
PATHS_ENV = "CSP_MP_BENCH_NATIVE"
PATH_LABELS = {"1": "compiled core", "0": "Python path"}


def tiny() -> bool:
    """True when ``CSP_MP_BENCH_TINY`` asks for the smallest sizes (the smoke test does)."""
    return os.environ.get(TINY_ENV, "").strip() not in ("", "0")


def pick(quick: bool, full: Any, fast: Any, smallest: Any) -> Any:
    """The size for this pass: ``smallest`` when tiny, else ``fast`` when quick, else ``full``."""
    if tiny():
        return smallest
    return fast if quick else full


def median(xs: list[float]) -> float | None:
    """The median of the measured samples, None when there is none."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(value: float | None, base: float | None, higher_is_better: bool) -> float | None:
    """How many times better ``value`` is than ``base`` (None when either is missing)."""
    if value is None or base is None or value <= 0 or base <= 0:
        return None
    return value / base if higher_is_better else base / value


def row(family: str, name: str, figure: str, unit: str, value: float | None, *,
        baseline: str = "", baseline_value: float | None = None, higher_is_better: bool,
        bar: str = "", met: bool | None = None, note: str = "", repeats: int = 0) -> dict:
    """One result row (see the module docstring for what each key means)."""
    return {
        "family": family, "name": name, "figure": figure, "unit": unit, "value": value,
        "baseline": baseline, "baseline_value": baseline_value,
        "ratio": ratio(value, baseline_value, higher_is_better),
        "higher_is_better": higher_is_better, "bar": bar, "met": met, "note": note,
        "repeats": repeats,
    }


def family_main(run: Any, child: Any) -> None:
    """Command line of a family that measures csp_mp in a child per runtime path: ``--child N``
    runs ``child(N)`` (it prints its JSON), else the rows of ``run`` are printed."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    for r in run(quick=args.quick):
        print(f"{r['figure']}: {r['value']} {r['unit']} vs {r['baseline_value']} "
              f"(ratio {r['ratio']}, bar {r['bar']}, met: {r['met']}; {r['note']})")


def all_met(*conds: bool | None) -> bool | None:
    """True when every condition holds; None when any could not be evaluated."""
    if any(c is None for c in conds):
        return None
    return all(conds)


def at_most(v: float | None, limit: float) -> bool | None:
    """``v <= limit``, None when ``v`` is missing."""
    return None if v is None else v <= limit


def at_least(v: float | None, limit: float) -> bool | None:
    """``v >= limit``, None when ``v`` is missing."""
    return None if v is None else v >= limit


def csp_paths() -> list[str]:
    """The runtime paths to measure csp_mp on, as ``CSP_MP_NATIVE`` values: compiled core first.

    ``CSP_MP_BENCH_NATIVE`` (``both``, ``1`` or ``0``; ``python -m benchmarks --native``) picks.
    """
    want = os.environ.get(PATHS_ENV, "").strip() or "both"
    if want == "both":
        return ["1", "0"]
    if want not in PATH_LABELS:
        raise ValueError(f"{PATHS_ENV} must be both, 1 or 0, not {want!r}")
    return [want]


def path_unavailable(path: str) -> str:
    """Why csp_mp cannot run on ``path`` here ("" when it can)."""
    if path == "1":
        from csp_mp._shm import native

        if not native.built():
            return "the compiled core is not built (pip install -e . with a C compiler)"
    return ""


def on_path(text: str, path: str) -> str:
    """A figure's label with the runtime path it was measured on."""
    return f"{text} ({PATH_LABELS[path]})"


def child_env(native: str | None = None) -> tuple[Path, dict[str, str]]:
    """The repository root and an environment in which a child can import ``benchmarks``;
    with ``native``, ``CSP_MP_NATIVE`` set to it (which runtime path the child's csp_mp runs)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(root) + (os.pathsep + old if old else "")
    if native is not None:
        env[NATIVE_ENV] = native
    return root, env


def run_child(cmd: list[str], env: dict[str, str], cwd: str | Path, timeout: float, *,
              term_first: bool = False) -> tuple[int | None, str, str]:
    """Run ``cmd`` to its end: its exit code (None when it ran past ``timeout``), stdout, stderr.

    The child leads a process group of its own inside the caller's session, so that it and the
    processes it starts keep the caller's autogroup and nice priority (a new session would start
    a new autogroup), and a timeout can kill all of them. ``term_first``: on timeout send SIGTERM
    and give the group 5 s to remove its shared-memory names before the SIGKILL.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env, process_group=0)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        pass
    if term_first:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=5)
            return None, out, err
        except subprocess.TimeoutExpired:
            pass
    os.killpg(proc.pid, signal.SIGKILL)  # the child and every process it started
    out, err = proc.communicate()
    return None, out, err


def json_child(cmd: list[str], timeout: float, path: str | None = None, *,
               env: dict[str, str] | None = None, cwd: str | Path | None = None,
               term_first: bool = False) -> dict:
    """The JSON object on the last line ``cmd`` prints (run by ``run_child``), or ``{"error"}``.

    ``path``: the ``CSP_MP_NATIVE`` value the child runs with ("1" compiled core, "0" Python
    path); a child that reports (``"native"``) that its runtime took the other one is an error.
    ``env`` and ``cwd`` default to ``child_env(path)``: the repository root, ``benchmarks``
    importable.
    """
    if path is not None and (why := path_unavailable(path)):
        return {"error": why}
    root, default_env = child_env(path)
    rc, out, err = run_child(cmd, default_env if env is None else env,
                             root if cwd is None else cwd, timeout, term_first=term_first)
    if rc is None:
        return {"error": f"timed out after {timeout:g} s"}
    lines = out.strip().splitlines()
    if rc != 0 or not lines:
        tail = (err or out).strip().splitlines()[-1:] or [f"exit {rc}"]
        return {"error": f"exit {rc}: {tail[0]}"}
    try:
        res = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable child output: {lines[-1][:80]}"}
    if (path is not None and isinstance(res, dict) and "error" not in res and "native" in res
            and res["native"] != (path == "1")):
        return {"error": f"asked CSP_MP_NATIVE={path}, the child ran native={res['native']}"}
    return res


def family_child(module: str, name: str, params: dict, timeout: float,
                 path: str | None = None) -> dict:
    """``CHILDREN[name](**params)`` of ``benchmarks.<module>`` run in a fresh interpreter by its
    ``--child NAME PARAMS_JSON`` (``answer_child``): its answer, or ``{"error"}``; ``path`` as
    for ``json_child``."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--child", name, json.dumps(params)]
    return json_child(cmd, timeout, path)


def answer_child(module: str, name: str, params_json: str) -> None:
    """The child's side of ``family_child``: run ``CHILDREN[name]`` of ``benchmarks.<module>``
    and print its answer, with the runtime path csp_mp took here (``"native"``), as one JSON
    line; an exception is answered as ``{"error"}`` (the parent's n/a row).

    The module is imported through the package, not run as ``__main__``, so that the goroutine
    functions it defines pickle by reference.
    """
    try:
        res = importlib.import_module(f"benchmarks.{module}").CHILDREN[name](
            **json.loads(params_json))
        from csp_mp._shm import native

        res["native"] = native.enabled()
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(res), flush=True)


def burn(n: int) -> int:
    """Pure-Python CPU work: ``n`` loop iterations (the CPU-bound task body)."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate_burn(target_s: float) -> int:
    """The ``burn`` size that takes about ``target_s`` seconds on this machine (median of 3)."""
    n = 20_000
    while True:
        t0 = time.perf_counter()
        burn(n)
        dt = time.perf_counter() - t0
        if dt > 0.005:
            break
        n *= 4
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        burn(n)
        samples.append(time.perf_counter() - t0)
    per_iter = statistics.median(samples) / n
    return max(1, int(target_s / per_iter))


def spin(seconds: float) -> None:
    """Keep the CPU busy for ``seconds`` without yielding (holds a P, as CPU work does)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
