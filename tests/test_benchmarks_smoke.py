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

from benchmarks._common import PATH_LABELS, PATHS_ENV, ROW_KEYS, TINY_ENV  # noqa: E402


@pytest.fixture(autouse=True)
def _tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TINY_ENV, "1")
    monkeypatch.delenv(PATHS_ENV, raising=False)  # both runtime paths, as by default


def _check_both_paths(rows: list[dict], names: set[str]) -> None:
    """Each csp_mp figure in ``names`` has rows on the compiled core and on the Python path,
    labelled so; a path that cannot run here is n/a with its reason, never missing."""
    for name in names:
        got = [r for r in rows if r["name"] == name]
        assert {r["path"] for r in got} == {"1", "0"}, name
        for r in got:
            assert r["figure"].endswith(f"({PATH_LABELS[r['path']]})"), r["figure"]


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

    def bars(name: str) -> dict[str, str]:
        return {r["baseline"]: r["bar"] for r in rows if r["name"] == name}

    # docs/design.md's one-P bars, each against a peer measured in the same run
    assert bars("pingpong") == {
        "raw greenlet switch": "<= 5.5x a raw greenlet switch (moonshot 3x)",
        "asyncio.Queue": "faster than asyncio.Queue",
        "gevent.queue.Channel": "faster than gevent's Channel",
        "threads + queue.Queue": "(reference)"}
    assert bars("spawn") == {
        "one parked greenlet running each task":
            "<= 3x one parked greenlet running each task (moonshot 1.5x)",
        "asyncio create_task": "(reference)", "gevent.spawn": "(reference)"}
    for name, bar in (("pingpong", bench_local.PINGPONG_VS_SWITCH_BAR),
                      ("spawn", bench_local.SPAWN_VS_GREENLET_BAR)):
        floor = next(r for r in rows if r["name"] == name and r["bar"].startswith("<="))
        assert floor["baseline_value"] is not None, floor
        assert floor["met"] == (floor["value"] <= bar * floor["baseline_value"]), floor
        assert "csp_mp takes" in floor["note"], floor


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
    _check_both_paths(rows, names)

    def bars(name: str) -> dict[str, str]:
        return {r["baseline"].split(" (")[0]: r["bar"] for r in rows
                if r["name"] == name and r["path"] == "0"}

    # issue 11's bars, each against a peer measured in the same run
    assert bars("tiny_tasks") == {"csp_mp procs=1": ">= 1.6x",
                                  "mpire WorkerPool(2).map, auto chunks": ">= 2x",
                                  "ProcessPoolExecutor(2).submit": ">= 10x"}
    assert bars("cross_1to1") == {"multiprocessing.Queue": ">= 3x",
                                  "multiprocessing.Pipe": ">= 2x",
                                  "faster-fifo put_many/get_many": ">= 2x"}
    assert bars("cross_4to2") == {"multiprocessing.Queue": ">= 3x",
                                  "faster-fifo put_many/get_many": ">= 1.5x"}
    # docs/design.md's CPU and start-up bars, against the peers of the same run
    assert bars("cpu_speedup") == {"csp_mp procs=1": "ratio >= 1.85x"}
    assert bars("cpu_vs_pool") == {"multiprocessing.Pool(2)": "<= 1.0x its wall time",
                                   "ProcessPoolExecutor(2)": "<= 1.0x its wall time",
                                   "loky ProcessPoolExecutor(2)": "(reference)",
                                   "mpire WorkerPool(2)": "(reference)"}
    assert bars("startup") == {"ProcessPoolExecutor(2, fork) to first task": "<= 4x the peer"}
    assert bars("import") == {"import concurrent.futures.process": "<= 2x the peer"}
    for r in rows:  # a peer that is missing or failed is "n/a" and says why
        if r["baseline_value"] is None and r["bar"] not in ("", "(reference)"):
            assert r["met"] is None and r["note"], r


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
    _check_both_paths(rows, {"ring_1to1", "spsc_1to1", "ring_4to2", "ring_array"})
    peers = {r["baseline"] for r in rows if r["name"] == "ring_1to1"}
    assert {"multiprocessing.Queue", "multiprocessing.Pipe",
            "faster-fifo put_many/get_many"} == peers


def test_one_runtime_path_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import _common, run

    monkeypatch.setenv(PATHS_ENV, "0")
    assert _common.csp_paths() == ["0"]
    monkeypatch.setenv(PATHS_ENV, "both")
    assert _common.csp_paths() == ["1", "0"]
    with pytest.raises(SystemExit):
        run.main(["--native", "2"])


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
    # go() is on P0's path: the compiled core frames it from the compiled go() itself (no
    # Python frame runs for it), the Python path in place()
    from csp_mp._shm import native

    if native.enabled():
        assert not {"_run.py:go", "runq.py:place"} & set(names), names
    else:
        assert "runq.py:place" in names, names


