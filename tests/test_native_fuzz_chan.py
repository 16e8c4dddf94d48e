"""The compiled core's channel fast paths, wake-ups, doorbells and regions under misuse and
corrupt arena words: each case gets the exception it names (type and message) or the corrected
outcome, never a crash or a hang.

Each finding's cases run in a child interpreter (one per group, with a timeout), as in
``test_native_fuzz.py``, whose ``World`` (a fresh arena with a channel block, rings, a doorbell
and token words) they use: a crash or a hang is a failed test naming its case. The child prints
``case NAME`` before a case and ``ok NAME`` or ``failed NAME: ...`` after it.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from csp_mp._shm import layout as L
from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

W = L.WORD


def _world() -> Any:
    from test_native_fuzz import World

    return World()


def _raises(exc: type[BaseException], fragment: str, fn: Callable[[], Any]) -> BaseException:
    try:
        got = fn()
    except exc as e:
        assert fragment in str(e), f"{type(e).__name__}: {e!r} lacks {fragment!r}"
        return e
    raise AssertionError(f"returned {got!r}, wanted {exc.__name__}({fragment!r})")


def _record(p: int, gid: int, slot: int, gen: int, case: int = 0, value: bytes | None = None
            ) -> bytes:
    return struct.pack(L.REC_FORMAT, p, gid, slot, gen, case, value is not None) + (value or b"")


def _word(w: Any, off: int, i: int) -> int:
    return int(w.r.load(off + W * i))


def _token(w: Any, p: int, slot: int) -> int:
    return w.tok + (p * 8 + slot) * W


# ---- 1. pop_live over a wait queue whose tail no head position reaches

def _unreachable_tail(w: Any) -> None:
    off = w.chan_block(cap=0)
    rq = _word(w, off, L.W_RECVQ)
    cap = _word(w, rq, L.RW_CAP)
    data = rq + L.RING_HEADER
    rec = _record(1, 42, 0, 5)  # P1's token 0 is not WAITING: a dead record, dropped
    pos = 0
    while pos + 8 + len(rec) <= cap:
        w.r.store(data + pos, L.F_INLINE << L.KIND_SHIFT | len(rec))
        for i in range(0, len(rec), 8):
            w.r.store(data + pos + 8 + i, struct.unpack_from("<Q", rec, i)[0])
        pos += 8 + len(rec)
    w.r.store(data + pos, L.F_WRAP << L.KIND_SHIFT)
    w.r.store(rq + L.RING_HEAD_LINE * L.LINE, 0)
    w.r.store(rq + L.RING_TAIL_LINE * L.LINE, 1 << L.POS_BITS | 8)  # not a frame's start
    w.r.store(off + W * L.W_NRECV, 1)
    lock = _word(w, off, L.W_LOCK)
    _raises_corrupt_queue(lambda: w.ops(off, w.peers()).send(1))
    assert w.r.lock_owner(lock) == 0, "the channel lock was not given back"


def _raises_corrupt_queue(fn: Callable[[], Any]) -> None:
    """A wait queue whose tail no frame reaches: the ring's own check of its head and tail
    words refuses it (ring.c), or else pop_live's bound of one round of the ring (chan.c)."""
    try:
        got = fn()
    except ValueError as e:
        assert "tail" in str(e) and ("corrupt ring" in str(e) or "never reached" in str(e)), e
        return
    raise AssertionError(f"returned {got!r}, wanted ValueError")


def _unreachable_tail_recv(w: Any) -> None:
    off = w.chan_block(cap=0)
    sq = _word(w, off, L.W_SENDQ)
    cap = _word(w, sq, L.RW_CAP)
    rec = _record(1, 42, 0, 5, value=b"\x01")
    n = 0
    while w.r.ring_try_put(sq, rec) == 1:
        n += 1
    assert n > 1
    head = int(w.r.load(sq + L.RING_HEAD_LINE * L.LINE))
    w.r.store(sq + L.RING_TAIL_LINE * L.LINE, (head + (1 << L.POS_BITS) + 8) % (1 << 64))
    w.r.store(off + W * L.W_NSEND, n)
    assert cap > 0
    _raises_corrupt_queue(lambda: w.ops(off, w.peers()).recv_data())
    assert w.r.lock_owner(_word(w, off, L.W_LOCK)) == 0


