"""Sync objects built of others (Once, Cond), contexts and atomics already shared between a
node's Ps, used from another node: each part keeps its home, and the object behaves as on one
machine."""

from __future__ import annotations

import time

import pytest

import csp_mp
from csp_mp import atomic, context, runtime
from csp_mp._cluster.ship import go_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _once_then_report(once: csp_mp.Once, calls: atomic.Int64, out: csp_mp.Chan) -> None:
    once.do(lambda: calls.add(1))
    out.send(runtime.current_node())


def test_once_runs_its_function_once_across_nodes(cluster) -> None:
    def main():
        once, calls, out = csp_mp.Once(), atomic.Int64(0), csp_mp.Chan(8)
        for _ in range(3):
            go_node(1, _once_then_report, once, calls, out)
        once.do(lambda: calls.add(1))
        nodes = sorted(out.recv() for _ in range(3))
        once.do(lambda: calls.add(1))
        return nodes, calls.load()

    assert csp_mp.run(main, cluster=cluster.address) == ([1, 1, 1], 1)


def _wait_for_flag(mu: csp_mp.Mutex, cond: csp_mp.Cond, flag: atomic.Bool,
                   waiting: atomic.Int64, out: csp_mp.Chan) -> None:
    with mu:
        waiting.add(1)
        while not flag.load():
            cond.wait()
    out.send(runtime.current_node())


def test_cond_wakes_waiters_on_another_node(cluster) -> None:
    def main():
        mu = csp_mp.Mutex()
        cond = csp_mp.Cond(mu)
        flag, waiting, out = atomic.Bool(False), atomic.Int64(0), csp_mp.Chan(4)
        for _ in range(2):
            go_node(1, _wait_for_flag, mu, cond, flag, waiting, out)
        deadline = time.monotonic() + 30
        while waiting.load() < 2:  # both hold the count before they wait on cond
            assert time.monotonic() < deadline, "the waiters on node 1 never started"
            csp_mp.time.sleep(0.005)
        with mu:  # each waiter is in cond.wait once it has let go of mu
            flag.store(True)
            cond.broadcast()
        return sorted(out.recv() for _ in range(2))

    assert csp_mp.run(main, cluster=cluster.address) == [1, 1]


def _until_done(ctx: context.Context, key: str, out: csp_mp.Chan) -> None:
    out.send(("started", runtime.current_node(), ctx.value(key)))
    ctx.done().recv()
    out.send(("done", type(ctx.err()).__name__, ctx.deadline()[1]))


def test_a_context_cancelled_on_node_0_ends_waits_on_node_1(cluster) -> None:
    def main():
        parent, cancel = context.with_cancel(context.background())
        ctx = context.with_value(parent, "request", 42)
        out = csp_mp.Chan(4)
        go_node(1, _until_done, ctx, "request", out)
        started = out.recv()
        cancel()
        return started, out.recv()

    assert csp_mp.run(main, cluster=cluster.address) == (
        ("started", 1, 42), ("done", "Canceled", False))


def test_a_deadline_set_on_node_0_expires_a_context_used_on_node_1(cluster) -> None:
    def main():
        ctx, cancel = context.with_timeout(context.background(), 0.3)
        out = csp_mp.Chan(4)
        go_node(1, _until_done, ctx, "none", out)
        started = out.recv()
        got = out.recv()
        cancel()
        return started, got

    assert csp_mp.run(main, cluster=cluster.address) == (
        ("started", 1, None), ("done", "DeadlineExceeded", True))


def _cancel_from_here(cancel, out: csp_mp.Chan) -> None:
    cancel()
    out.send(runtime.current_node())


def test_a_cancel_function_called_on_node_1_cancels_the_context_on_node_0(cluster) -> None:
    def main():
        ctx, cancel = context.with_cancel(context.background())
        out = csp_mp.Chan(1)
        go_node(1, _cancel_from_here, cancel, out)
        ctx.done().recv()
        return out.recv(), type(ctx.err()).__name__

    assert csp_mp.run(main, cluster=cluster.address) == (1, "Canceled")


def _add(counter: atomic.Int64, n: int, out: csp_mp.Chan) -> None:
    counter.add(n)
    out.send((runtime.current_node(), runtime.current_p()))


