"""The benchmark families run end to end at their tiniest sizes and return well-formed rows.

Speed is never asserted here: only that every family's ``run(quick=True)`` completes and that its
rows carry the keys the runner and the JSON file rely on.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import ROW_KEYS, TINY_ENV  # noqa: E402


@pytest.fixture(autouse=True)
def _tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TINY_ENV, "1")


def _check_rows(rows: list[dict], family: str) -> None:
    assert rows, f"{family}: no rows"
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        assert not missing, f"{family} row {r.get('name')!r} lacks {missing}"
        assert r["family"] == family
        assert r["met"] in (True, False, None)
        for k in ("value", "baseline_value", "ratio"):
            assert r[k] is None or isinstance(r[k], (int, float))
        if r["value"] is None:
            assert r["note"], f"{family} row {r['name']!r} is n/a without saying why"


def _stop_loky_tracker() -> None:
    """loky keeps its own resource-tracker process for the session: stop it, test over."""
    try:
        from loky.backend import resource_tracker
    except ImportError:
        return
    tracker = resource_tracker._resource_tracker
    stop = getattr(tracker, "_stop", None)
    if stop is not None:
        stop()


def test_local_family_rows() -> None:
    from benchmarks import bench_local

    rows = bench_local.run(quick=True)
    _check_rows(rows, "local")
    names = {r["name"] for r in rows}
    assert {"pingpong", "spawn", "parked_time", "parked_rss"} <= names
    pp = [r for r in rows if r["name"] == "pingpong"]
    assert all(r["value"] is not None for r in pp)


def test_parallel_family_rows() -> None:
    from benchmarks import bench_parallel

    try:
        rows = bench_parallel.run(quick=True)
    finally:
        _stop_loky_tracker()
    _check_rows(rows, "parallel")
    names = {r["name"] for r in rows}
    assert {"cpu_speedup", "cpu_vs_pool", "tiny_tasks", "tiny_tasks_window", "cross_1to1",
            "cross_4to2", "array", "startup"} <= names
    baselines = {r["baseline"] for r in rows if r["name"] == "cpu_vs_pool"}
    assert {"multiprocessing.Pool(2)", "ProcessPoolExecutor(2)"} <= baselines


def test_transport_family_rows() -> None:
    if not (ROOT / "benchmarks" / "bench_transport.py").exists():
        pytest.skip("benchmarks/bench_transport.py not written yet")
    mod = importlib.import_module("benchmarks.bench_transport")
    if not callable(getattr(mod, "run", None)):
        pytest.skip("bench_transport has no run(quick) API; the runner calls it as a subprocess")
    from benchmarks.run import _normalise

    rows = [_normalise("transport", r) for r in mod.run(quick=True)]
    assert rows and all(isinstance(r, dict) for r in rows)
    assert all(set(ROW_KEYS) <= set(r) for r in rows)


def test_runner_writes_one_json_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import run

    out = tmp_path / "latest.json"
    result = run.main(["--quick", "--only", "local", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] is True
    assert data["meta"]["command"].endswith(f"--json {out}")
    assert [r["name"] for r in data["rows"]] == [r["name"] for r in result["rows"]]
    assert {r["family"] for r in data["rows"]} == {"local"}
    printed = capsys.readouterr().out
    assert "| family" in printed and "bar met" in printed


def test_runner_rejects_unknown_family(capsys: pytest.CaptureFixture) -> None:
    from benchmarks import run

    with pytest.raises(SystemExit):
        run.main(["--only", "nosuch"])
    assert "unknown family" in capsys.readouterr().err


def test_micro_measurements_run() -> None:
    import os
    import subprocess

    done = subprocess.run([sys.executable, "-m", "benchmarks.micro_shared"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "shared channel send + recv" in done.stdout
    assert "array to P1, transfers 1-6" in done.stdout


def test_bytecode_count_of_the_tiny_task_path() -> None:
    from benchmarks import instr

    per_task, top = instr.tiny_p0(n=300, window=32)
    assert per_task > 0
    names = [name for name, _ in top]
    assert any(name.endswith(":place") for name in names), names  # go() is on P0's path


def test_instruction_counts_reject_an_unknown_kind(capsys: pytest.CaptureFixture) -> None:
    from benchmarks import instr

    with pytest.raises(SystemExit):
        instr.main(["nosuch"])
    assert "unknown kind" in capsys.readouterr().err


def test_platform_measurements_run() -> None:
    import os
    import subprocess

    done = subprocess.run([sys.executable, "-m", "benchmarks.micro_platform"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    for name in ("greenlet switch", "greenlet create+start+finish", "codec encode",
                 "codec decode"):
        assert name in done.stdout


def test_testing_family_rows() -> None:
    from benchmarks import bench_testing

    rows = bench_testing.run(quick=True)
    _check_rows(rows, "testing")
    assert [r["name"] for r in rows] == ["fake_time_with_timeout_30s"]
