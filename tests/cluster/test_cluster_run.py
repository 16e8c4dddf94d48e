"""A program on a simulated 2-node Ray cluster: channels homed on either node, select over
them, goroutines moving to the idle node, panics, cleanup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

import csp_mp
from csp_mp import runtime
from csp_mp._cluster.ship import go_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _spin(turns: int) -> int:
    """Pure-Python CPU work (a goroutine preempted mid-spin cannot time itself by the thread's
    clock: the goroutines of its P share it)."""
    x = 0
    for i in range(turns):
        x += i
    return x


def test_without_a_cluster_nothing_imports_ray() -> None:
    code = ("import sys, csp_mp\n"
            "from csp_mp import runtime\n"
            "assert csp_mp.run(lambda: (runtime.current_node(), runtime.num_nodes())) == (0, 1)\n"
            "assert csp_mp.run(lambda: 7, procs=2) == 7\n"
            "print('ray' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "CSP_MP_CLUSTER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, check=True)
    assert out.stdout.strip() == "False"


def _where(out: csp_mp.Chan) -> None:
    out.send((runtime.current_node(), runtime.num_nodes()))


def test_nodes_and_goroutine_on_a_given_node(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        go_node(1, _where, out)
        return runtime.current_node(), runtime.num_nodes(), out.recv()

    assert csp_mp.run(main, cluster=cluster.address) == (0, 2, (1, 2))


def _make_chans(out: csp_mp.Chan) -> None:
    """On node 1: make an unbuffered and a buffered channel, hand them to node 0, serve."""
    unbuf, buf = csp_mp.Chan(), csp_mp.Chan(3)
    out.send((unbuf, buf))
    v = unbuf.recv()  # node 0 sends
    unbuf.send(v * 2)  # node 0 receives
    for i in range(5):
        buf.send(i)
    buf.close()


def test_channels_homed_on_another_node(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        go_node(1, _make_chans, out)
        unbuf, buf = out.recv()
        assert type(unbuf).__name__ == "RemoteChan" and unbuf.home == 1
        assert unbuf.cap == 0 and buf.cap == 3
        unbuf.send(21)
        got = unbuf.recv()
        items = list(buf)  # range until closed and drained
        ok = buf.recv_ok()
        with pytest.raises(csp_mp.ClosedChannelError):
            buf.send(9)
        with pytest.raises(csp_mp.ClosedChannelError):
            buf.close()
        return got, items, ok, buf.closed, len(buf)

    assert csp_mp.run(main, cluster=cluster.address) == (42, [0, 1, 2, 3, 4], (None, False),
                                                          True, 0)


def _echo(inbox: csp_mp.Chan, n: int) -> None:
    """On node 1: receive n values from node 0's channel, send each back doubled on theirs."""
    for _ in range(n):
        v, reply = inbox.recv()
        reply.send(v * 2)


def test_channels_of_node_0_used_from_node_1(cluster) -> None:
    def main():
        inbox, reply = csp_mp.Chan(), csp_mp.Chan(1)
        go_node(1, _echo, inbox, 50)
        out = []
        for i in range(50):
            inbox.send((i, reply))
            out.append(reply.recv())
        return out

    assert csp_mp.run(main, cluster=cluster.address) == [2 * i for i in range(50)]


def _feed(ch: csp_mp.Chan, base: int, n: int) -> None:
    for i in range(n):
        ch.send(base + i)