# ---- 2. recv_rotate_locked's error path

def _rotate_bad_buffer_ring(w: Any, decode: bool) -> None:
    off = w.chan_block(cap=2)
    w.r.store(off + W * L.W_NSEND, 1)
    w.r.store(off + W * L.W_COUNT, 1)
    w.r.store(off + W * L.W_BUF, 8)  # not a ring
    ops = w.ops(off, w.peers())
    e = _raises(ValueError, "arena offset 8",
                lambda: ops.recv() if decode else ops.recv_data())
    assert type(e) is ValueError  # not SystemError: no result returned with an error set
    assert w.r.lock_owner(_word(w, off, L.W_LOCK)) == 0


# ---- 3. a wake-up after a won claim whose deliver callback raises

def _parked_receiver(w: Any, slot: int = 1, gen: int = 5) -> int:
    off = w.chan_block(cap=0)
    w.r.store(_token(w, 0, slot), gen << L.TOKEN_GEN_SHIFT | L.T_WAITING)
    assert w.r.ring_try_put(_word(w, off, L.W_RECVQ), _record(0, 42, slot, gen)) == 1
    w.r.store(off + W * L.W_NRECV, 1)
    return off


def _deliver_failing(times: int, exc: BaseException) -> tuple[Callable[..., None], list]:
    calls: list[tuple] = []

    def deliver(*args: Any) -> None:
        calls.append(args)
        if len(calls) <= times:
            raise exc
    return deliver, calls


def _wake_fails_once(w: Any, exc: BaseException) -> None:
    import msgspec

    off = _parked_receiver(w)
    deliver, calls = _deliver_failing(1, exc)
    ops = w.ops(off, w.peers(deliver=deliver))
    _raises(type(exc), str(exc), lambda: ops.send(123))
    assert len(calls) == 2, calls  # tried again: the claimed receiver is woken
    p, gid, slot, gen, case, kind, data, chan_off, obj = calls[1]
    assert (p, gid, slot, gen, kind, chan_off, obj) == (0, 42, 1, 5, L.K_VALUE, off, 123)
    assert msgspec.msgpack.decode(data) == 123  # the woken receiver gets its value
    assert w.r.load(_token(w, 0, 1)) == 5 << L.TOKEN_GEN_SHIFT | L.T_DONE
    assert _word(w, off, L.W_NRECV) == 0
    assert w.r.lock_owner(_word(w, off, L.W_LOCK)) == 0


def _wake_fails_always(w: Any) -> None:
    off = _parked_receiver(w)
    deliver, calls = _deliver_failing(2, MemoryError("deliver failed"))
    ops = w.ops(off, w.peers(deliver=deliver))
    e = _raises(RuntimeError, "wake-up for goroutine 42 of P 0 was lost", lambda: ops.send(7))
    assert isinstance(e.__cause__, MemoryError), repr(e.__cause__)
    assert len(calls) == 2


def _wake_fails_once_sender(w: Any) -> None:
    """A receive that released a parked sender (K_SENT): the sender is woken on the retry."""
    off = w.chan_block(cap=0)
    w.r.store(_token(w, 0, 2), 9 << L.TOKEN_GEN_SHIFT | L.T_WAITING)
    assert w.r.ring_try_put(_word(w, off, L.W_SENDQ), _record(0, 43, 2, 9, value=b"\x05")) == 1
    w.r.store(off + W * L.W_NSEND, 1)
    deliver, calls = _deliver_failing(1, MemoryError("deliver failed"))
    _raises(MemoryError, "deliver failed", lambda: w.ops(off, w.peers(deliver=deliver)).recv())
    assert [c[:6] for c in calls] == [(0, 43, 2, 9, 0, L.K_SENT)] * 2


# ---- 4. chan_word_if's bound at the top of the offsets

