"""select meeting select across nodes when a select also has a local case, or runs on a P
other than its node's P0 (nodes of 2 CPUs, so that a node can run 2 Ps); sends on credits
fenced against what a third node learns after them."""

from __future__ import annotations

import time

import pytest
from mp_helpers import go_on

import csp_mp
from csp_mp import runtime
from csp_mp._cluster.ship import go_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

CLUSTER_CPUS = 2
N = 40


def _sender(xs: list, n: int, done: csp_mp.Chan, with_local: bool) -> None:
    """Send 0..n-1, each on whichever of ``xs`` a receiver takes it from (and, with
    ``with_local``, a case on a channel of this node that never becomes ready)."""
    idle = csp_mp.Chan()
    extra = [idle.recv] if with_local else []
    cases = []
    for v in range(n):
        i, _ = csp_mp.select(*((x.send, v) for x in xs), *extra)
        cases.append(i)
    done.send((runtime.current_node(), runtime.current_p(), cases))


def _receiver(xs: list, n: int, out: csp_mp.Chan, with_local: bool) -> None:
    """Receive n values, each from whichever of ``xs`` has one (and an idle local case)."""
    idle = csp_mp.Chan()
    extra = [idle.recv] if with_local else []
    got = []
    for _ in range(n):
        i, v = csp_mp.select(*(x.recv for x in xs), *extra)
        got.append((i, v))
    out.send((runtime.current_node(), runtime.current_p(), got))


def _start(ps: tuple[int, int], xs: list, done: csp_mp.Chan, out: csp_mp.Chan,
           with_local: bool) -> None:
    """(node 1) The receiver on P ``ps[0]``, then the sender on P ``ps[1]``."""
    go_on(ps[0], _receiver, xs, N, out, with_local)
    go_on(ps[1], _sender, xs, N, done, with_local)


@pytest.mark.parametrize(("ps", "with_local", "procs"), [
    ((0, 0), True, 1),   # both on P0 of node 1, each with a local case
    ((1, 0), False, 2),  # the receiver on P1
    ((1, 1), True, 2),   # both on P1, each with a local case
])
def test_select_meets_select_with_local_cases_and_on_other_ps(cluster, ps, with_local,
                                                              procs) -> None:
    """Both selects run on node 1 and both unbuffered channels live on node 0: only their
    offers there can meet. Every value arrives once, each select taking one remote case."""

    def main():
        xs = [csp_mp.Chan(), csp_mp.Chan()]
        done, out = csp_mp.Chan(), csp_mp.Chan()
        go_node(1, _start, ps, xs, done, out, with_local)
        return out.recv(), done.recv()

    (rnode, rp, got), (snode, sp, sent) = csp_mp.run(main, cluster=cluster.address,
                                                      procs=procs)
    assert (rnode, rp, snode, sp) == (1, ps[0], 1, ps[1])
    assert sorted(v for _, v in got) == list(range(N))
    assert all(i in (0, 1) for i, _ in got) and all(i in (0, 1) for i in sent)
    # a value travels on the channel both selects took: the same case on each side
    assert [i for i, _ in sorted(got, key=lambda c: c[1])] == sent


