"""Execution traces: what a trace of a run holds, on one P and across Ps, and that stopping one
restores the scheduler exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_goroutines

import csp_mp
from csp_mp import trace
from csp_mp._hub import hooks
from csp_mp._hub import tracing as hub_tracing


def _work(i: int, ch: csp_mp.Chan) -> None:
    total = 0
    for k in range(500):
        total += k
    ch.send(i)


def _fan_out(n: int) -> int:
    ch = csp_mp.Chan(4)
    for i in range(n):
        csp_mp.go(_work, i, ch)
    got = sum(ch.recv() for _ in range(n))
    csp_mp.blocking(time.sleep, 0.001)
    wait_goroutines(1)  # every _work has ended before the trace stops
    return got


def _load(path: Path) -> list[dict]:
    doc = json.loads(path.read_text())
    assert doc["otherData"]["missing_ps"] == []
    return doc["traceEvents"]


def _ran(ev: list[dict], fn: str) -> set[int]:
    """The goroutines of function ``fn`` that have a run slice in the trace."""
    return {e["args"]["goid"] for e in ev if e["ph"] == "X" and e["name"].endswith("." + fn)}


def _traced_run(path: Path, procs: int, n: int) -> list[dict]:
    def main() -> int:
        with trace.tracing(path):
            return _fan_out(n)

    assert csp_mp.run(main, procs=procs) == n * (n - 1) // 2
    return _load(path)


@pytest.mark.parametrize("procs", [1, 2])
def test_trace_records_every_goroutine_with_its_flow(tmp_path: Path, procs: int) -> None:
    n = 300
    ev = _traced_run(tmp_path / "t.json", procs, n)
    names = {e["args"]["name"] for e in ev if e["name"] == "process_name"}
    assert names == {f"P{q}" for q in range(procs)}
    run = [e for e in ev if e["ph"] == "X" and e["cat"] == "run"]
    work = {e["args"]["goid"] for e in run if e["name"].endswith("_work")}
    assert len(work) == n  # every goroutine of _work ran, in at least one slice
    ends = [e for e in ev if e["ph"] == "i" and e["name"] == "end"]
    assert len(ends) == n
    starts = Counter(e["id"] for e in ev if e["ph"] == "s" and e["name"] == "go")
    finishes = Counter(e["id"] for e in ev if e["ph"] == "f" and e["name"] == "go")
    assert len(starts) == n and starts == finishes  # each go() flows to exactly one start
    parks = [e for e in ev if e["ph"] == "i" and e["name"] == "park"]
    assert parks and all(e["args"]["reason"] for e in parks)
    assert {e["args"]["reason"] for e in parks} >= {"blocking call"}
    blocking = [e for e in ev if e["ph"] == "X" and e["cat"] == "blocking"]
    assert [e["name"] for e in blocking] == ["time.sleep"]
    assert blocking[0]["tid"] != 0  # an M thread's own track
    assert not list(tmp_path.glob("t.json.P*"))  # the other Ps' parts were merged and removed


def test_slices_of_one_p_never_overlap(tmp_path: Path) -> None:
    ev = _traced_run(tmp_path / "t.json", 1, 200)
    run = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e["ph"] == "X" and e["tid"] == 0)
    for (_, end), (start, _) in zip(run, run[1:], strict=False):
        assert start >= end - 1e-3


def test_steals_show_as_instants_and_cross_p_flows(tmp_path: Path) -> None:
    ev = _traced_run(tmp_path / "t.json", 2, 400)
    s_pid = {e["id"]: e["pid"] for e in ev if e["ph"] == "s" and e["name"] == "go"}
    f_pid = {e["id"]: e["pid"] for e in ev if e["ph"] == "f" and e["name"] == "go"}
    crossed = [i for i in s_pid if f_pid[i] != s_pid[i]]
    steals = [e for e in ev if e["name"] == "steal"]
    assert bool(crossed) == bool(steals)  # a goroutine ran on another P only by a steal
    if steals:
        assert all(e["pid"] == 1 or e["args"]["detail"].endswith("from P1") for e in steals)


def _recv_n_on(p: int, ch: csp_mp.Chan, n: int, out: csp_mp.Chan, won: csp_mp.atomic.Int64) -> None:
    if csp_mp.runtime.current_p() != p or not won.compare_and_swap(0, 1):
        return
    out.send(p)
    out.send(sum(ch.recv() for _ in range(n)))


def test_a_cross_p_send_flows_to_the_receive_it_woke(tmp_path: Path) -> None:
    """Every value handed to a receiver parked on another P draws a "wake" arrow from the
    sender's P to the receiver's next run slice (the compiled core's hand-off included)."""
    n = 50
    path = tmp_path / "t.json"

    def main() -> int:
        ch, out = csp_mp.Chan(), csp_mp.Chan(2)
        won = csp_mp.atomic.Int64(0)
        while not won.load():  # probes until one runs on P1: it becomes the receiver
            for _ in range(8):
                csp_mp.go(_recv_n_on, 1, ch, n, out, won)
            csp_mp.sleep(0.001)
        assert out.recv() == 1
        with trace.tracing(path):
            for i in range(n):
                while not ch.stats().receivers_waiting:  # parked: the send wakes it
                    csp_mp.runtime.gosched()
                ch.send(i)
            total = out.recv()
        return total

    assert csp_mp.run(main, procs=2) == n * (n - 1) // 2
    ev = _load(path)
    starts = {e["id"]: e for e in ev if e["ph"] == "s" and e["name"] == "wake"}
    ends = {e["id"]: e for e in ev if e["ph"] == "f" and e["name"] == "wake"}
    to_p1 = [i for i, e in starts.items() if e["pid"] == 0]
    assert len(to_p1) >= n  # one per send (the receiver's wake-ups of P0 may add more)
    assert all(i in ends and ends[i]["pid"] == 1 and ends[i]["ts"] >= starts[i]["ts"]
               for i in to_p1)


def test_stop_restores_the_hub_and_stop_without_start_is_none(tmp_path: Path) -> None:
    def main() -> tuple[type, tuple, type, tuple, str | None]:
        hub = csp_mp._hub.current_hub()
        before = dict(vars(hub))
        trace.start(tmp_path / "t.json")
        during = type(hub), hub.instruments
        with pytest.raises(RuntimeError, match="already running"):
            trace.start(tmp_path / "u.json")
        trace.stop()
        assert dict(vars(hub)) == before  # no method of the hub was replaced, none is left
        assert hub_tracing.active() is None
        return *during, type(hub), hub.instruments, trace.stop()

    cls_during, inst_during, cls_after, inst_after, again = csp_mp.run(main, procs=1)
    assert cls_during is hooks.InstrumentedHub
    assert [type(i) for i in inst_during] == [hub_tracing.Recorder]
    assert cls_after is csp_mp._hub.Hub and inst_after == ()
    assert again is None


def test_a_trace_across_ps_watches_the_broker_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The process layer's part of a trace is a watcher of the broker: nothing is assigned on
    the broker, its run queue or the run-queue rings, and stopping restores all three."""

    def methods(obj: Any) -> dict:
        return {k: v for k, v in vars(obj).items() if callable(v)}

    def state(b: Any, rings: list) -> tuple:
        return methods(b), methods(b.runq), [sorted(vars(r)) for r in rings]

    def main() -> tuple[list[str], bool]:
        b: Any = csp_mp._hub.current_hub().broker
        rings = list(b.ctx.runq)
        before = state(b, rings)
        trace.start(tmp_path / "t.json")
        during = [type(w).__name__ for w in b.watchers]
        ring_attrs = [sorted(vars(r)) for r in rings]
        assert _fan_out(64) == 64 * 63 // 2
        trace.stop()
        assert state(b, rings) == before
        assert b.watchers == () and b.runq.watchers == ()
        return during, ring_attrs == before[2]

    during, rings_untouched = csp_mp.run(main, procs=2)
    assert during == ["_Flows"] and rings_untouched


def test_csp_mp_trace_env_traces_a_whole_run(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = ("import csp_mp, time\n"
            "def w(i, ch): ch.send(i)\n"
            "def main():\n"
            "    ch = csp_mp.Chan()\n"
            "    for i in range(50): csp_mp.go(w, i, ch)\n"
            "    return sum(ch.recv() for _ in range(50))\n"
            "print(csp_mp.run(main, procs=2))\n")
    env = dict(os.environ, CSP_MP_TRACE=str(out))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1225"
    ev = _load(out)
    assert len(_ran(ev, "w")) == 50  # (a sender may not have ended when main returned)
    assert {e["pid"] for e in ev} == {0, 1}


def test_csp_mp_trace_env_traces_the_implicit_runtime(tmp_path: Path) -> None:
    out = tmp_path / "implicit.json"
    code = ("import csp_mp\n"
            "ch = csp_mp.Chan()\n"
            "def w(i): ch.send(i)\n"
            "for i in range(20): csp_mp.go(w, i)\n"
            "print(sum(ch.recv() for _ in range(20)))\n")
    env = dict(os.environ, CSP_MP_TRACE=str(out), GOMAXPROCS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "190"
    ev = _load(out)
    assert len(_ran(ev, "w")) == 20


def test_trace_command_writes_a_self_contained_page(tmp_path: Path) -> None:
    src = tmp_path / "t.json"
    _traced_run(src, 1, 50)
    proc = subprocess.run([sys.executable, "-m", "csp_mp", "trace", str(src), "-o",
                           str(tmp_path / "t.html")], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "t.html").read_text()
    assert "<canvas" in page and "window.cspTrace" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    assert "<script src" not in page and "<link" not in page


def _seeded_order(seed: int, path: Path | None) -> list[int]:
    """The order in which 20 goroutines ran under the seeded scheduler (traced into ``path``)."""

    def main() -> list[int]:
        hub = csp_mp._hub.current_hub()
        hooks.install(hub, hooks.Seeded(seed))
        if path is not None:
            trace.start(path)
        order: list[int] = []
        wg = csp_mp.WaitGroup()
        for i in range(20):
            wg.add(1)

            def body(i: int = i) -> None:
                csp_mp.runtime.gosched()
                order.append(i)
                wg.done()

            csp_mp.go_local(body)
        wg.wait()
        if path is not None:
            trace.stop()
        return order

    return csp_mp.run(main, procs=1)


def test_trace_recorder_and_seeded_scheduler_work_together(tmp_path: Path) -> None:
    plain = _seeded_order(11, None)
    traced = _seeded_order(11, tmp_path / "s.json")
    assert sorted(traced) == list(range(20))
    assert traced == plain  # the seed alone decides the order, traced or not
    assert traced != list(range(20)) and _seeded_order(12, None) != plain
    ev = _load(tmp_path / "s.json")
    runs = Counter(e["name"] for e in ev if e["ph"] == "X")
    ends = [e for e in ev if e["ph"] == "i" and e["name"] == "end"]
    parks = [e for e in ev if e["ph"] == "i" and e["name"] in ("gosched", "park")]
    assert sum(n for name, n in runs.items() if "body" in name) >= 40  # 2 slices each
    assert len(ends) >= 20 and len(parks) >= 20


REPLACED_THEN_TRACED = textwrap.dedent("""
    import json, os, signal, sys
    import csp_mp
    from csp_mp import Chan, go, go_local, trace
    from csp_mp.futures import Executor
    from test_futures import _tasks_on_both_ps

    KIDS = 6

    def child(gate):
        gate.recv()  # parks once: nothing is sent, the gate only closes

    def spawner(done):
        gate = Chan()
        for _ in range(KIDS):
            go_local(child, gate)
        while gate.stats().receivers_waiting < KIDS:
            csp_mp.sleep(0.001)
        gate.close()
        done.send(csp_mp.runtime.current_p())

    def main(path):
        pids, gate = Chan(64), Chan()
        with Executor(max_workers=4096) as ex:
            futs, victim = _tasks_on_both_ps(ex, pids, gate)
            os.kill(victim, signal.SIGKILL)  # P1 holds only tasks: a new process replaces it
            while not any(f.done() for f in futs):
                csp_mp.sleep(0.001)
            for f in futs:
                if not f.done():
                    gate.send(None)
        done = Chan(1024)
        spawned, on = 0, set()
        with trace.tracing(path):  # P1 is clean: it has run nothing but executor tasks
            while on != {0, 1} and spawned < 64 * 16:
                for _ in range(16):
                    go(spawner, done)
                spawned += 16
                for _ in range(16):
                    on.add(done.recv())
            # every spawner and child has ended (a fresh stack of every P, not published counts)
            while any(f": __main__.{fn}" in csp_mp.runtime.stack() for fn in ("spawner", "child")):
                csp_mp.sleep(0.001)
        return {"spawned": spawned, "kids": KIDS, "on": sorted(on)}

    print(json.dumps(csp_mp.run(main, sys.argv[1], procs=2)))
""")


def test_a_trace_after_a_p_was_replaced_holds_every_goroutine_of_every_p(tmp_path: Path) -> None:
    """P1 dies holding only executor tasks and is replaced; a trace then records every
    goroutine created on either P, each park and each end (the new P1 starts clean, and
    soiling it must not take the recorder's hooks with it)."""
    path = tmp_path / "r.json"
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", REPLACED_THEN_TRACED, str(path)],
                          capture_output=True, text=True, timeout=120, cwd=here,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [here, os.path.dirname(here)])))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["on"] == [0, 1], got  # spawners ran on both Ps
    spawned, kids = got["spawned"], got["kids"]
    ev = _load(path)
    inst = [e for e in ev if e["ph"] == "i"]
    # go(spawner): each framed on P0, each run once, on the P that took it, and ended
    queued = [e for e in inst if e["name"] == "go" and e["args"]["goid"] == 0
              and e["args"]["detail"].endswith(".spawner")]
    assert len(queued) == spawned and {e["pid"] for e in queued} == {0}
    runs = {e["args"]["goid"]: e["pid"] for e in ev
            if e["ph"] == "X" and e["cat"] == "run" and e["name"].endswith(".spawner")}
    assert len(runs) == spawned
    per_p = Counter(runs.values())
    assert per_p[0] > 0 and per_p[1] > 0
    ends = Counter(e["args"]["goid"] for e in inst if e["name"] == "end")
    assert all(ends[g] == 1 for g in runs)
    # go_local(child): created on the spawner's P, parked once on the gate, ended
    made = {e["args"]["goid"]: e["pid"] for e in inst
            if e["name"] == "go" and e["args"]["goid"] and e["args"]["detail"].endswith(".child")}
    assert Counter(made.values()) == {q: n * kids for q, n in per_p.items()}
    parks = Counter(e["args"]["goid"] for e in inst
                    if e["name"] == "park" and e["args"]["goid"] in made)
    assert parks == Counter(dict.fromkeys(made, 1))
    assert all(ends[g] == 1 for g in made)