def _attach_overflow(w: Any) -> None:
    o = (1 << 63) - 8

    class St:
        pass

    class Ch:
        pass

    live = w.zeros(1)
    hs = w.core_mod.Handles(w.r, {}, {}, [], {o: St()}, {}, 16, {}, 1, 16,
                            lambda s: (o, 7, True), lambda ch, st, cap: Ch(),
                            lambda *a: None, live)
    assert hs.attach_new(o.to_bytes(8, "little")) is None
    o2 = w.size - L.CHAN_WORDS * W + 8  # the block would run past the arena's end
    assert hs.attach_new(o2.to_bytes(8, "little")) is None


# ---- 5. chan_reopen's checks

def _retired(w: Any) -> int:
    off = w.chan_block(cap=2)
    assert w.r.chan_retire(off) is True
    return off


def _reopen_negative(w: Any) -> None:
    off = _retired(w)
    _raises(ValueError, "capacity -1 is out of range", lambda: w.r.chan_reopen(off, -1))
    assert w.r.load(off) == 0 and _word(w, off, L.W_CAP) == 2  # nothing changed


def _reopen_offset_0(w: Any) -> None:
    _raises(ValueError, "no channel block at arena offset 0", lambda: w.r.chan_reopen(0, 1))
    _raises(ValueError, "no channel block at arena offset 64", lambda: w.r.chan_reopen(64, 1))


def _reopen_not_a_block(w: Any) -> None:
    off = w.chan_block(cap=2)
    assert w.r.chan_retire(off) is True
    _raises(ValueError, "no channel block", lambda: w.r.chan_reopen(off + 64, 1))


def _reopen_live(w: Any) -> None:
    off = w.chan_block(cap=2)
    _raises(ValueError, "is not retired", lambda: w.r.chan_reopen(off, 1))


def _reopen_ok(w: Any) -> None:
    off = _retired(w)
    w.r.chan_reopen(off, 5)
    assert (w.r.load(off), _word(w, off, L.W_CAP), _word(w, off, L.W_REFS)) == (
        L.CHAN_MAGIC, 5, 1)


# ---- 6. the layout's constants used on both sides

def _wake_message_shape(w: Any) -> None:
    import msgspec

    off = w.chan_block(cap=0)
    assert w.r.ring_try_put(_word(w, off, L.W_RECVQ), _record(1, 77, -1, 0)) == 1
    w.r.store(off + W * L.W_NRECV, 1)
    deliver, calls = _deliver_failing(0, MemoryError())
    value = b"v" * 450  # its message needs more than wake_t's 512 bytes: allocated
    assert w.ops(off, w.peers(deliver=deliver)).send(value) is True
    assert calls == []  # to P1's inbox, written in C
    raw = w.r.ring_try_get(w.inboxes[1])
    assert raw[0] == L.MSGPACK_FIXARRAY | L.WAKE_ITEMS
    m = msgspec.msgpack.decode(raw)
    assert len(m) == L.WAKE_ITEMS and m[0] == L.M_WAKE and m[1] == 77
    assert msgspec.msgpack.decode(m[6]) == value and m[7] == off


def _peers_m_wake(w: Any) -> None:
    """The WAKE kind is layout.h's: Peers takes no argument for it."""
    args = dict(region=w.r, p=0, tok_off=w.tok, ntokens=8, inboxes=w.inboxes,
                bells=[w.bell.offset] * 2, sent_off=w.sent, deliver=print, no_obj=None)
    w.core_mod.Peers(**args)
    _raises(TypeError, "m_wake", lambda: w.core_mod.Peers(**args, m_wake=L.M_WAKE))


def _pickle_marker(w: Any) -> None:
    assert pickle.dumps(1j, 5)[0] == L.CODEC_PICKLE
    ops = w.ops()
    assert w.r.chan_send(w.chan, pickle.dumps(1j, 5))
    assert ops.recv() == 1j  # the codec's pickle, told apart by its first byte
    assert w.r.chan_send(w.chan, bytes([L.CODEC_PICKLE]))
    assert ops.recv() == {}  # alone, msgpack's empty map