def _close_when_told(ch: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """Make a channel here, hand it to node 0, close ``ch`` once told on it."""
    tell = csp_mp.Chan()
    out.send((runtime.current_node(), tell))
    tell.recv()
    ch.close()


def _stream_then_tell(ch: csp_mp.Chan, n: int, tell: csp_mp.Chan) -> None:
    for i in range(n):
        ch.send(i)  # on credits: returns before the value lands
    ch.send(bytes(16 << 20))  # a value that takes a while to travel
    tell.send("done")  # to the third node, which closes ch at its home


def test_a_close_caused_through_a_third_node_comes_after_the_sends(cluster, third_node) -> None:
    """Node a streams into node 0's buffered channel, then tells node b, which closes it:
    every value is in the channel before the close (the fence), none lost, none twice."""

    def main():
        ch, out = csp_mp.Chan(64), csp_mp.Chan()
        go_node(2, _close_when_told, ch, out)
        b, tell = out.recv()
        go_node(1, _stream_then_tell, ch, 300, tell)
        got = list(ch)
        return b, got[:-1], len(got[-1])

    b, got, big = csp_mp.run(main, cluster=cluster.address, procs=1)
    assert b == 2 and got == list(range(300)) and big == 16 << 20


def _home_and_feed(tag: str, n: int, out: csp_mp.Chan) -> None:
    """Make an unbuffered channel on this node, hand it to node 0, send (tag, 0..n-1) on it."""
    ch = csp_mp.Chan()
    out.send((runtime.current_node(), ch))
    for i in range(n):
        ch.send((tag, i))


def _home_and_drain(out: csp_mp.Chan) -> None:
    """Make an unbuffered channel on this node, hand it to node 0, receive until it is
    closed; report what came."""
    ch = csp_mp.Chan()
    out.send((runtime.current_node(), ch))
    out.send((runtime.current_node(), list(ch)))


def test_select_over_channels_homed_on_three_nodes_takes_each_value_once(cluster,
                                                                        third_node) -> None:
    """Main selects over channels homed on nodes 0, 1 and 2: receiving from senders at each
    home, then sending to receivers at each home. Every value is taken once, each sender's in
    order, and the cases of every home are taken."""

    def main():
        assert runtime.num_nodes() == 3
        out = csp_mp.Chan()
        mine = csp_mp.Chan()
        csp_mp.go_local(_feed_local, mine, N)
        for node in (1, 2):
            go_node(node, _home_and_feed, f"n{node}", N, out)
        homes = dict(out.recv() for _ in range(2))
        chans = [mine, homes[1], homes[2]]
        got: dict[str, list[int]] = {}
        for _ in range(3 * N):
            _, (tag, i) = csp_mp.select(*(c.recv for c in chans))
            got.setdefault(tag, []).append(i)
        for node in (1, 2):
            go_node(node, _home_and_drain, out)
        sinks = dict(out.recv() for _ in range(2))
        local_sink = csp_mp.Chan()
        csp_mp.go_local(_home_and_drain_local, local_sink, out)
        targets = [local_sink, sinks[1], sinks[2]]
        cases = [0, 0, 0]
        for v in range(3 * N):
            k, _ = csp_mp.select(*((c.send, v) for c in targets))
            cases[k] += 1
        for c in targets:
            c.close()
        drained = dict(out.recv() for _ in range(3))
        return got, cases, drained

    got, cases, drained = csp_mp.run(main, cluster=cluster.address, procs=1)
    assert got == {tag: list(range(N)) for tag in ("n0", "n1", "n2")}
    assert sorted(v for vs in drained.values() for v in vs) == list(range(3 * N))
    assert [len(drained[k]) for k in (0, 1, 2)] == cases and all(cases), cases


def _feed_local(ch: csp_mp.Chan, n: int) -> None:
    for i in range(n):
        ch.send(("n0", i))


def _home_and_drain_local(ch: csp_mp.Chan, out: csp_mp.Chan) -> None:
    out.send((runtime.current_node(), list(ch)))


def _lock_on_p1(mu: csp_mp.Mutex, full: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """(node 1) On its P1: one goroutine locks node 0's locked mutex, another sends into node
    0's full channel; say where they run."""
    go_on(1, _lock_and_say, mu, out)
    go_on(1, _send_and_say, full, out)


def _lock_and_say(mu: csp_mp.Mutex, out: csp_mp.Chan) -> None:
    out.send(runtime.current_p())
    with mu:
        pass


def _send_and_say(full: csp_mp.Chan, out: csp_mp.Chan) -> None:
    out.send(runtime.current_p())
    full.send("second")


def test_a_goroutine_on_another_p_waiting_on_a_remote_object_shows_what_it_waits_for(
        cluster) -> None:
    """Its request goes to the home through the node's P0; runtime.stack() shows the wait as
    on one machine (``sync.Mutex.Lock``, ``chan send``), not the reply it waits for."""
    from csp_mp._testing.stacks import parse_stack

    def main():
        mu, full, out = csp_mp.Mutex(), csp_mp.Chan(1), csp_mp.Chan(2)
        mu.lock()
        full.send("first")
        go_node(1, _lock_on_p1, mu, full, out)
        ps = {out.recv(), out.recv()}
        want = {"sync.Mutex.Lock", "chan send"}
        deadline = time.monotonic() + 30
        while True:
            states = {e.state for e in parse_stack(runtime.stack())
                      if e.node == 1 and e.p == 1}
            if want <= states or time.monotonic() > deadline:
                break
            csp_mp.sleep(0.01)
        mu.unlock()
        return ps, states & want, full.recv(), full.recv()

    assert csp_mp.run(main, cluster=cluster.address, procs=2) == (
        {1}, {"sync.Mutex.Lock", "chan send"}, "first", "second")
