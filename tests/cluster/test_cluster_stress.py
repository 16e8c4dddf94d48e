"""Exactly-once across nodes under stress: senders and receivers on both nodes, selecting over
a buffered channel homed on node 0 and an unbuffered one homed on node 1, round after round."""

from __future__ import annotations

import pytest

import csp_mp
from csp_mp import runtime
from csp_mp._cluster.ship import go_node

pytestmark = [pytest.mark.cluster, pytest.mark.stress, pytest.mark.timeout(180)]

ROUNDS = 6
N = 60


def _send_both(a: csp_mp.Chan, b: csp_mp.Chan, tag: str, n: int, done: csp_mp.Chan) -> None:
    """Send (tag, 0..n-1), each on whichever of ``a`` and ``b`` takes it first."""
    for i in range(n):
        csp_mp.select((a.send, (tag, i)), (b.send, (tag, i)))
    done.send(tag)


def _recv_both(a: csp_mp.Chan, b: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """Receive from ``a`` and ``b`` until both are closed; report (channel, value) in order."""
    cases = [a.recv_ok, b.recv_ok]
    got = []
    while cases[0] is not None or cases[1] is not None:
        live = [c if c is not None else csp_mp.nilchan.recv_ok for c in cases]
        k, (v, ok) = csp_mp.select(*live)
        if ok:
            got.append((k, v))
        else:
            cases[k] = None
    out.send((runtime.current_node(), got))


def _make_b(out: csp_mp.Chan) -> None:
    out.send(csp_mp.Chan())  # unbuffered, homed on node 1


def test_senders_and_receivers_on_both_nodes_take_each_value_once(cluster) -> None:
    def main():
        rounds = []
        for _ in range(ROUNDS):
            made = csp_mp.Chan()
            go_node(1, _make_b, made)
            a, b = csp_mp.Chan(3), made.recv()
            done, out = csp_mp.Chan(2), csp_mp.Chan(2)
            csp_mp.go_local(_recv_both, a, b, out)
            go_node(1, _recv_both, a, b, out)
            csp_mp.go_local(_send_both, a, b, "s0", N, done)
            go_node(1, _send_both, a, b, "s1", N, done)
            done.recv()
            done.recv()
            a.close()
            b.close()
            rounds.append(dict(out.recv() for _ in range(2)))
        return rounds

    for per_node in csp_mp.run(main, cluster=cluster.address, procs=1):
        assert sorted(per_node) == [0, 1]
        values = [v for got in per_node.values() for _, v in got]
        assert sorted(values) == sorted((t, i) for t in ("s0", "s1") for i in range(N))
        for got in per_node.values():  # each sender's values through one channel in order
            for k in (0, 1):
                for tag in ("s0", "s1"):
                    seq = [i for c, (t, i) in got if c == k and t == tag]
                    assert seq == sorted(seq), (k, tag, seq)