# ---- 7. timeouts: -inf and huge finite values

def _alarm(seconds: float) -> None:
    def ring(*_: Any) -> None:
        raise TimeoutError("alarm")
    signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _bell_neg_inf(w: Any) -> None:
    b = w.cbell()
    t = time.monotonic()
    assert b.wait(-math.inf) is False
    assert b.wait(-1e300) is False
    assert time.monotonic() - t < 1.0


def _bell_huge(w: Any) -> None:
    b = w.cbell()
    b.ring()
    assert b.wait(1e300) is True
    b.ring()
    assert b.wait(1e300, 1e300) is True  # a post is taken in the spin
    threading.Timer(0.2, b.ring).start()
    assert b.wait(1e300) is True
    _alarm(0.2)  # a wait without deadline still runs signal handlers
    _raises(TimeoutError, "alarm", lambda: b.wait(1e300))
    _alarm(0.2)
    _raises(TimeoutError, "alarm", lambda: b.wait(math.inf))


def _poll_huge(w: Any) -> None:
    off = w.chan_block(cap=0)
    _alarm(0.2)
    _raises(TimeoutError, "alarm", lambda: w.r.chan_poll(off, False, 1e300))
    assert w.r.chan_poll(w.chan, True, 1e300) is True  # room in the buffer
    _raises(ValueError, "finite non-negative", lambda: w.r.chan_poll(off, False, math.inf))
    _raises(ValueError, "finite non-negative", lambda: w.r.chan_poll(off, False, -math.inf))


# ---- 8. tp_clear (what the cyclic GC does to an object in a garbage cycle), then every method

_TP_CLEAR = 24 * 8  # PyTypeObject.tp_clear's offset on 64-bit CPython 3.x


def _tp_clear(o: Any) -> None:
    assert sys.maxsize > 2**32
    fp = ctypes.c_void_p.from_address(id(type(o)) + _TP_CLEAR).value
    assert fp, f"{type(o).__name__} has no tp_clear"
    ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(fp)(o)


def _region_cleared(w: Any) -> None:
    r = w.r
    _tp_clear(r)
    assert r.size == 0
    for call in (lambda: r.load(0), lambda: r.store(0, 1), lambda: r.chan_send(w.chan, b"x"),
                 lambda: r.chan_recv(w.chan), lambda: r.chan_poll(w.chan, True, 0.0),
                 lambda: r.chan_retire(w.chan), lambda: r.chan_reopen(w.chan, 1),
                 lambda: r.ring_try_get(w.ring), lambda: r.bell_ring(w.bell.offset)):
        _raises(ValueError, "closed", call)
    r.release()  # and again: nothing to let go


def _bell_cleared(w: Any) -> None:
    b = w.cbell()
    _tp_clear(b)
    for call in (b.ring, b.wait, lambda: b.wait(0.01), b.drain, lambda: b.pending):
        _raises(ValueError, "cleared by the garbage collector", call)
    assert b.offset == w.bell.offset


# ---- 9. a big value's hand-off (wake_init allocates its message before the lock)

def _big_hand_off_local(w: Any) -> None:
    off = _parked_receiver(w)
    deliver, calls = _deliver_failing(0, MemoryError())
    value = b"b" * 4000
    assert w.ops(off, w.peers(deliver=deliver)).send(value) is True
    assert len(calls) == 1 and calls[0][8] == value
    assert w.r.lock_owner(_word(w, off, L.W_LOCK)) == 0


# ---- released regions: every chan_* Region method, ChanOps and Bell

def _released(call: Callable[[Any], Any], fragment: str = "closed") -> Callable[[Any], None]:
    def case(w: Any) -> None:
        w.r.release()
        _raises(ValueError, fragment, lambda: call(w))
    return case


def _released_ops(name: str) -> Callable[[Any], None]:
    def case(w: Any) -> None:
        ops = w.ops(peers=w.peers())
        w.r.release()
        call = {"send": lambda: ops.send(1), "send_data": lambda: ops.send_data(b"\x01", 1),
                "recv": ops.recv, "recv_data": ops.recv_data}[name]
        _raises(ValueError, "closed", call)
    return case


