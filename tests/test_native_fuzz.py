"""Misuse of the compiled core from Python: each case gets an exception, none a crash.

Uninitialised objects, a released region, corrupt ring headers, frames, channel blocks and
stack words, NaN/infinite/negative timeouts, offsets at and past every bound. The cases run in
a child interpreter, a batch per child, so that a crash is a failed test naming its case rather
than a dead test runner; the child prints each case's name before running it.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAN_MAGIC = 0xC4A7_0000_0000_0001
RING_MAGIC = 0x5249_4E47_0000_0001


class World:
    """A fresh arena on the compiled core with one ring, one channel block, one doorbell and
    two Ps' worth of token words; made anew for every case."""

    def __init__(self) -> None:
        from csp_mp._shm.arena import Arena
        from csp_mp._shm.doorbell import Doorbell
        from csp_mp._shm.ring import NativeRing

        self.core_mod = native.core()
        self.arena = a = Arena.create(1 << 20, nlocks=8, use_native=True)
        self.r = a.core
        self.size = a.size
        self.ring = NativeRing.create(a, 1024, 2).offset
        self.inboxes = [NativeRing.create(a, 1024, 0).offset for _ in range(2)]
        self.bell = Doorbell.create(a)
        self.tok = self.zeros(16)
        self.sent = self.zeros(2)
        self.chan = self.chan_block(cap=2)

    def zeros(self, n: int) -> int:
        off = self.arena.alloc(8 * n)
        for i in range(n):
            self.r.store(off + 8 * i, 0)
        return off

    def chan_block(self, cap: int) -> int:
        """A channel block laid out as csp_mp/_chan/shared.py lays it, no waiters."""
        from csp_mp._shm.ring import NativeRing

        off = self.zeros(16)
        rings = [NativeRing.create(self.arena, n, 2).offset for n in (1024, 512, 512)]
        for i, v in enumerate([cap, 0, 0, *rings, 3], 1):
            self.r.store(off + 8 * i, v)
        self.r.store(off, CHAN_MAGIC)
        return off

    def peers(self, **kw: Any) -> Any:
        args = dict(region=self.r, p=0, tok_off=self.tok, ntokens=8, inboxes=self.inboxes,
                    bells=[self.bell.offset] * 2, sent_off=self.sent,
                    deliver=lambda *a: None, no_obj=None)
        args.update(kw)
        return self.core_mod.Peers(**args)

    def ops(self, off: int | None = None, peers: Any = None) -> Any:
        from csp_mp._shm.codec import _mdec, _menc, _tdec, decode

        return self.core_mod.ChanOps(self.r, self.chan if off is None else off, _menc, _mdec,
                                     _tdec, functools.partial(decode, arena=self.arena),
                                     object(), 1 << 16, peers)

    def lock(self, i: int = 2) -> Any:
        return self.core_mod.Lock(self.r, i)

    def cbell(self) -> Any:
        return self.core_mod.Bell(self.r, self.bell.offset)


# ---- the cases: each must raise (any Exception) and must not crash the interpreter

def _uninit(name: str, call: Callable[[Any], Any]) -> Callable[[World], Any]:
    def case(w: World) -> Any:
        tp = getattr(w.core_mod, name)
        return call(tp.__new__(tp))
    return case


