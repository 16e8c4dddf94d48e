"""What shared objects hold in the arena, and for how long: values, wait records, wake-ups.

Each test crosses processes (``procs=2``): the objects are promoted into the arena by handing
them to a goroutine on P1.
"""

from __future__ import annotations

import mp_helpers as H
import pytest
from mp_helpers import run

import csp_mp
from csp_mp import Chan, ClosedChannelError, default, go_local, runtime, select
from csp_mp._chan.proclayer import K_SENT
from csp_mp._chan.shared import SharedChan
from csp_mp._chan.shared_native import state_class

BIG = b"x" * 200_000  # above the codec's out-of-band threshold: its own arena block
MIB = 1 << 20


def _in_use() -> int:
    return int(runtime.metrics()["arena_bytes_in_use"])


def _select_recv(a: Chan, b: Chan, out: Chan) -> None:
    out.send(select(a.recv, b.recv))


def test_select_frees_the_values_of_send_cases_it_did_not_take() -> None:
    def main() -> int:
        ch, ready, closed = Chan(), Chan(1), Chan(1)  # nobody ever receives on ch
        H.go_on(1, H.noop, ch, ready, closed)
        assert ch._st.shared and ready._st.shared and closed._st.shared
        closed.close()
        before = _in_use()
        for _ in range(50):
            assert select((ch.send, BIG), default) == (1, None)  # default taken
            ready.send(1)
            assert select((ch.send, BIG), ready.recv) == (1, 1)  # another case won
            with pytest.raises(ClosedChannelError):  # a case raised
                select((ch.send, BIG), (closed.send, 1))
        return _in_use() - before

    assert run(main, 2) < MIB


def test_select_loser_values_are_freed_once_the_select_completes() -> None:
    def main() -> tuple[int, int]:
        a, b, out = Chan(), Chan(), Chan(1)
        H.go_on(1, H.noop, a, b)
        before = _in_use()
        for i in range(20):
            go_local(_send_or_recv, a, b, out)
            H.wait_until(lambda: b.stats().receivers_waiting == 1, "the select parked")
            b.send(i)
            assert out.recv() == (1, i)
        leaked = _in_use() - before
        return leaked, a.stats().senders_waiting

    leaked, waiting = run(main, 2)
    assert (waiting, leaked < MIB) == (0, True)


def _send_or_recv(a: Chan, b: Chan, out: Chan) -> None:
    out.send(select((a.send, BIG), b.recv))


def test_shared_stats_count_only_live_waiters() -> None:
    def main() -> tuple[int, int]:
        a, b, out = Chan(), Chan(), Chan(1)
        H.go_on(1, H.noop, a, b)
        go_local(_select_recv, a, b, out)
        H.wait_until(lambda: a.stats().receivers_waiting == 1, "the select parked")
        b.send(7)  # the select takes b: its record on a is dead
        assert out.recv() == (1, 7)
        return a.stats().receivers_waiting, b.stats().receivers_waiting

    assert run(main, 2) == (0, 0)


def test_a_lost_wake_up_is_reported_as_an_internal_error() -> None:
    def main() -> None:
        from csp_mp._proc import proc
        broker = proc.broker
        broker.deliver(broker.p, 10**9, -1, 0, 0, K_SENT, None, None)  # no such goroutine
        Chan().recv()

    with pytest.raises(csp_mp.InternalError, match="wake-up for goroutine 1000000000"):
        run(main, 2)


def test_a_destroyed_shared_channel_gives_back_all_its_memory() -> None:
    def main() -> int:
        from csp_mp._proc import proc
        broker = proc.broker
        arena = broker.arena
        before = arena.free_bytes()
        st = state_class(broker.arena).create(broker, 4)
        wakes: list = []
        with st.lock:
            for v in (BIG, 1, "x", BIG):
                assert st.try_send_l(st.encode(v), wakes)
            for _ in range(100):  # parked senders' values; the send queue grows several times
                st.enqueue_l(True, st.encode(BIG), 10**9, -1, 0, 0)
        assert wakes == []
        off = st.off
        st.destroy()
        with pytest.raises(ValueError, match="no shared channel"):
            SharedChan(broker, off)
        return before - arena.free_bytes()

    assert run(main, 2) == 0
