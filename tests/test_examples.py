"""Every example runs as ``python examples/NAME.py`` and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path | None = None) -> str:
    # the checkout's csp_mp, whatever the environment has installed
    path = os.pathsep.join(p for p in (str(EXAMPLES.parent), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=50, cwd=cwd, env=dict(os.environ, PYTHONPATH=path))
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_example_is_tested() -> None:
    tests = [n for n in globals() if n.startswith("test_")]
    for path in EXAMPLES.glob("*.py"):
        assert any(t == f"test_{path.stem}" or t.startswith(f"test_{path.stem}_")
                   for t in tests), f"examples/{path.name} has no test"


def test_fan_out_fan_in() -> None:
    out = run_example("fan_out_fan_in.py", "5", "1000")
    counts = [int(m) for m in re.findall(r"^job \d+: +(\d+) primes", out, re.M)]
    jobs = [int(m) for m in re.findall(r"^job (\d+):", out, re.M)]
    assert jobs == [0, 1, 2, 3, 4]  # in job order, whatever order they finished in
    assert counts == [168, 135, 127, 120, 119]
    assert "total: 669 primes below 5000" in out
    order = re.search(r"finished in the order \[([\d, ]+)\]", out).group(1)
    assert sorted(int(i) for i in order.split(",")) == [0, 1, 2, 3, 4]


def test_cluster_primes() -> None:
    out = run_example("cluster_primes.py", "8", "2000")  # no cluster: one node
    assert "1 node(s); blocks per node: node 0: 8" in out
    assert "total: 1862 primes below 16000" in out


def test_pipeline() -> None:
    out = run_example("pipeline.py", "200")
    expected = sum(i * i for i in range(1, 201) if i % 2)
    assert f"100 odd squares, sum = {expected} (expected {expected}: ok)" in out
    most = int(re.search(r"held at most (\d+) values \(capacity (\d+)", out).group(1))
    assert most <= 4


def test_worker_pool() -> None:
    out = run_example("worker_pool.py")
    peak = int(re.search(r"at most (\d+) at once \(limit 3\)", out).group(1))
    assert 1 <= peak <= 3
    assert "part 1: 12 jobs done" in out
    assert "wait() raised the first error: job 5: bad input" in out
    m = re.search(r"part 2: (\d+) jobs finished, (\d+) gave up .*\(context canceled\)", out)
    assert m is not None, out
    assert int(m.group(1)) + int(m.group(2)) == 11  # every job but the failing one
    assert int(m.group(2)) >= 6  # the jobs started after the failure give up at once


def test_mandelbrot(tmp_path: Path) -> None:
    path = tmp_path / "m.ppm"
    out = run_example("mandelbrot.py", str(path), "60", "40")
    assert f"image written to {path}" in out
    assert "60x40 pixels" in out
    data = path.read_bytes()
    header = b"P6\n60 40\n255\n"
    assert data.startswith(header)
    assert len(data) == len(header) + 60 * 40 * 3
    assert b"\x00\x00\x00" in data[len(header):]  # some points are inside the set
    assert "@" in out  # the preview shows them


def test_mandelbrot_default_goes_to_a_temp_file() -> None:
    out = run_example("mandelbrot.py")
    path = Path(re.search(r"image written to (\S+)", out).group(1))
    try:
        assert path.read_bytes().startswith(b"P6\n240 160\n255\n")
    finally:
        path.unlink()


def test_word_count_on_given_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("go go go stop\n")
    (tmp_path / "b.txt").write_text("Go, stop. Wait!\n")
    out = run_example("word_count.py", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"),
                      str(tmp_path / "missing.txt"))
    assert re.search(r"^ +4  go$", out, re.M)
    assert re.search(r"^ +2  stop$", out, re.M)
    assert re.search(r"^ +1  wait$", out, re.M)
    assert "7 words, 3 distinct" in out
    assert re.search(r"skipped .*missing\.txt: FileNotFoundError", out)


def test_word_count_makes_its_own_input() -> None:
    out = run_example("word_count.py")
    assert "no files given: counting 3 sample files" in out
    assert "56 words, 34 distinct" in out
    assert re.search(r"^ +4  is$", out, re.M)


def test_context_timeout() -> None:
    out = run_example("context_timeout.py")
    errs = dict(re.findall(r"^  (w[\d.]+) +stopped after +\d+ rounds on P\d+: (.+)$", out, re.M))
    assert set(errs) == {f"w{b}{s}" for b in range(3) for s in ("", ".0", ".1")}
    for name, err in errs.items():
        want = "context canceled" if name.startswith("w1") else "context deadline exceeded"
        assert err == want, (name, err)
    assert "9 goroutines stopped; the root context says: context deadline exceeded" in out


def test_leak() -> None:
    out = run_example("leak.py", "20")
    assert "after 20 calls of leaky(): 21 goroutines, 20 leaked (20 blocked in 'chan send')" \
        in out
    assert "after 20 calls of safe(ctx) and cancel(): 0 more goroutines (fixed)" in out


def test_select_timeout() -> None:
    out = run_example("select_timeout.py")
    readings = [int(v) for v in re.findall(r"^got reading (\d+)$", out, re.M)]
    assert readings == [0, 10, 20, 30, 40, 50]
    m = re.search(r"6 readings, (\d+) timeout\(s\), (\d+) heartbeat tick", out)
    assert m is not None, out
    assert int(m.group(1)) >= 1  # the producer's long pause outlasts the timeout
    assert int(m.group(2)) >= 1
    assert "producer closed the channel: done" in out


def test_prime_sieve() -> None:
    out = run_example("prime_sieve.py", "10")
    assert "the first 10 primes" in out
    assert "2 3 5 7 11 13 17 19 23 29" in out.splitlines()


def test_from_process_pool() -> None:
    out = run_example("from_process_pool.py", "1600")
    assert "ProcessPoolExecutor: 251 primes below 1600" in out
    assert "csp_mp Executor:     251 primes below 1600" in out
    assert "as_chan in a select: case 0, 25 primes below 100, error None" in out
    assert "csp_mp.map:          251 primes below 1600" in out


def test_traced_pipeline(tmp_path: Path) -> None:
    import json

    out = run_example("traced_pipeline.py", str(tmp_path / "t.json"), "6", "1000")
    assert "sum of squares below 6000: 71982001000" in out
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    ran = {e["name"].rsplit(".", 1)[-1] for e in events if e["ph"] == "X"}
    assert {"generate", "square_sum", "close_when_done"} <= ran