def test_bytecode_counts_of_shared_send_and_recv() -> None:
    from benchmarks import instr

    res = instr.shared_ops(rounds=2, cap=64)
    for kind, fn in (("shared-send", "chan.py:send"), ("shared-recv", "chan.py:recv")):
        per_op, top, in_handler = res[kind]
        assert per_op > 0 and in_handler >= 0
        assert fn in [name for name, _ in top], top
        assert not any(name.startswith("preempt.py:") for name, _ in top), top


def test_bytecode_counts_of_the_reply_channel_loop() -> None:
    """A fresh reply channel per request runs what a kept one does not (a Chan made per
    request), and both count both Ps. (The totals are not compared: the Ps' polls while they
    wait for each other depend on the machine's load, and outweigh that difference there.)"""
    from benchmarks import instr

    fresh, fresh_top, _ = instr.reply_loop(True, n=100, warm=20, top_n=200)
    kept, kept_top, _ = instr.reply_loop(False, n=100, warm=20, top_n=200)
    assert fresh > 0 and kept > 0
    only_fresh = {"chan.py:__init__", "local.py:__init__"}  # a Chan(1) made per request
    assert only_fresh <= {name for name, c in fresh_top if c >= 0.9}, fresh_top
    assert not only_fresh & {name for name, _ in kept_top}, kept_top
    names = [name for name, _ in fresh_top + kept_top]
    assert "broker.py:poll" in names, names  # the Ps poll for the wake-ups of each request


def test_bytecode_counts_on_each_path_in_children() -> None:
    from benchmarks import instr

    for path in ("1", "0"):
        res = instr.bytecodes_in_child(["shared-send", "shared-recv", "tiny-p0"], path,
                                       small=True, timeout=120)
        if path == "1" and "error" in res and "not built" in res["error"]:
            continue
        assert "error" not in res, res
        assert res["native"] is (path == "1")
        for kind in ("shared-send", "shared-recv", "tiny-p0"):
            lines = instr.report(kind, path, res)
            assert f"({PATH_LABELS[path]})" in lines[0] and "bar <= " in lines[0], lines
            assert len(lines) > 1, lines  # the functions that ran the most


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


def test_lifetime_family_rows() -> None:
    mod = importlib.import_module("benchmarks.bench_lifetime")
    rows = mod.run(quick=True)
    _check_rows(rows, "lifetime")
    _check_both_paths(rows, {"reply_chan_per_request"})


def test_balance_family_rows() -> None:
    from benchmarks import bench_balance

    rows = bench_balance.run(quick=True)
    _check_rows(rows, "balance")
    assert {r["name"] for r in rows} == {"half_second", "chain", "cold_cpu", "cold_cpu_vs_ppe"}
    _check_both_paths(rows, {"half_second", "chain", "cold_cpu", "cold_cpu_vs_ppe"})
    assert all(r["value"] is not None for r in rows), [r["note"] for r in rows]


_GRANDPARENT = """
import os, subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(os.getsid(0), os.getpgid(0), p.pid, flush=True)
time.sleep(120)
"""


def test_child_runner_keeps_the_session_and_kills_the_group_on_timeout() -> None:
    """A benchmark child stays in the caller's session (its autogroup and nice priority) in a
    process group of its own, which a timeout kills whole, grandchildren included."""
    import os
    import time

    from benchmarks._common import child_env, run_child

    root, env = child_env()
    rc, out, _ = run_child([sys.executable, "-c", _GRANDPARENT], env, root, 5.0)
    assert rc is None, out
    sid, pgid, grandchild = (int(x) for x in out.split())
    assert sid == os.getsid(0) and pgid != os.getpgid(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"grandchild {grandchild} outlived the timeout")


def test_child_runner_can_ask_the_group_to_stop_first() -> None:
    """``term_first``: a timed-out child gets SIGTERM (to remove its shared-memory names) and
    what it prints then is kept."""
    from benchmarks._common import child_env, run_child

    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('cleaned up', flush=True),"
            " sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    root, env = child_env()
    rc, out, _ = run_child([sys.executable, "-c", code], env, root, 5.0, term_first=True)
    assert rc is None and out.split() == ["ready", "cleaned", "up"], out


def test_json_child_answers_and_errors() -> None:
    from benchmarks._common import json_child, path_unavailable

    def py(code: str) -> list[str]:
        return [sys.executable, "-c", code]

    assert json_child(py('print("noise"); print(\'{"x": 1}\')'), 30) == {"x": 1}
    assert json_child(py("import sys; sys.exit('boom')"), 30) == {"error": "exit 1: boom"}
    assert json_child(py("print('not json')"), 30)["error"].startswith("unreadable")
    assert json_child(py("import time; time.sleep(30)"), 0.5) == {
        "error": "timed out after 0.5 s"}
    # a child that ran the other runtime path than the one asked for is an error
    assert json_child(py('print(\'{"native": false}\')'), 30, "0") == {"native": False}
    if not path_unavailable("1"):
        assert "asked CSP_MP_NATIVE=1" in json_child(py('print(\'{"native": false}\')'), 30,
                                                     "1")["error"]
