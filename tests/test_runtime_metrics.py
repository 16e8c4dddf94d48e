"""runtime.metrics(): counts of goroutines, steals, shared-channel traffic and blocking calls."""

from __future__ import annotations

import os
import time

import pytest
from helpers import wait_until

import csp_mp
from csp_mp import Chan, blocking, go, go_local, runtime

KEYS = {"procs", "goroutines", "goroutines_per_p", "goroutines_created", "steals", "preemptions",
        "shared_chan_ops", "shared_chan_bytes", "blocking_calls", "m_threads", "m_threads_busy",
        "arena_bytes", "arena_bytes_in_use", "shared_objects", "pids"}


def test_no_runtime_no_metrics() -> None:
    assert runtime.metrics() == {}


@pytest.mark.csp_mp(procs=1)
def test_one_p_counts_goroutines_and_blocking_calls() -> None:
    out = Chan(10)
    for i in range(5):
        go(out.send, i)
    for i in range(3):
        go_local(out.send, i)
    assert sorted(out.recv() for _ in range(8)) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert blocking(time.sleep, 0) is None
    m = runtime.metrics()
    assert set(m) == KEYS
    assert m["procs"] == 1 and m["goroutines"] == 1 and m["goroutines_per_p"] == [1]
    assert m["goroutines_created"] == 8 + 1  # the go() calls and main
    assert m["blocking_calls"] == 1 and m["m_threads"] == 1 and m["m_threads_busy"] == 0
    assert m["steals"] == 0 and m["shared_chan_ops"] == 0 and m["arena_bytes"] == 0


def _spin_and_report(out: Chan) -> None:
    x = 0
    for i in range(100_000):
        x += i
    out.send(runtime.current_p())


@pytest.mark.csp_mp(procs=2)
def test_two_ps_count_steals_and_shared_channel_traffic() -> None:
    out = Chan(64)
    n = 40
    for _ in range(n):
        go(_spin_and_report, out)
    ran_on = [out.recv() for _ in range(n)]
    m = runtime.metrics()
    assert set(m) == KEYS and m["procs"] == 2 and len(m["goroutines_per_p"]) == 2
    assert m["goroutines_created"] == n + 1
    if ran_on.count(1):
        assert m["steals"] >= ran_on.count(1)  # P1 only runs what it took from P0's queue
    # every value crossed the shared channel: one send on a P and one receive on P0 each
    assert m["shared_chan_ops"] >= 2 * n
    assert m["shared_chan_bytes"] > 0
    assert m["shared_objects"].get("chan", 0) >= 1
    assert 0 < m["arena_bytes_in_use"] <= m["arena_bytes"]
    wait_until(lambda: runtime.metrics()["goroutines"] == 1, "the goroutines ended")


@pytest.mark.csp_mp(procs=1)
def test_one_p_reports_its_own_pid() -> None:
    assert runtime.metrics()["pids"] == [os.getpid()]


def _report_pid(out: Chan) -> None:
    sum(range(20_000))  # long enough that an idle P takes some of these
    out.send((runtime.current_p(), os.getpid()))


@pytest.mark.csp_mp(procs=2)
def test_two_ps_report_each_p_pid() -> None:
    pids = runtime.metrics()["pids"]
    assert len(pids) == 2 and pids[0] == os.getpid()
    assert pids[1] not in (0, os.getpid())
    os.kill(pids[1], 0)  # a live process this user may signal
    # a goroutine that ran on P1 saw the same pid
    out = Chan(64)
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while 1 not in seen and time.monotonic() < deadline:
        for _ in range(16):
            go(_report_pid, out)
        for _ in range(16):
            p, pid = out.recv()
            seen[p] = pid
    assert seen.get(1) == pids[1]
    assert all(pid == pids[p] for p, pid in seen.items())  # P0's too, when one ran there


def test_metrics_is_documented_key_by_key() -> None:
    doc = runtime.metrics.__doc__ or ""
    for key in KEYS:
        assert f"``{key}``" in doc, key
    assert csp_mp.runtime.metrics.__module__ == "csp_mp.runtime"
