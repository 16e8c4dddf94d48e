"""Objects other nodes no longer hold stop being exported: a reply channel made per request
and sent to another node costs its home nothing once that node dropped it, also when the
handle was passed on to a third node first."""

from __future__ import annotations

import gc
import time

import pytest

import csp_mp
from csp_mp import runtime
from csp_mp._cluster.ship import go_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _serve(inbox: csp_mp.Chan, n: int) -> None:
    """(node 1) Answer n requests, each on the reply channel it came with."""
    for _ in range(n):
        v, reply = inbox.recv()
        reply.send(v * 2)


def _settled(node: int, key: str, most: int) -> int:
    """(node 0's main) Node ``node``'s ``metrics()[key]`` once it is at most ``most`` (a
    dropped handle is released after ``refs.RELEASE_AFTER``, by a message), or what it is
    after a deadline."""
    deadline = time.monotonic() + 10
    while True:
        got = runtime.metrics()["nodes"][node][key]
        if got <= most or time.monotonic() > deadline:
            return got
        csp_mp.sleep(0.01)


def test_a_reply_channel_per_request_is_released_by_the_node_it_went_to(cluster) -> None:
    n = 300

    def main():
        inbox = csp_mp.Chan()
        go_node(1, _serve, inbox, n)
        got = []
        for i in range(n):
            reply = csp_mp.Chan(1)  # a new channel each time, sent to node 1 with the request
            inbox.send((i, reply))
            got.append(reply.recv())
        del reply
        return got, _settled(0, "exported", 1), _settled(1, "handles", 1)

    got, exported, handles = csp_mp.run(main, cluster=cluster.address)
    assert got == [2 * i for i in range(n)]
    assert exported <= 1, exported  # the inbox at most, not one per request
    assert handles <= 1, handles


def _make_and_wait(out: csp_mp.Chan) -> None:
    """(node 1) Make a channel, hand it to node 0, report what arrives on it."""
    ch = csp_mp.Chan()
    out.send(ch)
    out.send(("node 1 got", ch.recv()))


def _take_then_send(out: csp_mp.Chan) -> None:
    """(node 2) Hand node 0 a relay channel; take a channel from it, and when told, send on
    that channel."""
    relay, go_ahead = csp_mp.Chan(1), csp_mp.Chan()
    out.send((relay, go_ahead))
    ch = relay.recv()
    go_ahead.recv()
    ch.send("from node 2")


def test_a_handle_passed_on_to_a_third_node_keeps_its_object(cluster, third_node) -> None:
    """Node 0 passes node 1's channel on to node 2 and drops its own handle; node 1 has
    handled that release before node 2 uses the channel: node 1 kept it for node 2 (node 0
    lent it), and once node 2 dropped it too, node 1 holds nothing for others."""

    def main():
        assert runtime.num_nodes() == 3
        out, out2 = csp_mp.Chan(), csp_mp.Chan()
        go_node(1, _make_and_wait, out)
        go_node(2, _take_then_send, out2)
        ch = out.recv()
        relay, go_ahead = out2.recv()
        relay.send(ch)
        released = runtime.metrics()["nodes"][0]["released"]
        del ch
        gc.collect()
        deadline = time.monotonic() + 10
        while runtime.metrics()["nodes"][0]["released"] == released:  # not sent yet
            assert time.monotonic() < deadline, "node 0 never released its handle"
            csp_mp.sleep(0.01)
        runtime.metrics()  # a round trip to node 1, behind node 0's release there
        go_ahead.send(None)
        return out.recv(), _settled(1, "exported", 0)

    got, exported = csp_mp.run(main, cluster=cluster.address, procs=1)
    assert got == ("node 1 got", "from node 2")
    assert exported == 0, exported