def test_an_atomic_shared_between_a_nodes_ps_is_homed_when_it_travels(cluster) -> None:
    """An Int64 that another P of node 0 already uses lives in node 0's arena: node 1 gets a
    handle on it, never an arena offset of node 0's."""
    def main():
        counter, out = atomic.Int64(0), csp_mp.Chan(4)
        seen = set()
        deadline = time.monotonic() + 30
        while 1 not in {p for node, p in seen if node == 0}:  # until P1 of node 0 has it
            assert time.monotonic() < deadline, "no goroutine reached P1 of node 0"
            for _ in range(4):
                csp_mp.go(_add, counter, 0, out)
            seen |= {out.recv() for _ in range(4)}
        go_node(1, _add, counter, 5, out)
        where = out.recv()
        counter.add(1)
        return type(counter).__name__ != "Int64", where[0], counter.load()

    assert csp_mp.run(main, cluster=cluster.address, procs=2) == (True, 1, 6)


def _fail_on_node_1(out: csp_mp.Chan) -> None:
    out.send(runtime.current_node())
    raise ValueError("from node 1")


def _go_in_group(g, out: csp_mp.Chan) -> None:
    g.go(_fail_on_node_1, out)  # the group's goroutine, made on node 1


def _wait_for_cancel(ctx: context.Context) -> str:
    ctx.done().recv()
    return type(ctx.err()).__name__


def test_an_errgroup_context_is_cancelled_by_an_error_on_another_node(cluster) -> None:
    from csp_mp import errgroup

    def main():
        g, ctx = errgroup.with_context(context.background())
        out = csp_mp.Chan(1)
        g.go(_wait_for_cancel, ctx)
        go_node(1, _go_in_group, g, out)  # the group travels; its failing goroutine is node 1's
        node = out.recv()
        try:
            g.wait()
        except ValueError as exc:
            return node, str(exc), _wait_for_cancel(ctx)
        return node, None, None

    assert csp_mp.run(main, cluster=cluster.address) == (1, "from node 1", "Canceled")


def _lock_and_report(mu: csp_mp.Mutex, out: csp_mp.Chan) -> None:
    with mu:
        out.send(runtime.current_node())


def _wait_on_cond(mu: csp_mp.Mutex, cond: csp_mp.Cond, flag: atomic.Bool) -> None:
    with mu:
        while not flag.load():
            cond.wait()


def _send_into(ch: csp_mp.Chan) -> None:
    ch.send("x")


def test_a_goroutine_waiting_on_another_nodes_object_shows_what_it_waits_for(cluster) -> None:
    """runtime.stack() gives the goroutine's wait as on one machine (``sync.Mutex.Lock``, not
    the reply it waits for from the object's node)."""
    from csp_mp._testing.stacks import parse_stack

    def main():
        mu, flag, out = csp_mp.Mutex(), atomic.Bool(False), csp_mp.Chan(1)
        cond_mu = csp_mp.Mutex()
        cond = csp_mp.Cond(cond_mu)
        full = csp_mp.Chan(1)
        full.send("fills it")
        mu.lock()
        go_node(1, _lock_and_report, mu, out)
        go_node(1, _wait_on_cond, cond_mu, cond, flag)
        go_node(1, _send_into, full)
        want = {"sync.Mutex.Lock", "sync.Cond.Wait", "chan send"}
        deadline = time.monotonic() + 30
        while True:
            states = {e.state for e in parse_stack(runtime.stack()) if e.node == 1}
            if want <= states or time.monotonic() > deadline:
                break
            csp_mp.sleep(0.01)
        mu.unlock()
        with cond_mu:
            flag.store(True)
            cond.broadcast()
        full.recv()
        full.recv()
        return states & want, out.recv()

    assert csp_mp.run(main, cluster=cluster.address) == (
        {"sync.Mutex.Lock", "sync.Cond.Wait", "chan send"}, 1)


def _park_here(ch: csp_mp.Chan) -> None:
    ch.recv()


def test_a_goroutine_started_on_another_node_names_the_line_that_made_it(cluster) -> None:
    """Go's created-by line of a goroutine that runs on node 1 is the go() call on node 0,
    not the runtime's dispatcher."""
    import inspect

    from csp_mp._testing.stacks import parse_stack

    def main():
        ch = csp_mp.Chan()
        go_node(1, _park_here, ch)  # the line that made it
        deadline = time.monotonic() + 30
        while True:
            entries = [e for e in parse_stack(runtime.stack()) if e.node == 1
                       and e.matches("_park_here")]
            if entries or time.monotonic() > deadline:
                break
            csp_mp.sleep(0.01)
        ch.close()
        return entries[0].text if entries else ""

    text = csp_mp.run(main, cluster=cluster.address)
    lines, first = inspect.getsourcelines(
        test_a_goroutine_started_on_another_node_names_the_line_that_made_it)
    line = first + next(i for i, s in enumerate(lines) if "the line that made it" in s)
    assert f"{__file__}:{line}\n" in text, text
    assert "csp_mp/_cluster/" not in text.split("created by", 1)[-1], text
