"""A node lost while goroutines wait on channels homed there: killed (its link ends) or frozen
(its link falls silent). Each test adds a node to the session's cluster and loses it."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import csp_mp
from csp_mp._cluster.ship import go_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _serve_chans(out: csp_mp.Chan) -> None:
    """On the node to lose: make channels nobody else sends on, a locked Mutex and a WaitGroup
    waiting for one goroutine, and hand them to node 0."""
    mu, wg = csp_mp.Mutex(), csp_mp.WaitGroup()
    mu.lock()
    wg.add(1)
    out.send((csp_mp.Chan(), csp_mp.Chan(), csp_mp.Chan(1), mu, wg))


def _runtime_pids(ray_node: str) -> list[int]:
    """The processes of the runtime on Ray node ``ray_node`` (by the environment its agent
    gave them)."""
    from csp_mp._cluster.life import MARKER

    pids = []
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if MARKER in env and env.get("CSP_MP_RAY_NODE") == ray_node:
            pids.append(p.pid)
    return pids


def _ray_node(out: csp_mp.Chan) -> None:
    out.send(os.environ.get("CSP_MP_RAY_NODE"))


def _index_of(ray_node: str) -> int:
    """(node 0) The index of the node runtime on Ray node ``ray_node``."""
    out = csp_mp.Chan()
    for k in range(1, csp_mp.runtime.num_nodes()):
        go_node(k, _ray_node, out)
        if out.recv() == ray_node:
            return k
    raise AssertionError(f"no node runs on {ray_node}")


def _blocked_on_lost_home(lose, ray_node: str):
    """A program whose goroutines wait in recv, send and select on channels homed on the node
    of Ray node ``ray_node``, in ``Mutex.lock`` and in ``WaitGroup.wait`` on objects homed
    there, when ``lose()`` loses it; what each got, how long it took, and that node's index."""

    def waiter(op, out):
        try:
            op()
            out.send(("returned", None, 0.0))
        except csp_mp.ProcessLost as exc:
            out.send(("lost", getattr(exc, "node", None), time.monotonic()))

    def main():
        chans = csp_mp.Chan()
        k = _index_of(ray_node)
        go_node(k, _serve_chans, chans)
        a, b, full, mu, wg = chans.recv()
        full.send(0)  # its buffer is full from now on
        out = csp_mp.Chan(8)
        ops = [a.recv, lambda: b.send(1), lambda: full.send(2),
               lambda: csp_mp.select(a.recv, (full.send, 3)), mu.lock, wg.wait]
        for op in ops:
            csp_mp.go_local(waiter, op, out)
        _settle(k)
        t0 = time.monotonic()
        csp_mp.blocking(lose)
        got = [out.recv() for _ in ops]
        return [(kind, node, (at - t0) if at else 0.0) for kind, node, at in got], k

    return main


def _settle(k: int) -> None:
    """(node 0) Wait until node ``k`` serves the six waiters: five stand-ins (receive, two
    sends, lock, wait) and the select's two cases offered there."""
    deadline = time.monotonic() + 10
    while True:
        there = csp_mp.runtime.metrics()["nodes"][k]
        if there["serving"] >= 5 and there["offers"] >= 2:
            return
        assert time.monotonic() < deadline, there
        csp_mp.sleep(0.01)


def test_a_killed_node_raises_process_lost_naming_it(cluster, third_node) -> None:
    def lose():
        cluster.remove_node(third_node, allow_graceful=False)

    got, k = csp_mp.run(_blocked_on_lost_home(lose, third_node.node_id),
                        cluster=cluster.address)
    assert [g[:2] for g in got] == [("lost", k)] * 6, got
    assert max(g[2] for g in got) < 2.0 + 1.0, got  # remove_node itself takes a moment


def test_a_frozen_node_raises_process_lost_after_the_heartbeat_timeout(cluster,
                                                                     third_node) -> None:
    stopped: list[int] = []

    def lose():
        stopped.extend(_runtime_pids(third_node.node_id))
        assert stopped
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)

    try:
        got, k = csp_mp.run(_blocked_on_lost_home(lose, third_node.node_id),
                            cluster=cluster.address)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert [g[:2] for g in got] == [("lost", k)] * 6, got
    assert 2.5 < max(g[2] for g in got) < 5.0, got


def test_a_killed_agent_takes_its_node_runtime_with_it(cluster, third_node) -> None:
    def lose():
        pids = _runtime_pids(third_node.node_id)
        assert pids
        agents = {psutil.Process(pid).ppid() for pid in pids} - set(pids)
        for agent in agents:
            os.kill(agent, signal.SIGKILL)  # the runtime's parent-death signal does the rest

    got, k = csp_mp.run(_blocked_on_lost_home(lose, third_node.node_id),
                        cluster=cluster.address)
    assert [g[:2] for g in got] == [("lost", k)] * 6, got
    assert max(g[2] for g in got) < 2.0, got


def _wait_on_node_0(out: csp_mp.Chan) -> None:
    """(node 1) Hand node 0 a channel homed here and wait to send on it."""
    c = csp_mp.Chan()
    out.send(c)
    c.send("from node 1")


@pytest.mark.timeout(60)
def test_a_node_that_takes_node_0_for_lost_leaves_without_bye(
        cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 0 holds the GIL past node 1's heartbeat timeout (one C call that keeps it), so
    node 1 hears nothing and ends its run; it closes its link without ``bye``, so node 0
    (patient: 30 s) takes it for lost at once, and an operation on node 1's channel raises
    ``ProcessLost`` instead of waiting for ever."""
    import ctypes

    from csp_mp._proc import proc

    monkeypatch.setenv("CSP_MP_HEARTBEAT_S", "1")  # the nodes' timeout
    hold_gil = ctypes.PyDLL(None).usleep  # a PyDLL call keeps the GIL
    hold_gil.argtypes = [ctypes.c_uint]

    def main():
        out = csp_mp.Chan()
        go_node(1, _wait_on_node_0, out)
        c = out.recv()
        proc.cluster.mesh.timeout = 30.0  # node 0 never takes node 1's silence for a loss
        hold_gil(2_500_000)
        try:
            c.recv()
        except csp_mp.ProcessLost as exc:
            return "lost", getattr(exc, "node", None)
        return "received", None

    assert csp_mp.run(main, cluster=cluster.address) == ("lost", 1)
