"""The wake-up protocol across Ps on both paths: WAKE messages, ``P_SENT``/``P_HANDLED``,
``P_OWES`` and the order of wake-ups in an inbox.

A wake-up for a goroutine of another P is owed by this process until it is in that P's inbox:
while it is owed, ``P_OWES`` says so (P replacement trusts it, ``_mp/replace.py``), and the
wake-ups of one P reach another in the order they were made (``Broker``: "while [the outbox] is
not empty, every new message queues behind it"). On the Python path every wake-up goes through
``Messages.queue_wake``; on the compiled core the channel hand-off writes it itself
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
from csp_mp._chan.shared_native import state_class
from csp_mp._mp import ctx as C
from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")


def _chans(fold: Fold, caps: list[int]) -> list[tuple[Chan, Chan]]:
    """Channels with a handle on each P: (P0's, P1's)."""
    p0, p1 = fold.ps
    out = []
    for cap in caps:
        st = state_class(p0.arena).create(p0, cap)
        st.add_refs(1)
        a, b = Chan(cap), Chan(cap)
        a._st = st
        b._st = state_class(p1.arena).attach(p1, st.off)
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


def _owes_watched(fold: Fold) -> list[tuple[str, int]]:
    """P0's ``P_OWES`` word at each claim of a waiter of P1 made through P0's process layer
    (``claim``, ``plain_live``: the Python hand-off and every select) and at each wake-up
    queued for P1 (``_queue_wake``: the Python hand-off's, and the compiled core's once
    diverted to the process layer), in order, as (event, word)."""
    p0 = fold.ps[0]
    seen: list[tuple[str, int]] = []

    def watched(name: str, fn: Callable[..., Any], p_arg: int) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if args[p_arg] != p0.p:
                seen.append((name, p0.ctx.pload(0, C.P_OWES)))
            return fn(*args)
        return call

    p0.claim = watched("claim", p0.claim, 0)
    p0.plain_live = watched("claim", p0.plain_live, 0)
    p0._queue_wake = watched("queue", p0._queue_wake, 0)  # type: ignore[method-assign]
    if p0.peers is not None:  # every compiled hand-off's wake-up through the process layer
        p0.peers.divert = True
    return seen


def _owes_steps(fold: Fold) -> list[tuple[str, dict[str, int], list[tuple[str, int]]]]:
    """P0's hand-offs to waiters of P1, one step each: (step, P0's words after it, what
    ``_owes_watched`` saw during it)."""
    from csp_mp import default, select
    from csp_mp._chan.chan import _parse, _select_shared

    (a0, a1), (b0, b1), (c0, c1), (d0, d1) = _chans(fold, [0, 0, 0, 0])
    seen = _owes_watched(fold)
    p0 = fold.ps[0]
    _park_p1_recv(fold, a1, 0)
    cases = [_parse(0, b1.recv_ok), _parse(1, c1.recv_ok)]
    assert fold.p1hub.go(1, lambda hub: _select_shared(hub, cases, [0, 1], -1)) is not None
    assert fold.p1hub.go(2, lambda hub: d1._st.send("from P1", hub)) is not None
    steps = []

    def step(name: str) -> None:
        words = {k: v for k, v in fold.words().items() if k.startswith("p0.")}
        steps.append((name, words, list(seen)))
        seen.clear()

    a0.send("plain")  # the compiled hand-off (a plain record); Python's _pop_live
    step("hand-off to a parked receiver")
    assert select((c0.send, "select"), default) == (0, None)  # claims P1's token
    step("select wins P1's select")
    assert d0.recv_ok() == ("from P1", True)  # a parked sender released (K_SENT)
    step("receive from a parked sender")
    p0.flush_wakes()
    step("flushed")
    # b's queue holds the select's record, whose token c0 won: the claim fails, and nothing
    # is owed afterwards
    assert select((b0.send, "late"), default) == (1, None)
    step("claim lost to a completed select")
    fold.poll()
    assert sorted(fold.p1hub.results) == [0, 1, 2], fold.kind
    return steps


def test_owes_is_set_before_each_claim_on_both_paths(folds: tuple[Fold, Fold]) -> None:
    """``P_OWES`` reads 1 from before a claim of another P's waiter until its wake-up is in an
    inbox, and 0 again after a claim that won nobody: on the Python path (``_pop_live``'s
    ``owe``) as on the compiled core (``wake_prepare``). With the compiled hand-off's wake-ups
    diverted to the process layer, both paths leave the same words after every step."""
    py, nat = (_owes_steps(fold) for fold in folds)
    for name, _, seen in py:
        if name != "flushed":
            assert seen and all(owes == 1 for _, owes in seen), (name, seen)
    for name, _, seen in nat:  # the compiled hand-off claims in C: only its queueing is seen
        assert all(owes == 1 for _, owes in seen), (name, seen)
    assert [s[:2] for s in py] == [s[:2] for s in nat]
    assert py[0][1]["p0.owes"] == 1 and py[-1][1]["p0.owes"] == 0
    assert [[e for e in s[2] if e[0] == "queue"] for s in py] == \
        [[e for e in s[2] if e[0] == "queue"] for s in nat]


def _owes_over_a_batch(fold: Fold) -> tuple[list[tuple[str, int]], int]:
    """A close of a channel with more receivers of P1 parked than one batch of wake-ups:
    ``P_OWES`` at each claim and queued wake-up, and after the hub's next pass."""
    from csp_mp._mp.messages import WAKE_BATCH

    (a0, a1), = _chans(fold, [0])
    n = WAKE_BATCH + 8
    for key in range(n):
        _park_p1_recv(fold, a1, key)
    seen = _owes_watched(fold)
    a0.close()
    during = list(seen)
    fold.ps[0].flush_wakes()  # the hub's next pass (poll: owes_kept): the batch's word goes
    fold.poll()
    assert sorted(fold.p1hub.results) == list(range(n)), fold.kind
    return during, fold.ps[0].ctx.pload(0, C.P_OWES)


def test_owes_holds_across_a_batch_flush_in_one_close(folds: tuple[Fold, Fold]) -> None:
    """A flush of WAKE_BATCH wake-ups in the middle of one close sends them but keeps P_OWES
    set for the claims after it; the next pass clears it."""
    for fold in folds:
        during, after = _owes_over_a_batch(fold)
        assert all(owes == 1 for _, owes in during), (fold.kind, during)
        assert after == 0, fold.kind
