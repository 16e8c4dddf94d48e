"""``python -m csp_mp bench``: the command runs end to end and reports every mode of both
workloads, each with correct results. Speed is not asserted, only shape and correctness. The
benchmark lives in the source tree's ``benchmarks/``; without it the command says how to get it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import csp_mp
from csp_mp.__main__ import bench_module, build_parser

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import concurrency_vs_parallelism as _bench  # noqa: E402

MODES = {"sequential", "threads", "asyncio", "csp_mp_procs1", "csp_mp_procsN", "mp_pool"}


def _bench_cmd(*args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "csp_mp", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_json_to_stdout_has_every_mode_of_both_workloads() -> None:
    proc = _bench_cmd("--quick", "--tiny", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["workloads"]) == {"cpu", "io"}
    assert report["procs"] >= 1
    for key, wl in report["workloads"].items():
        assert set(wl["modes"]) == MODES, key
        for mode, r in wl["modes"].items():
            assert r["ok"], (key, mode, r["error"])
            assert len(r["walls"]) == report["repeat"] == 1
            assert r["wall_s"] > 0 and r["speedup"] > 0 and r["cpu_s"] >= 0
            assert 1 <= r["ps_used"] <= r["workers"]
        assert wl["modes"]["sequential"]["speedup"] == pytest.approx(1.0)
        assert wl["modes"]["csp_mp_procsN"]["workers"] == report["procs"]
    assert "concurrency helps I/O" in report["summary"]


def test_table_and_json_file(tmp_path) -> None:
    path = tmp_path / "bench.json"
    proc = _bench_cmd("--tiny", "--procs", "2", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    rows = [line for line in out.splitlines() if line.rstrip().endswith(" ok")]
    for label in ("sequential", "threads (ThreadPoolExecutor)", "asyncio",
                  "csp_mp procs=1 (concurrency)", "csp_mp procs=2 (parallelism)",
                  "multiprocessing.Pool(2)"):
        assert sum(row.startswith(label + " ") for row in rows) == 2, label  # one per workload
    assert "What it shows:" in out
    assert "\r" not in out  # no redrawn progress line when stdout is not a terminal
    steps = [line for line in out.splitlines() if line.startswith("[")]
    # one line per step, as a CI log shows it: [1/N] ... [N/N]
    assert steps and steps[0].startswith("[1/"), out
    assert steps[-1].startswith(f"[{len(steps)}/{len(steps)}]"), steps
    report = json.loads(path.read_text())
    assert report["procs"] == 2
    assert {m for wl in report["workloads"].values() for m in wl["modes"]} == MODES


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path) -> None:
    if _bench.have_matplotlib():
        pytest.skip("matplotlib is installed")
    proc = _bench_cmd("--tiny", "--plot", str(tmp_path / "b.png"))
    assert proc.returncode == 2
    assert "csp_mp[plot]" in proc.stderr
    assert not (tmp_path / "b.png").exists()


def test_plot_writes_a_png(tmp_path) -> None:
    if not _bench.have_matplotlib():
        pytest.skip("matplotlib is not installed")
    path = tmp_path / "b.png"
    proc = _bench_cmd("--tiny", "--plot", str(path))
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parser_defaults_and_hidden_flag() -> None:
    p = build_parser()
    a = p.parse_args(["bench"])
    assert (a.quick, a.tiny, a.procs, a.json, a.plot) == (False, False, None, None, None)
    assert p.parse_args(["bench", "--json"]).json == "-"
    assert "--tiny" not in p.format_help() + p._subparsers._group_actions[0].choices[
        "bench"].format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["bench", "--procs", "0"])


def test_sizes_keep_the_promised_budgets() -> None:
    quick, default = _bench.config(quick=True, procs=2), _bench.config(procs=2)
    # sequential work per mode, six modes, in seconds of pure task time
    assert quick.repeat * (quick.cpu_tasks * quick.cpu_task_s
                           + quick.io_tasks * quick.io_task_s) * 6 < 15
    assert default.repeat * (default.cpu_tasks * default.cpu_task_s
                             + default.io_tasks * default.io_task_s) * 6 < 60


def _summary(par_used: int, par_speedup: float, conc_speedup: float = 1.0,
             par_cores: float = 2.0) -> str:
    modes = {k: {"speedup": conc_speedup, "ps_used": 1} for k in MODES}
    modes["csp_mp_procsN"] = {"speedup": par_speedup, "ps_used": par_used, "cores": par_cores}
    return _bench.summary({"procs": 2, "workloads": {"cpu": {"modes": modes},
                                                      "io": {"modes": modes}}})


def test_summary_follows_the_numbers() -> None:
    one = _summary(par_used=1, par_speedup=1.0)
    assert "one process" in one and "no parallelism measured" in one
    fast = _summary(par_used=2, par_speedup=1.9)
    assert "only parallelism helps CPU-bound work (csp_mp 1.90x on 2 Ps" in fast
    slow = _summary(par_used=2, par_speedup=0.8)
    assert "reached only 0.80x" in slow and "only parallelism helps" not in slow
    assert "starting processes" in slow
    starved = _summary(par_used=2, par_speedup=0.8, par_cores=0.9)
    assert "got only 0.90 CPU cores between them" in starved


def test_bench_trace_writes_a_trace_of_the_cpu_job(tmp_path: Path) -> None:
    proc = _bench_cmd("--tiny", "--procs", "2", "--trace", str(tmp_path / "tr"))
    assert proc.returncode == 0, proc.stderr
    assert "trace of the CPU job" in proc.stdout
    events = json.loads((tmp_path / "tr" / "cpu-trace.json").read_text())["traceEvents"]
    names = {e["name"] for e in events if e["ph"] == "X"}
    assert any(n.endswith("goroutine") for n in names), names
    assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == {"P0", "P1"}
    assert "window.cspTrace" in (tmp_path / "tr" / "cpu-trace.html").read_text()


def test_the_command_finds_the_benchmark_in_the_source_tree() -> None:
    mod = bench_module()
    assert mod is _bench
    assert Path(mod.__file__).resolve() == ROOT / "benchmarks" / "concurrency_vs_parallelism.py"


def test_without_the_source_tree_the_command_says_how_to_get_it(tmp_path: Path) -> None:
    """An installed package with no ``benchmarks/`` beside it (as a wheel installs it): the
    command exits 2 with a message naming where the benchmark is, and runs nothing."""
    site = tmp_path / "site"
    shutil.copytree(Path(csp_mp.__file__).parent, site / "csp_mp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "csp_mp", "bench", "--tiny"], cwd=site,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2, proc.stderr
    assert "benchmarks/ directory of the csp_mp source tree" in proc.stderr
    assert "make run" in proc.stderr
    assert proc.stdout == ""