CASES: dict[str, Callable[[World], Any]] = {
    # objects made without their arguments: refused by tp_new, never half-made
    "uninit-lock-acquire": _uninit("Lock", lambda o: o.acquire()),
    "uninit-bell-ring": _uninit("Bell", lambda o: o.ring()),
    "uninit-region-load": _uninit("Region", lambda o: o.load(0)),
    "uninit-chanops-recv": _uninit("ChanOps", lambda o: o.recv()),
    "uninit-peers-claim": _uninit("Peers", lambda o: o.claim(0, 0, 0, 0)),
    "uninit-spawner-go": _uninit("Spawner", lambda o: o.go(print, (), {})),
    "uninit-encoder-encode": _uninit("TaskEncoder", lambda o: o.encode(1, 0, (b"", b"", ""), ())),
    "uninit-handles-release": _uninit("Handles", lambda o: o.release()),
    "uninit-handleref": lambda w: w.core_mod.HandleRef(w),
    # a released region: every object on it raises
    "released-load": lambda w: (w.r.release(), w.r.load(0)),
    "released-lock-acquire": lambda w: (lk := w.lock(), w.r.release(), lk.acquire()),
    "released-lock-owner": lambda w: (lk := w.lock(), w.r.release(), lk.owner()),
    "released-bell-ring": lambda w: (b := w.cbell(), w.r.release(), b.ring()),
    "released-bell-wait": lambda w: (b := w.cbell(), w.r.release(), b.wait(0.01)),
    "released-bell-pending": lambda w: (b := w.cbell(), w.r.release(), b.pending),
    "released-peers-claim": lambda w: (p := w.peers(), w.r.release(), p.claim(0, 0, 1, 0)),
    "released-chanops-send": lambda w: (o := w.ops(), w.r.release(), o.send(1)),
    "released-chanops-recv": lambda w: (o := w.ops(), w.r.release(), o.recv()),
    "released-chan-poll": lambda w: (w.r.release(), w.r.chan_poll(w.chan, True, 0.01)),
    "released-orphaned": lambda w: (w.r.release(), w.r.locks_orphaned()),
    "released-stack-pop": lambda w: (w.r.release(), w.r.stack_pop(w.tok, 1)),
    # corrupt ring headers and frames
    "ring-bad-magic": lambda w: (w.r.store(w.ring, 7), w.r.ring_try_get(w.ring)),
    "ring-cap-not-pow2": lambda w: (w.r.store(w.ring + 8, 1000), w.r.ring_try_get(w.ring)),
    "ring-cap-huge": lambda w: (w.r.store(w.ring + 8, 1 << 62), w.r.ring_try_put(w.ring, b"x")),
    "ring-lock-out-of-range": lambda w: (w.r.store(w.ring + 16, 99), w.r.ring_try_get(w.ring)),
    "ring-frame-too-long": lambda w: _corrupt_frame(w, 1 << 32 | 0xFFFF_FFFF),
    "ring-frame-bad-kind": lambda w: _corrupt_frame(w, 9 << 32 | 8),
    "ring-get-many-corrupt": lambda w: _corrupt_frame(w, 1 << 32 | 5000, many=True),
    # corrupt channel blocks
    "chan-bad-lock-word": lambda w: (w.r.store(w.chan + 7 * 8, 1 << 40),
                                     w.r.chan_send(w.chan, b"x")),
    "chan-buffer-not-a-ring": lambda w: (w.r.store(w.chan + 4 * 8, 8), w.r.chan_send(w.chan, b"x")),
    "chan-buffer-past-end": lambda w: (w.r.store(w.chan + 4 * 8, w.size + 4096),
                                       w.ops().send(1)),
    "chan-recvq-corrupt": lambda w: (w.r.store(w.chan + 5 * 8, 1 << 50),
                                     w.r.store(w.chan + 8 * 8, 1),
                                     w.ops(peers=w.peers()).send(1)),
    "chan-sendq-short-record": lambda w: _short_record(w),
    "chanops-not-a-channel": lambda w: w.ops(off=w.ring),
    "chanops-past-end": lambda w: w.ops(off=w.size),
    # corrupt stack words and pool bounds
    "stack-size-huge": lambda w: (w.r.store(w.tok, 1 << 61), w.r.stack_pop(w.tok, 1)),
    "stack-size-past-end": lambda w: (w.r.store(w.tok, w.size // 8), w.r.stack_pop(w.tok, 1)),
    "stack-max-huge": lambda w: w.r.stack_push(w.tok, 1, 5, 1 << 62),
    "stack-max-negative": lambda w: w.r.stack_push(w.tok, 1, 5, -1),
    "stack-lock-out-of-range": lambda w: (w.r.store(w.tok, 1), w.r.stack_pop(w.tok, 8)),
    # timeouts: NaN, infinities and negatives refused (or given their documented meaning)
    "bell-wait-nan": lambda w: w.cbell().wait(math.nan),
    "bell-wait-spin-nan": lambda w: w.cbell().wait(0.0, math.nan),
    "bell-wait-spin-inf": lambda w: w.cbell().wait(0.01, math.inf),
    "bell-wait-spin-negative": lambda w: w.cbell().wait(0.01, -1.0),
    "bell-wait-not-a-number": lambda w: w.cbell().wait("soon"),
    "chan-poll-nan": lambda w: w.r.chan_poll(w.chan, False, math.nan),
    "chan-poll-inf": lambda w: w.r.chan_poll(w.chan, False, math.inf),
    "chan-poll-negative": lambda w: w.r.chan_poll(w.chan, False, -1.0),
    # offsets at and past every bound
    "load-at-end": lambda w: w.r.load(w.size),
    "load-straddles-end": lambda w: w.r.load(w.size - 4),
    "load-negative": lambda w: w.r.load(-8),
    "load-huge": lambda w: w.r.load(1 << 62),
    "load-beyond-int64": lambda w: w.r.load(1 << 64),
    "store-misaligned": lambda w: w.r.store(12, 1),
    "cas-at-end": lambda w: w.r.cas(w.size, 0, 1),
    "iadd-at-end": lambda w: w.r.iadd(w.size, 1),
    "lock-index-at-end": lambda w: w.r.lock(8),
    "lock-object-index-at-end": lambda w: w.lock(8),
    "lock-object-negative": lambda w: w.lock(-1),
    "bell-at-end": lambda w: w.core_mod.Bell(w.r, w.size),
    "bell-ring-at-end": lambda w: w.r.bell_ring(w.size - 4),
    "ring-at-end": lambda w: w.r.ring_try_get(w.size - 64),
    "ring-move-past-end": lambda w: w.r.ring_move_locked(w.ring, w.size),
    "chan-send-at-end": lambda w: w.r.chan_send(w.size - 8, b"x"),
    "chan-retire-past-end": lambda w: w.r.chan_retire(w.size),
    "chan-reopen-past-end": lambda w: w.r.chan_reopen(w.size - 8, 1),
    "stack-pop-at-end": lambda w: w.r.stack_pop(w.size, 1),
    "stack-push-straddles-end": lambda w: w.r.stack_push(w.size - 16, 1, 5, 4),
    "peers-tokens-past-end": lambda w: w.peers(tok_off=w.size - 8),
    "peers-ntokens-huge": lambda w: w.peers(ntokens=1 << 60),
    "peers-floor-past-end": lambda w: w.peers(floor_off=w.size - 8, pstride=64),
    "peers-pstride-huge": lambda w: w.peers(floor_off=0, pstride=1 << 62),
    "peers-claim-slot-past-end": lambda w: w.peers().claim(0, 8, 1, 0),
    "peers-claim-p-negative": lambda w: w.peers().claim(-1, 0, 1, 0),
    "peers-inbox-past-end": lambda w: _wake_to_bad_inbox(w),
    "region-lock-lines-past-end": lambda w: w.core_mod.Region(mmap.mmap(-1, 4096), 0, 65),
    "region-locks-misaligned": lambda w: w.core_mod.Region(mmap.mmap(-1, 4096), 8, 1),
    "region-nlocks-huge": lambda w: w.core_mod.Region(mmap.mmap(-1, 4096), 0, 1 << 60),
    "region-too-small-for-words": lambda w: w.core_mod.Region(
        memoryview(mmap.mmap(-1, 4096))[:8], 0, 0).locks_orphaned(),
    "region-read-only": lambda w: w.core_mod.Region(b"x" * 4096, 0, 0),
}


def _corrupt_frame(w: World, header: int, many: bool = False) -> Any:
    """A frame put, then its header word overwritten; reading it must raise."""
    assert w.r.ring_try_put(w.ring, b"abcdefgh") == 1
    data = w.ring + 3 * 64
    w.r.store(data, header)
    return w.r.ring_get_many(w.ring, 4) if many else w.r.ring_try_get(w.ring)


def _short_record(w: World) -> Any:
    """A sender's wait record shorter than a record, on an unbuffered channel."""
    off = w.chan_block(cap=0)
    sendq = w.r.load(off + 6 * 8)
    assert w.r.ring_try_put(sendq, b"short") == 1
    w.r.store(off + 9 * 8, 1)
    return w.ops(off=off, peers=w.peers()).recv()


def _wake_to_bad_inbox(w: World) -> Any:
    """A hand-off to a receiver of P1 whose inbox offset lies past the arena."""
    off = w.chan_block(cap=0)
    recvq = w.r.load(off + 5 * 8)
    rec = b"".join(v.to_bytes(8, "little", signed=True) for v in (1, 42, -1, 0, 0, 0))
    assert w.r.ring_try_put(recvq, rec) == 1
    w.r.store(off + 8 * 8, 1)
    peers = w.peers(inboxes=[w.inboxes[0], w.size + 64])
    return w.ops(off=off, peers=peers).send(1)


def _run_batch(names: list[str]) -> int:
    """The child: run each case, print its name first and its outcome after."""
    for name in names:
        print("case", name, flush=True)
        w = World()
        try:
            CASES[name](w)
        except Exception as exc:  # every exception is the outcome the test wants
            print("raised", name, type(exc).__name__, flush=True)
        else:
            print("returned", name, flush=True)
    return 0


def _batches(n: int) -> list[list[str]]:
    names = sorted(CASES)
    return [names[i::n] for i in range(n)]


@pytest.mark.parametrize("batch", _batches(3), ids=["a", "b", "c"])
def test_misuse_raises_and_never_crashes(batch: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT, CSP_MP_NATIVE="1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *batch], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    lines = out.stdout.split("\n")
    started = [ln.split()[1] for ln in lines if ln.startswith("case ")]
    assert out.returncode == 0, (
        f"the child died (exit {out.returncode}) in case {started[-1:]}:\n{out.stderr[-2000:]}")
    returned = [ln.split()[1] for ln in lines if ln.startswith("returned ")]
    assert returned == [], f"cases that raised nothing: {returned}"
    raised = [ln.split()[1] for ln in lines if ln.startswith("raised ")]
    assert raised == batch


def test_documented_timeouts_are_taken() -> None:
    """A negative timeout waits not at all; an infinite one is None's wait forever."""
    w = World()
    try:
        bell = w.cbell()
        assert bell.wait(-1.0) is False
        bell.ring()
        assert bell.wait(math.inf) is True
        assert w.r.chan_poll(w.chan, True, 0.0) is True  # room in the buffer
    finally:
        w.arena.sems.seal()
        w.arena.close()


if __name__ == "__main__":
    sys.exit(_run_batch(sys.argv[1:]))