def test_select_over_remote_and_local_channels_takes_each_value_once(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        go_node(1, _make_pair, out)
        remote_a, remote_b = out.recv()
        local = csp_mp.Chan()
        csp_mp.go_local(_feed, local, 1000, 30)
        seen = []
        while len(seen) < 90:
            i, v = csp_mp.select(remote_a.recv, remote_b.recv, local.recv)
            seen.append(v)
        i, v = csp_mp.select(remote_a.recv, local.recv, csp_mp.default)
        return sorted(seen), i

    seen, last = csp_mp.run(main, cluster=cluster.address)
    assert seen == sorted(list(range(30)) + list(range(100, 130)) + list(range(1000, 1030)))
    assert last == 2  # nothing left: default


def _make_pair(out: csp_mp.Chan) -> None:
    a, b = csp_mp.Chan(), csp_mp.Chan(4)
    out.send((a, b))
    csp_mp.go(_feed, a, 0, 30)
    csp_mp.go(_feed, b, 100, 30)


def _cpu(turns: int, out: csp_mp.Chan) -> None:
    _spin(turns)
    out.send(runtime.current_node())


def test_goroutines_not_started_move_to_the_idle_node(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        for _ in range(24):
            csp_mp.go(_cpu, 300_000, out)  # ~20 ms each
        return [out.recv() for _ in range(24)]

    nodes = csp_mp.run(main, cluster=cluster.address)
    assert sorted(set(nodes)) == [0, 1], nodes


def _here(out: csp_mp.Chan) -> None:
    out.send(runtime.current_node())


def test_tiny_goroutines_mostly_stay_on_node_0_while_long_ones_move(cluster) -> None:
    """Goroutines that end at once cost node 0 more to ship than to run: once node 1 reported
    a first few, node 0 sends it one now and then; ~20 ms ones still go to the idle node."""

    def main():
        out = csp_mp.Chan(1024)
        for _ in range(24):
            csp_mp.go(_cpu, 300_000, out)  # ~20 ms each
        long_ones = [out.recv() for _ in range(24)]
        tiny = []
        for _ in range(3):
            for _ in range(2000):
                csp_mp.go(_here, out)
            tiny.append([out.recv() for _ in range(2000)])
        return long_ones, tiny

    long_ones, tiny = csp_mp.run(main, cluster=cluster.address)
    assert sorted(set(long_ones)) == [0, 1], long_ones
    assert all(len(t) == 2000 for t in tiny)
    # the first round may send node 1 a first share (32 at most) before it reports
    assert tiny[-1].count(1) < 200 and sum(t.count(1) for t in tiny) < 400, \
        [t.count(1) for t in tiny]


def _send_many(ch: csp_mp.Chan, tag: int, n: int) -> None:
    for i in range(n):
        ch.send((tag, i))


def test_many_senders_without_credits_wait_for_one_answer_and_arrive_in_order_once(
        cluster) -> None:
    """32 goroutines of node 1 start sending into a buffered channel of node 0 at once, none
    holding credits yet: every value arrives once, each sender's in order."""

    def main():
        ch = csp_mp.Chan(64)
        for tag in range(32):
            go_node(1, _send_many, ch, tag, 40)
        got: dict[int, list[int]] = {tag: [] for tag in range(32)}
        for _ in range(32 * 40):
            tag, i = ch.recv()
            got[tag].append(i)
        return got, len(ch)

    got, left = csp_mp.run(main, cluster=cluster.address)
    assert got == {tag: list(range(40)) for tag in range(32)} and left == 0


def _boom(out: csp_mp.Chan) -> None:
    out.send("started")
    raise ValueError("boom on node 1")


def test_a_panic_on_another_node_ends_the_run(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        go_node(1, _boom, out)
        out.recv()
        csp_mp.Chan().recv()  # until the panic ends the run

    with pytest.raises(csp_mp.Panic, match="boom on node 1") as info:
        csp_mp.run(main, cluster=cluster.address)
    assert any("node 1" in note for note in getattr(info.value, "__notes__", ()))


def test_cluster_from_the_environment(cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSP_MP_CLUSTER", cluster.address)
    assert csp_mp.run(runtime.num_nodes) == 2


def test_the_cluster_example_runs_on_the_cluster(cluster) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "cluster_primes.py"),
                          "8", "2000", "--cluster", cluster.address], capture_output=True,
                         text=True, timeout=100, env=env, check=True).stdout
    assert "2 node(s); blocks per node: node 0:" in out
    assert "total: 1862 primes below 16000" in out


def _park_here(stop: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """(node 1) Tell node 0 this goroutine runs, then wait for ``stop``."""
    out.send(runtime.current_node())
    stop.recv()


def test_num_goroutine_stack_and_metrics_span_the_nodes(cluster) -> None:
    def main():
        stop, out = csp_mp.Chan(), csp_mp.Chan()
        for _ in range(3):
            go_node(1, _park_here, stop, out)
        assert [out.recv() for _ in range(3)] == [1, 1, 1]
        n = runtime.num_goroutine()
        dump = runtime.stack()
        m = runtime.metrics()
        stop.close()
        return n, dump, m

    n, dump, m = csp_mp.run(main, cluster=cluster.address)
    assert n == 4  # main and the three on node 1, none of the runtime's own
    assert m["procs"] == 2 and m["goroutines"] == 4 and len(m["pids"]) == 2
    assert [node["goroutines"] for node in m["nodes"]] == [1, 3]
    head = re.compile(r"(goroutine \d+|\d+ goroutines) \[")
    heads = [line for line in dump.splitlines() if head.match(line)]
    # goroutines stopped at the same place are one entry: "3 goroutines [...] on node 1 ..."
    assert [h.split(" [")[0] for h in heads] == ["goroutine 1", "3 goroutines"], dump
    assert " on node 0 P0: main" in heads[0] and " on node 1 P0: " in heads[1], dump
    assert "_park_here" in heads[1]


def _stuck_on_node_1(theirs: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """(node 1) Park one goroutine on a channel of node 1 and this one on node 0's ``theirs``,
    neither of which anyone sends on."""
    mine = csp_mp.Chan()
    csp_mp.go(mine.recv)
    out.send(runtime.current_node())
    theirs.recv()


def test_a_deadlock_spanning_the_nodes_raises_deadlock_error(cluster) -> None:
    def main():
        theirs, out = csp_mp.Chan(), csp_mp.Chan()
        go_node(1, _stuck_on_node_1, theirs, out)
        assert out.recv() == 1
        csp_mp.Chan().recv()  # nobody sends: every goroutine on every node is blocked

    t0 = time.monotonic()
    with pytest.raises(csp_mp.DeadlockError) as info:
        csp_mp.run(main, cluster=cluster.address)
    assert time.monotonic() - t0 < 30  # the run's start included; the verdict takes ~1-2 s
    dump = info.value.stack
    assert " on node 0 P0: main" in dump, dump
    assert "_stuck_on_node_1" in dump and " on node 1 P" in dump, dump


def _select_on_node_0s(theirs: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """(node 1) Say where it runs, then wait in a select on a channel of node 0 and one of its
    own, neither of which anyone sends on."""
    out.send(runtime.current_node())
    csp_mp.select(theirs.recv, csp_mp.Chan().recv)


def _hand_over(out: csp_mp.Chan) -> None:
    """(node 1) Hand node 0 a channel of node 1 nobody sends on, then wait for good."""
    out.send(csp_mp.Chan())
    csp_mp.Chan().recv()


@pytest.mark.parametrize("selecting_node", [0, 1])
def test_a_deadlock_through_a_select_with_a_remote_case_raises_deadlock_error(
        cluster, selecting_node) -> None:
    """A select waiting on a channel of the other node (and a local one) is blocked for good
    once nobody can send: no timer keeps it from the verdict."""

    def main():
        out = csp_mp.Chan()
        if selecting_node == 0:
            go_node(1, _hand_over, out)
            theirs = out.recv()
            csp_mp.select(theirs.recv, csp_mp.Chan().recv)
        else:
            mine = csp_mp.Chan()
            go_node(1, _select_on_node_0s, mine, out)
            assert out.recv() == 1
            csp_mp.Chan().recv()

    with pytest.raises(csp_mp.DeadlockError) as info:
        csp_mp.run(main, cluster=cluster.address)
    dump = info.value.stack
    assert " on node 0 P0: main" in dump, dump
    assert re.search(rf"\[select\] on node {selecting_node} P", dump), dump


def _send_a_lock_then_5(theirs: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """(node 1) Send a lock into node 0's channel (it cannot travel), say what that raised,
    then send 5."""
    try:
        theirs.send(threading.Lock())
        out.send("no error")
    except TypeError as exc:
        out.send(f"TypeError: {exc}")
    theirs.send(5)


def test_a_value_that_cannot_travel_raises_type_error_at_send(cluster) -> None:
    """On the node holding a handle and at the channel's home alike (a channel other nodes
    hold is checked at send, as one shared between Ps is); the channel is unchanged."""

    def main():
        ch, out = csp_mp.Chan(2), csp_mp.Chan()
        go_node(1, _send_a_lock_then_5, ch, out)
        remote_error = out.recv()
        with pytest.raises(TypeError, match="lock") as info:
            ch.send(threading.Lock())
        v = ch.recv()
        return remote_error, str(info.value), v, len(ch)

    remote_error, home_error, v, left = csp_mp.run(main, cluster=cluster.address)
    assert remote_error.startswith("TypeError: cannot send a value of type lock to node 0"), \
        remote_error
    assert home_error.startswith("cannot send a value of type lock to another node"), home_error
    assert (v, left) == (5, 0)


class _Counted:
    """Counts, per process, how often one was pickled."""

    pickled = 0

    def __reduce__(self) -> tuple:
        type(self).pickled += 1
        return _Counted, ()


def _send_counted(chans: list, n: int) -> None:
    """(node 1) Send ``n`` counted values on each of ``chans``."""
    for ch in chans:
        for _ in range(n):
            ch.send(_Counted())


def test_values_from_another_node_are_not_pickled_again_at_the_home(cluster) -> None:
    """The home's send check lets through what came over a link (a blocking send, a send on
    credits, a try of a select): a 64 MiB array pays one pickling, not two."""

    def main():
        unbuf, buf = csp_mp.Chan(), csp_mp.Chan(8)
        go_node(1, _send_counted, [unbuf, buf], 5)
        got = [unbuf.recv() for _ in range(5)] + [buf.recv() for _ in range(5)]
        return len(got), all(type(v) is _Counted for v in got), _Counted.pickled

    assert csp_mp.run(main, cluster=cluster.address) == (10, True, 0)


def _late_reply(out: csp_mp.Chan) -> None:
    """(node 1) Sleep in a blocking call, then spin, then answer: busy the whole time."""
    csp_mp.blocking(time.sleep, 1.5)
    _spin(3_000_000)
    out.send("late")


def test_a_node_at_work_is_no_deadlock(cluster) -> None:
    """Node 0 waits for node 1 for several probe rounds while node 1 sleeps and computes."""

    def main():
        out = csp_mp.Chan()
        go_node(1, _late_reply, out)
        return out.recv()

    assert csp_mp.run(main, cluster=cluster.address) == "late"


def _answer_beside_a_hog(ping: csp_mp.Chan, pong: csp_mp.Chan) -> None:
    """(node 1) Answer every ping while a goroutine of this node spins until the pings end:
    the hub is never idle, so the replies it waits for are read in its pass."""
    done: list[int] = []

    def hog() -> None:
        while not done:
            pass

    csp_mp.go_local(hog)
    for v in ping:
        pong.send(v)
    done.append(1)


@pytest.mark.timeout(30)
def test_a_node_whose_hub_is_never_idle_still_reads_its_links(cluster) -> None:
    """A goroutine that never yields keeps node 1's hub from waiting for frames; its
    preemption passes read them (were they read only by the heartbeat thread, at most one
    round trip a beat, the 100 here would take 50 s or more)."""

    def main():
        ping, pong = csp_mp.Chan(), csp_mp.Chan()
        go_node(1, _answer_beside_a_hog, ping, pong)
        got = []
        for i in range(100):
            ping.send(i)
            got.append(pong.recv())
        ping.close()
        return got

    assert csp_mp.run(main, cluster=cluster.address) == list(range(100))


def _stuck_in_c(out: csp_mp.Chan) -> None:
    """(node 1) Hold the hub's thread in one C call (the GIL released) for longer than the
    heartbeat timeout, then answer."""
    import select

    select.select([], [], [], 4.0)
    out.send("back")


def test_a_hub_held_in_a_long_c_call_does_not_take_the_other_node_for_lost(cluster) -> None:
    """While node 1's hub sits in a C call past the heartbeat timeout, its heartbeat thread
    reads the links, so node 0's heartbeats keep arriving and neither node is reported lost."""

    def main():
        out = csp_mp.Chan()
        go_node(1, _stuck_in_c, out)
        return out.recv(), runtime.num_goroutine()

    assert csp_mp.run(main, cluster=cluster.address) == ("back", 1)


def _stream(ch: csp_mp.Chan, tag: str, n: int, progress: csp_mp.Chan | None) -> None:
    """Send ``(tag, 0..n-1)`` into ``ch``; with ``progress``, say each one sent there too."""
    for i in range(n):
        ch.send((tag, i))
        if progress is not None:
            progress.send(i)


def _hold_twice(sem: csp_mp.Chan, out: csp_mp.Chan, turn: csp_mp.Chan) -> None:
    """(node 1) Take a slot of semaphore ``sem`` (a send) and say so; at ``turn``, take
    another."""
    sem.send("n1")
    out.send("holding one")
    turn.recv()
    sem.send("n2")  # the second slot of node 1
    out.send("holding two")


@pytest.mark.parametrize("by_select", [False, True])
def test_a_buffered_channel_as_a_semaphore_admits_no_more_holders_than_its_capacity(
        cluster, by_select) -> None:
    """Node 1's first send into node 0's Chan(2) leaves it a credit for the free slot. A
    sender of node 0 (a send, or a select's send case) finding room only in that slot waits
    until node 1 gives it back, and node 1's next send then waits for room: two slots never
    have three holders. Nobody frees one, so the run ends in a deadlock: node 0's send done,
    node 1's second one waiting."""

    def main():
        sem, out, turn = csp_mp.Chan(2), csp_mp.Chan(), csp_mp.Chan()
        go_node(1, _hold_twice, sem, out, turn)
        assert out.recv() == "holding one"
        if by_select:  # the second slot, node 1's credit recalled first
            assert csp_mp.select((sem.send, "m"), csp_mp.Chan().recv) == (0, None)
        else:
            sem.send("m")
        turn.send(None)
        return out.recv()  # a third holder of two slots would say so here

    with pytest.raises(csp_mp.DeadlockError) as info:
        csp_mp.run(main, cluster=cluster.address)
    dump = info.value.stack
    assert "return out.recv()" in dump, dump
    assert 'sem.send("n2")' in dump and "[chan send] on node 1" in dump, dump


def _send_tagged(ch: csp_mp.Chan, tag: str, n: int) -> None:
    for i in range(n):
        ch.send((tag, i))


def test_senders_on_both_nodes_into_a_small_buffer_deliver_each_value_once_in_order(
        cluster) -> None:
    """Two senders on each node fill node 0's Chan(2) faster than main drains it: node 0's
    senders keep finding room only in node 1's slots (recalled and given back, again and
    again), node 1's keep sending on credits and waiting. Every value arrives once, each
    sender's in order."""

    def main():
        ch = csp_mp.Chan(2)
        for tag in ("a", "b"):
            csp_mp.go_local(_send_tagged, ch, tag, 60)
        for tag in ("c", "d"):
            go_node(1, _send_tagged, ch, tag, 60)
        got: dict[str, list[int]] = {}
        for _ in range(240):
            tag, i = ch.recv()
            got.setdefault(tag, []).append(i)
            runtime.gosched()
        return got, len(ch)

    got, left = csp_mp.run(main, cluster=cluster.address)
    assert got == {tag: list(range(60)) for tag in "abcd"}
    assert left == 0


def test_streams_into_a_remote_buffered_channel_arrive_in_order_once(cluster) -> None:
    """Two goroutines of node 1 stream into a small buffered channel of node 0 (on credits)
    while one of node 0 competes for its room: each sender's values arrive once, in order."""

    def main():
        ch = csp_mp.Chan(8)
        for tag in ("a", "b"):
            go_node(1, _stream, ch, tag, 600, None)
        csp_mp.go_local(_stream, ch, "home", 600, None)
        got: dict[str, list[int]] = {"a": [], "b": [], "home": []}
        for k in range(1800):
            tag, i = ch.recv()
            got[tag].append(i)
            if k % 200 == 0:
                csp_mp.blocking(time.sleep, 0.02)  # let the buffer fill: puts wait for room
        return got, len(ch)

    got, left = csp_mp.run(main, cluster=cluster.address)
    assert got == {tag: list(range(600)) for tag in ("a", "b", "home")} and left == 0


def test_sends_into_a_full_remote_buffer_wait_for_room(cluster) -> None:
    """Credits are buffer slots: a node 1 sender fills a Chan(4) of node 0 and then waits."""
    from csp_mp import after

    def main():
        ch, progress = csp_mp.Chan(4), csp_mp.Chan(16)
        go_node(1, _stream, ch, "x", 6, progress)
        assert [progress.recv() for _ in range(4)] == [0, 1, 2, 3]
        full = len(ch)
        k, _ = csp_mp.select(progress.recv, after(0.3).recv)
        assert k == 1, "a send went past the buffer's capacity"
        first = ch.recv()
        fifth = progress.recv()  # room again: the fifth send completes
        rest = [ch.recv() for _ in range(5)]
        return full, first, fifth, rest

    full, first, fifth, rest = csp_mp.run(main, cluster=cluster.address)
    assert full == 4 and first == ("x", 0) and fifth == 4
    assert rest == [("x", i) for i in range(1, 6)]


def _send_after_close(ch: csp_mp.Chan, closed: csp_mp.Chan) -> None:
    ch.send(1)  # the first send asks for credits
    closed.recv()
    ch.send(2)  # on a credit: the home finds the channel closed


def test_a_send_on_credit_into_a_closed_channel_panics(cluster) -> None:
    def main():
        ch, closed = csp_mp.Chan(4), csp_mp.Chan()
        go_node(1, _send_after_close, ch, closed)
        assert ch.recv() == 1
        ch.close()
        closed.close()
        csp_mp.Chan().recv()  # until the panic ends the run

    with pytest.raises((csp_mp.Panic, csp_mp.ClosedChannelError)) as info:
        csp_mp.run(main, cluster=cluster.address)
    text = str(info.value) + "".join(getattr(info.value, "__notes__", ()))
    assert "closed" in text, text


def _make_sync(out: csp_mp.Chan) -> None:
    """(node 1) Make a WaitGroup, a Mutex and a counter, hand them to node 0."""
    out.send((csp_mp.WaitGroup(), csp_mp.Mutex(), csp_mp.atomic.Int64(5)))


def _work(wg: csp_mp.WaitGroup, mu: csp_mp.Mutex, counter) -> None:
    with mu:
        counter.add(1)
    wg.done()


def test_sync_objects_and_atomics_homed_on_another_node(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        go_node(1, _make_sync, out)
        wg, mu, counter = out.recv()
        assert isinstance(wg, csp_mp.WaitGroup) and isinstance(mu, csp_mp.Mutex)
        wg.add(10)
        for _ in range(5):
            csp_mp.go(_work, wg, mu, counter)
        for _ in range(5):
            go_node(1, _work, wg, mu, counter)
        wg.wait()
        assert mu.try_lock()
        mu.unlock()
        assert counter.compare_and_swap(15, 20)
        return counter.load()

    assert csp_mp.run(main, cluster=cluster.address) == 20


_PARKED = """
import sys
import csp_mp
from csp_mp._cluster.ship import go_node

def park(out):
    out.send(1)
    csp_mp.Chan().recv()

def main():
    out = csp_mp.Chan()
    go_node(1, park, out)
    out.recv()
    print("ready", flush=True)
    csp_mp.sleep(600)  # a timer, not a deadlock: only Ctrl-C ends the run

csp_mp.run(main, cluster=sys.argv[1])
"""


def test_ctrl_c_stops_every_node(cluster) -> None:
    import signal

    from cluster_helpers import marked_processes, wait_no_marked

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    p = subprocess.Popen([sys.executable, "-c", _PARKED, cluster.address], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        assert marked_processes()  # the control process and node 1's runtime
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert not wait_no_marked(10.0)


def _select_sender(xs: list, n: int, done: csp_mp.Chan) -> None:
    """(node 1) Send 0..n-1, each on whichever of ``xs`` a receiver takes it from."""
    for v in range(n):
        csp_mp.select(*((x.send, v) for x in xs))
    done.send("sent")


def _select_receiver(xs: list, n: int, out: csp_mp.Chan) -> None:
    """(node 1) Receive n values, each from whichever of ``xs`` has one."""
    got = [csp_mp.select(*(x.recv for x in xs))[1] for _ in range(n)]
    out.send(got)


def test_select_meets_select_on_channels_homed_elsewhere(cluster) -> None:
    """Both selects run on node 1; both unbuffered channels live on node 0, so neither select
    is at a channel's home: only their offers there can meet."""

    def main():
        xs = [csp_mp.Chan(), csp_mp.Chan()]
        done, out = csp_mp.Chan(), csp_mp.Chan()
        go_node(1, _select_receiver, xs, 40, out)
        go_node(1, _select_sender, xs, 40, done)
        return out.recv(), done.recv()

    got, done = csp_mp.run(main, cluster=cluster.address)
    assert sorted(got) == list(range(40)) and done == "sent"


def _hygiene(out: csp_mp.Chan) -> None:
    """(node 1) How its runtime process stands: niceness, Ray loaded, session and group."""
    parent = os.getppid()
    out.send((os.getpriority(os.PRIO_PROCESS, 0), "ray" in sys.modules,
              os.getsid(0) == os.getsid(parent), os.getpgid(0) == os.getpgid(parent)))


def test_node_runtimes_run_at_nice_0_in_their_agents_group_without_ray(cluster) -> None:
    def main():
        out = csp_mp.Chan()
        go_node(1, _hygiene, out)
        return out.recv()

    nice, ray_loaded, same_session, same_group = csp_mp.run(main, cluster=cluster.address)
    if os.geteuid() == 0:  # only a privileged process may lower its niceness from Ray's 15
        assert nice == 0
    assert not ray_loaded
    assert same_session and same_group  # fork+exec, no setsid: Ray's group kill reaches it


def _square(x: int) -> int:
    return x * x


def test_executor_and_map_in_a_cluster_run(cluster) -> None:
    def main():
        with csp_mp.futures.Executor(max_workers=4) as ex:
            futs = [ex.submit(_square, i) for i in range(20)]
            got = [f.result() for f in futs]
        return got, list(csp_mp.map(_square, range(20)))

    got, mapped = csp_mp.run(main, cluster=cluster.address)
    assert got == mapped == [i * i for i in range(20)]


def _job(i: int) -> int:
    _spin(100_000)
    if i == 7:
        raise ValueError("job 7")
    return i


def test_errgroup_and_contexts_in_a_cluster_run(cluster) -> None:
    from csp_mp import context, errgroup

    def main():
        g = errgroup.Group()
        for i in range(12):
            g.go(_job, i)
        with pytest.raises(ValueError, match="job 7"):
            g.wait()
        g2, ctx = errgroup.with_context(context.background())
        for i in range(6):
            g2.go(_job, i)
        g2.wait()
        ctx2, cancel = context.with_timeout(context.background(), 0.05)
        csp_mp.select(ctx2.done().recv)
        cancel()
        return type(ctx2.err()).__name__

    assert csp_mp.run(main, cluster=cluster.address) == "DeadlineExceeded"
