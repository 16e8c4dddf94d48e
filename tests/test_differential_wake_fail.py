"""A claimed waiter's wake-up whose ``deliver`` raises, on both paths.

Once a partner is claimed its operation has completed, so its wake-up must not be lost when the
process layer's ``deliver`` raises after the claim (a signal handler's ``KeyboardInterrupt``, a
``MemoryError``): it is tried once more, and the first exception is raised afterwards; when it
fails again, a ``RuntimeError`` says the wake-up was lost (never a silent hang). On the Python
path this is ``SharedChan.flush``; on the compiled core ``peers_wake`` (``c/wake.c``), whose
hand-off to another P goes through ``deliver`` while it is diverted. Each scenario runs on a
Python-path ``Fold`` and a compiled-core one (``folded.py``); the outcomes must agree.
"""

from __future__ import annotations

from typing import Any

import pytest
from folded import Fold
from test_differential_wake import _chans, _park_p1_recv, _wakes

from csp_mp._chan.proclayer import K_SENT, K_VALUE
from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")


def _failing_queue(fold: Fold, times: int) -> list[int]:
    """P0's queueing of wake-ups for P1 raises MemoryError its first ``times`` calls (before
    queueing anything); every wake-up goes through it (the compiled one diverted)."""
    p0 = fold.ps[0]
    real = p0._queue_wake
    calls: list[int] = []

    def queue(*args: Any) -> None:
        calls.append(args[1])
        if len(calls) <= times:
            raise MemoryError("queue_wake failed")
        real(*args)

    p0._queue_wake = queue  # type: ignore[method-assign]
    if p0.peers is not None:
        p0.peers.divert = True
    return calls


def _outcome(fold: Fold, op: Any, times: int) -> dict[str, Any]:
    calls = _failing_queue(fold, times)
    try:
        op()
    except BaseException as e:  # noqa: BLE001 - the outcome compared
        raised: tuple = (type(e).__name__, str(e).replace(str(1 << 40), "G"),
                         type(e.__cause__).__name__)
    else:
        raised = ()
    p0, p1 = fold.ps
    p0.flush_wakes()
    inbox = _wakes(p1.inbox_messages())
    fold.poll()
    return {"raised": raised, "calls": len(calls), "inbox": inbox,
            "p1": dict(fold.p1hub.results), "parked": fold.p1hub.parked()}


def test_hand_off_whose_deliver_fails_once_still_wakes(folds: tuple[Fold, Fold]) -> None:
    """The send raises the MemoryError; the receiver of P1 gets the value all the same."""
    out = []
    for fold in folds:
        ((a0, a1),) = _chans(fold, [0])
        _park_p1_recv(fold, a1, 0)
        out.append(_outcome(fold, lambda: a0.send(41), 1))  # noqa: B023
    py, nat = out
    assert py["raised"] == ("MemoryError", "queue_wake failed", "NoneType")
    assert py["calls"] == 2 and py["inbox"] == [(0, K_VALUE, True)]
    assert py["p1"] == {0: ("ok", (41, True))} and py["parked"] == []
    assert py == nat


def test_release_of_a_sender_whose_deliver_fails_once_still_wakes(
        folds: tuple[Fold, Fold]) -> None:
    """A receive that releases a parked sender of P1: the receive raises, the sender's send
    completes."""
    out = []
    for fold in folds:
        ((a0, a1),) = _chans(fold, [1])
        a0.send("first")
        assert fold.p1hub.go(0, lambda hub: a1._st.send("second", hub)) is not None  # noqa: B023
        out.append(_outcome(fold, a0.recv_ok, 1))
        assert a0.recv_ok() == ("second", True)  # moved into the buffer by the receive
    py, nat = out
    assert py["raised"][0] == "MemoryError" and py["inbox"] == [(0, K_SENT, False)]
    assert py["p1"] == {0: ("ok", None)} and py["parked"] == []
    assert py == nat


def test_wake_up_that_cannot_be_delivered_fails_loudly(folds: tuple[Fold, Fold]) -> None:
    """``deliver`` fails twice: a RuntimeError naming the lost wake-up, from the first error."""
    out = []
    for fold in folds:
        ((a0, a1),) = _chans(fold, [0])
        _park_p1_recv(fold, a1, 0)
        out.append(_outcome(fold, lambda: a0.send(41), 2))  # noqa: B023
        fold.p1hub.kill()  # its receiver stays parked: nothing will wake it
    py, nat = out
    assert py["raised"] == ("RuntimeError", "a wake-up for goroutine G of P 1 was lost: its wait "
                            "completed (claimed) and the wake-up could not be delivered",
                            "MemoryError")
    assert py["calls"] == 2 and py["inbox"] == [] and py["parked"] == [0]
    assert py == nat


def test_close_whose_first_deliver_fails_still_wakes_every_waiter(
        folds: tuple[Fold, Fold]) -> None:
    """A close waking three receivers of P1: the first's deliver fails once; all three wake,
    and the close raises the MemoryError afterwards."""
    out = []
    for fold in folds:
        ((a0, a1),) = _chans(fold, [0])
        for key in range(3):
            _park_p1_recv(fold, a1, key)
        out.append(_outcome(fold, a0.close, 1))
    py, nat = out
    assert py["raised"][0] == "MemoryError" and py["calls"] == 4
    assert py["p1"] == {k: ("ok", (None, False)) for k in range(3)} and py["parked"] == []
    assert py == nat
