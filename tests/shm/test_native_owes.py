"""The compiled hand-off keeps this P's P_OWES word as the Python path's broker does
(replace.py): set from before the claim until the wake-up is in an inbox or queued by the
process layer, and a wake-up goes behind the process layer's queued messages."""

from __future__ import annotations

import pytest

from csp_mp._shm import native
from csp_mp._shm.arena import Arena

from .test_native_core import _chan_block, _ops, _park, _TwoPs, _wakes, _word
from .test_native_core import carena as carena  # the fixture, on the compiled core

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

RECVQ, SENDQ = 5, 6


def _setup(carena: Arena, cap: int = 0, divert: bool = False) -> tuple[_TwoPs, int, int, object]:
    ps = _TwoPs(carena)
    owes = _word(carena)
    off = _chan_block(carena, cap=cap)
    seen: list[int] = []

    def deliver(*args: object) -> None:  # what the process layer sees: the word, then
        seen.append(carena.core.load(owes))
        ps.local.append(args)

    peers = ps.peers(p=0, owes_off=owes, deliver=deliver)
    peers.divert = divert  # type: ignore[attr-defined]
    ops = _ops(carena, off, peers)
    ps.seen = seen  # type: ignore[attr-defined]
    return ps, owes, off, ops


def test_a_direct_hand_off_leaves_nothing_owed(carena: Arena) -> None:
    ps, owes, off, ops = _setup(carena)
    _park(carena, off, RECVQ, (1, 42, -1, 0, 0, None))
    assert ops.send(5) is True
    assert len(_wakes(ps, 1)) == 1 and ps.local == []
    assert carena.core.load(owes) == 0


def test_a_wake_up_handed_to_the_process_layer_is_owed_when_it_gets_it(carena: Arena) -> None:
    ps, owes, off, ops = _setup(carena, divert=True)
    _park(carena, off, RECVQ, (1, 42, -1, 0, 0, None))
    assert ops.send(5) is True
    assert ps.seen == [1]  # type: ignore[attr-defined]
    assert _wakes(ps, 1) == []
    assert carena.core.load(owes) == 1  # the process layer queued it: it clears the word


def test_a_local_wake_up_owes_nothing_afterwards(carena: Arena) -> None:
    ps, owes, off, ops = _setup(carena)
    _park(carena, off, RECVQ, (0, 7, -1, 0, 0, None))  # a goroutine of this P
    assert ops.send(5) is True
    assert ps.seen == [1] and len(ps.local) == 1  # type: ignore[attr-defined]
    assert carena.core.load(owes) == 0


@pytest.mark.parametrize("cap", [0, 1])
def test_a_wake_up_goes_behind_queued_messages(carena: Arena, cap: int) -> None:
    """With P_OWES set (messages queued in the process layer) the hand-off does not overtake
    them: it goes through deliver, and the word stays set."""
    ps, owes, off, ops = _setup(carena, cap=cap)
    carena.core.store(owes, 1)
    if cap:
        assert ops.send(1) is True  # a full buffer, and a sender parked behind it
    from csp_mp._shm.codec import encode

    _park(carena, off, SENDQ, (1, 42, -1, 0, 0, encode(2)))
    assert ops.recv() == (1 if cap else 2)
    assert _wakes(ps, 1) == [] and len(ps.local) == 1
    assert carena.core.load(owes) == 1


def test_a_claim_lost_to_another_select_owes_nothing(carena: Arena) -> None:
    ps, owes, off, ops = _setup(carena)
    ps.token(1, 2, gen=7, state=2)  # that select already completed
    _park(carena, off, RECVQ, (1, 42, 2, 7, 0, None))
    assert ops.send(5) is False
    assert carena.core.load(owes) == 0 and ps.local == []
