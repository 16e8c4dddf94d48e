"""The wake-up protocol across Ps on both paths: WAKE messages, ``P_SENT``/``P_HANDLED``,
``P_OWES`` and the order of wake-ups in an inbox.

A wake-up for a goroutine of another P is owed by this process until it is in that P's inbox:
while it is owed, ``P_OWES`` says so (P replacement trusts it, ``_mp/replace.py``), and the
wake-ups of one P reach another in the order they were made (``Broker``: "while [the outbox] is
not empty, every new message queues behind it"). On the Python path every wake-up goes through
``Broker._queue_wake``; on the compiled core the channel hand-off writes it itself
(``c/wake.c``). Each scenario runs on a Python-path ``Fold`` and a compiled-core one
(``folded.py``), and what P1 receives, and the words, must be the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from folded import Fold

from csp_mp import Chan
from csp_mp._chan.proclayer import K_CLOSED_RECV, K_SENT, K_VALUE
from csp_mp._chan.shared import SharedChan
from csp_mp._mp import ctx as C
from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")


def _chans(fold: Fold, caps: list[int]) -> list[tuple[Chan, Chan]]:
    """Channels with a handle on each P: (P0's, P1's)."""
    p0, p1 = fold.ps
    out = []
    for cap in caps:
        st = SharedChan.create(p0, cap)
        st.add_refs(1)
        a, b = Chan(cap), Chan(cap)
        a._st = st
        b._st = SharedChan.attach(p1, st.off)
        out.append((p0.adopt(a), p1.adopt(b)))
    return out


def _wakes(msgs: list[tuple]) -> list[tuple]:
    """WAKE messages as (goroutine key, wake kind, has data), gids made relative to P1's
    first."""
    out = []
    for m in msgs:
        assert m[0] == C.M_WAKE
        out.append((m[1] - (1 << 40), m[5], m[6] is not None))
    return out


def _owed_or_delivered(fold: Fold, n: int) -> None:
    """Every one of the ``n`` wake-ups P0 made for P1 is flagged as owed or is in P1's inbox."""
    p0, p1 = fold.ps
    queued = len(p0.wakes_out) + len(p0.outbox)
    in_inbox = len(p1.inbox_messages())
    assert queued + in_inbox == n, (fold.kind, queued, in_inbox)
    if queued:
        assert p0.ctx.pload(0, C.P_OWES) == 1, f"{fold.kind}: wake-ups queued, P_OWES is 0"


def _run(folds: tuple[Fold, Fold], scenario: Callable[[Fold], int]) -> list[dict[str, Any]]:
    """Run ``scenario`` on both folds; what P1's inbox holds once P0 has flushed, and the
    words, for each."""
    out = []
    for fold in folds:
        n = scenario(fold)
        _owed_or_delivered(fold, n)
        p0, p1 = fold.ps
        if p0.wakes_out:
            p0.flush_wakes()
        if p0.outbox:
            p0.flush_outbox()
        inbox = _wakes(p1.inbox_messages())
        words = {k: v for k, v in fold.words().items() if k.startswith("p0.")}
        fold.poll()  # P1 takes them
        out.append({"inbox": inbox, "words": words, "p1": dict(fold.p1hub.results),
                    "after": fold.words()})
    return out


def _park_p1_recv(fold: Fold, ch1: Chan, key: int) -> None:
    assert fold.p1hub.go(key, lambda hub: ch1._st.recv(hub)) is not None
    assert key in fold.p1hub.parked()


def test_hand_off_to_another_p_agrees(folds: tuple[Fold, Fold]) -> None:
    """A value handed to a parked receiver of P1 by a blocking send (the compiled core's
    hand-off), and by a select with default (the Python path on both)."""
    def scenario(fold: Fold) -> int:
        (a0, a1), (b0, b1) = _chans(fold, [0, 0])
        _park_p1_recv(fold, a1, 0)
        _park_p1_recv(fold, b1, 1)
        a0.send(41)
        from csp_mp import default, select
        assert select((b0.send, 42), default) == (0, None)
        return 2

    py, nat = _run(folds, scenario)
    assert py["inbox"] == [(0, K_VALUE, True), (1, K_VALUE, True)]
    assert py == nat


def test_sender_released_by_receive_agrees(folds: tuple[Fold, Fold]) -> None:
    """A sender of P1 parked on a full buffered channel, released by P0's receive (the value
    moves into the buffer: the compiled core's rotate)."""
    def scenario(fold: Fold) -> int:
        ((a0, a1),) = _chans(fold, [1])
        a0.send("first")
        assert fold.p1hub.go(0, lambda hub: a1._st.send("second", hub)) is not None
        assert a0.recv_ok() == ("first", True)
        return 1

    py, nat = _run(folds, scenario)
    assert py["inbox"] == [(0, K_SENT, False)]
    assert py == nat


def test_hand_off_queues_behind_owed_wakes(folds: tuple[Fold, Fold]) -> None:
    def scenario(fold: Fold) -> int:
        (a0, a1), (b0, b1) = _chans(fold, [0, 0])
        _park_p1_recv(fold, a1, 0)
        _park_p1_recv(fold, b1, 1)
        a0.close()
        b0.send("after the close")
        return 2

    py, nat = _run(folds, scenario)
    assert py["inbox"] == [(0, K_CLOSED_RECV, False), (1, K_VALUE, True)]
    assert nat["inbox"] == py["inbox"]
    assert py == nat


def test_close_wakes_agree(folds: tuple[Fold, Fold]) -> None:
    """A close waking receivers and senders of P1, and a select of P1 over two channels."""
    def scenario(fold: Fold) -> int:
        from csp_mp._chan.chan import _parse, _select_shared

        (a0, a1), (b0, b1), (c0, c1), (d0, d1) = _chans(fold, [0, 0, 0, 0])
        _park_p1_recv(fold, a1, 0)
        assert fold.p1hub.go(1, lambda hub: d1._st.send("x", hub)) is not None
        cases = [_parse(0, b1.recv_ok), _parse(1, c1.recv_ok)]
        assert fold.p1hub.go(2, lambda hub: _select_shared(hub, cases, [0, 1], -1)) is not None
        assert fold.p1hub.parked() == [0, 1, 2]
        a0.close()
        d0.close()
        c0.send("to the select")
        return 3

    py, nat = _run(folds, scenario)
    assert sorted(py["p1"]) == [0, 1, 2]
    for r in (py, nat):  # the order is test_hand_off_queues_behind_owed_wakes's
        r["inbox"].sort()
    assert py == nat
