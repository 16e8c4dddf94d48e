"""Module globals are per process: on each P the functions of one module share one namespace.

Each program runs in a child interpreter (a script file, ``python -c`` or stdin), since what is
checked is how functions of ``__main__`` travel between Ps.
"""

from __future__ import annotations

import ast

import pytest
from proc_helpers import run_program

SOURCES = pytest.mark.parametrize("source", ["file", "dash_c", "stdin"])


def _run(source: str, tmp_path, text: str) -> list:
    path = str(tmp_path / "prog.py") if source == "file" else None
    r = run_program(path, text, stdin=source == "stdin", timeout=60)
    assert r.returncode == 0, r.stderr
    return [ast.literal_eval(line) for line in r.stdout.splitlines()] + [r.stderr]


COUNTER = '''
import os, time, warnings
import csp_mp
from csp_mp import runtime

COUNTER = 0

def bump(out):
    global COUNTER
    COUNTER += 1
    n = COUNTER
    t = time.process_time() + 0.01
    while time.process_time() < t:
        pass
    out.send((runtime.current_p(), n))

def main():
    out = csp_mp.Chan(64)
    seen = {}
    while len(seen.get(1, ())) < 2:  # until P1 ran a few of them
        for _ in range(16):
            csp_mp.go(bump, out)
        for _ in range(16):
            p, n = out.recv()
            seen.setdefault(p, []).append(n)
    return {p: sorted(ns) for p, ns in seen.items()}

warnings.simplefilter("always", csp_mp.MigrationWarning)
print(csp_mp.run(main, procs=2))
'''


@SOURCES
def test_a_global_counter_counts_per_process(source: str, tmp_path) -> None:
    by_p, stderr = _run(source, tmp_path, COUNTER)
    assert set(by_p) == {0, 1}
    for p, ns in by_p.items():  # every goroutine of one P bumped the same counter
        assert ns == list(range(1, len(ns) + 1)), (p, ns)
    assert "'bump' writes module globals (COUNTER)" in stderr
    assert "per process" in stderr


INITIALIZER = '''
import os, time
import csp_mp
from csp_mp.futures import Executor

STATE = None
CACHE = {}

def init(tag):
    global STATE
    STATE = tag

def task(i):
    CACHE.setdefault("hits", 0)
    CACHE["hits"] += 1
    t = time.process_time() + 0.005
    while time.process_time() < t:
        pass
    return STATE, os.getpid(), CACHE["hits"]

def main():
    with Executor(initializer=init, initargs=("csp",)) as ex:
        res = list(ex.map(task, range(60)))
    hits = {}
    for _, pid, n in res:
        hits.setdefault(pid, []).append(n)
    return sorted({s for s, _, _ in res}, key=str), len(hits), all(
        sorted(v) == list(range(1, len(v) + 1)) for v in hits.values())

print(csp_mp.run(main, procs=2))
'''


@SOURCES
def test_an_executor_initializer_reaches_the_tasks_on_every_p(source: str, tmp_path) -> None:
    (states, npids, caches_warm), _ = _run(source, tmp_path, INITIALIZER)
    assert states == ["csp"]  # ProcessPoolExecutor gives {'ppe'}: never None
    assert npids == 2
    assert caches_warm  # one cache per process, filled by every task that ran there


REDEFINED = '''
import time
import csp_mp
from csp_mp import Chan, go, runtime

def f():
    return 1

def h(out):
    t = time.process_time() + 0.002
    while time.process_time() < t:
        pass
    out.send((runtime.current_p(), f()))

out = Chan(64)

def on_p1(fn):
    for _ in range(500):
        for _ in range(8):
            go(fn, out)
        got = [v for p, v in (out.recv() for _ in range(8)) if p == 1]
        if got:
            return sorted(set(got))
    raise SystemExit("never ran on P1")

print(on_p1(h))

def f():  # the cell run again
    return 2

def g(out):
    out.send((runtime.current_p(), f()))

print(on_p1(g))  # brings the new f to P1
print(on_p1(h))  # h, unchanged (its bytes cached), now calls the new f there too
csp_mp.shutdown()
'''


@pytest.mark.parametrize("source", ["dash_c", "stdin"])
def test_a_redefined_function_replaces_the_old_one_on_every_p(source: str, tmp_path) -> None:
    first, new, again, _ = _run(source, tmp_path, REDEFINED)
    assert (first, new, again) == ([1], [2], [2])


CHANNELS = '''
import csp_mp
from csp_mp import Chan, go

TABLE = [Chan(1) for _ in range(4)]  # made before the runtime (and its Ps) started

def put(i):
    TABLE[i].send(i * 10)

def main():
    for i in range(4):
        go(put, i)
    return sorted(TABLE[i].recv() for i in range(4))

print(csp_mp.run(main, procs=2))
'''


def test_channels_a_worker_forked_with_are_the_ones_its_functions_bring(tmp_path) -> None:
    got, _ = _run("file", tmp_path, CHANNELS)
    assert got == [0, 10, 20, 30]