GROUPS: dict[str, dict[str, Callable[[Any], None]]] = {
    "pop-live-bound": {"unreachable-tail-send": _unreachable_tail,
                       "unreachable-tail-recv": _unreachable_tail_recv},
    "rotate-error": {"rotate-recv-data": lambda w: _rotate_bad_buffer_ring(w, False),
                     "rotate-recv": lambda w: _rotate_bad_buffer_ring(w, True)},
    "wake-fail": {"wake-memoryerror-once": lambda w: _wake_fails_once(
                      w, MemoryError("deliver failed")),
                  "wake-keyboardinterrupt-once": lambda w: _wake_fails_once(
                      w, KeyboardInterrupt("signal")),
                  "wake-fails-always": _wake_fails_always,
                  "wake-sender-once": _wake_fails_once_sender},
    "word-if-overflow": {"attach-overflow": _attach_overflow},
    "reopen": {"reopen-negative-cap": _reopen_negative, "reopen-offset-0": _reopen_offset_0,
               "reopen-not-a-block": _reopen_not_a_block, "reopen-live": _reopen_live,
               "reopen-ok": _reopen_ok},
    "layout-constants": {"wake-message-shape": _wake_message_shape,
                         "peers-m-wake": _peers_m_wake, "pickle-marker": _pickle_marker},
    "timeouts": {"bell-neg-inf": _bell_neg_inf, "bell-huge": _bell_huge,
                 "poll-huge": _poll_huge},
    "tp-clear": {"region-cleared": _region_cleared, "bell-cleared": _bell_cleared},
    "wake-init": {"big-hand-off-local": _big_hand_off_local},
    "released": {
        "released-chan-send": _released(lambda w: w.r.chan_send(w.chan, b"x")),
        "released-chan-recv": _released(lambda w: w.r.chan_recv(w.chan)),
        "released-chan-poll": _released(lambda w: w.r.chan_poll(w.chan, True, 0.0)),
        "released-chan-poll-bell": _released(
            lambda w: w.r.chan_poll(w.chan, True, 0.0, w.bell.offset)),
        "released-chan-retire": _released(lambda w: w.r.chan_retire(w.chan)),
        "released-chan-reopen": _released(lambda w: w.r.chan_reopen(w.chan, 1)),
        "released-ops-send": _released_ops("send"),
        "released-ops-send-data": _released_ops("send_data"),
        "released-ops-recv": _released_ops("recv"),
        "released-ops-recv-data": _released_ops("recv_data"),
        "released-bell-drain": lambda w: (b := w.cbell(), w.r.release(),
                                          _raises(ValueError, "closed", b.drain)),
    },
}


def _run_group(group: str) -> int:
    for name, case in GROUPS[group].items():
        print("case", name, flush=True)
        w = _world()
        try:
            case(w)
        except BaseException as e:  # noqa: BLE001 - every outcome is reported by name
            print(f"failed {name}: {type(e).__name__}: {e}", flush=True)
        else:
            print("ok", name, flush=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return 0


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_chan_misuse_is_refused_or_corrected(group: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), CSP_MP_NATIVE="1")
    try:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), group], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        started = [ln.split()[1] for ln in (e.stdout or b"").decode().split("\n")
                   if ln.startswith("case ")]
        pytest.fail(f"the child hung in case {started[-1:]}")
    lines = out.stdout.split("\n")
    started = [ln.split()[1] for ln in lines if ln.startswith("case ")]
    assert out.returncode == 0, (
        f"the child died (exit {out.returncode}) in case {started[-1:]}:\n{out.stderr[-2000:]}")
    failed = [ln for ln in lines if ln.startswith("failed ")]
    assert failed == [], "\n".join(failed)
    assert [ln.split()[1] for ln in lines if ln.startswith("ok ")] == list(GROUPS[group])


if __name__ == "__main__":
    sys.exit(_run_group(sys.argv[1]))
