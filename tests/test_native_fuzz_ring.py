"""Corrupt rings and released regions through the compiled core's ring and lock code: each case
gets the exception it should, none a crash, hang or silent out-of-bounds access.

A ring's words are shared memory another process may have scribbled on: misaligned head and tail
words, a tail further than the capacity from the head, frames running past the ring's end or
past the tail, an unknown kind word. Some cases lay the ring at the very end of a buffer followed
by a PROT_NONE page, so that a read or store past the ring is a crash rather than a quiet read of
the next block. As in test_native_fuzz.py, the cases run in a child interpreter, a batch per
child, which prints each case's name first: a crash is a failed test naming its case.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from csp_mp._shm import layout as L
from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = mmap.PAGESIZE
LOCKS_AT = 64
CAP = 256


def pos(count: int, p: int) -> int:
    """A head or tail word."""
    return count << L.POS_BITS | p


def oob_header(kind: int = L.F_OOB, n: int = 16) -> int:
    return kind << L.KIND_SHIFT | n


class Guarded:
    """A region over a buffer with PROT_NONE pages on both sides, four locks, and a ring whose
    data ends exactly where the buffer does (`end`), another in the middle (`mid`)."""

    def __init__(self, size: int = 8 * PAGE, nlocks: int = 4) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        addr = libc.mmap(None, size + 2 * PAGE, 0,  # PROT_NONE
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value)
        assert libc.mprotect(addr + PAGE, size, mmap.PROT_READ | mmap.PROT_WRITE) == 0
        self.buf = (ctypes.c_char * size).from_address(addr + PAGE)  # never unmapped
        self.core = native.core()
        self.r = r = self.core.Region(self.buf, LOCKS_AT, nlocks)
        for i in range(nlocks):
            r.lock_init(i)
        self.size = size
        self.end = self.ring(size - L.RING_HEADER - CAP, CAP)
        self.mid = self.ring(1024, CAP)

    def ring(self, off: int, cap: int, kind: int = L.RING_SPSC, lock: int = 0) -> int:
        r = self.r
        r.store(off + 8 * L.RW_CAP, cap)
        r.store(off + 8 * L.RW_LOCK, lock)
        r.store(off + 8 * L.RW_KIND, kind)
        r.store(off + L.RING_HEAD_LINE * L.LINE, 0)
        r.store(off + L.RING_TAIL_LINE * L.LINE, 0)
        r.store(off + 8 * L.RW_MAGIC, L.RING_MAGIC)
        return off

    def words(self, off: int, head: int, tail: int) -> None:
        self.r.store(off + L.RING_HEAD_LINE * L.LINE, head)
        self.r.store(off + L.RING_TAIL_LINE * L.LINE, tail)

    def data(self, off: int) -> int:
        return off + L.RING_HEADER


def world() -> Any:
    """test_native_fuzz's World: the project's own arena (memfd, no guard page)."""
    from test_native_fuzz import World

    return World()


# ---- the cases: name -> (the case, the exception's type name, a fragment of its message)

def _unaligned_head_get(g: Guarded) -> Any:
    """Finding 1: head position cap - 4 at the buffer's end; the header word straddles it."""
    g.words(g.end, pos(0, CAP - 4), pos(1, CAP + 8))
    return g.r.ring_try_get(g.end)


def _unaligned_head_inarena(g: Guarded) -> Any:
    """Finding 2: the header's high half read from the next word says INLINE, its length 128 MiB
    passed the underflowed bound."""
    d = g.data(g.mid)
    g.r.store(d + CAP - 8, 0x0800_0000 << 32)
    g.r.store(d + CAP, L.F_INLINE)
    g.words(g.mid, pos(0, CAP - 4), pos(1, CAP + 8))
    return g.r.ring_try_get(g.mid)


def _arena_unaligned_head(w: Any) -> Any:
    """Finding 2 on the project's Arena: NativeRing.create's ring, head at cap - 4."""
    r, off = w.r, w.ring
    cap = r.load(off + 8 * L.RW_CAP)
    d = off + L.RING_HEADER
    r.store(d + cap - 8, 0x0800_0000 << 32)
    r.store(d + cap, r.load(d + cap) & ~L.M32 | L.F_INLINE)  # the next block's first word
    r.store(off + L.RING_HEAD_LINE * L.LINE, cap - 4)
    r.store(off + L.RING_TAIL_LINE * L.LINE, pos(1, cap + 8))
    return r.ring_try_get(off)


def _chan_recv_unaligned_head(w: Any) -> Any:
    """Finding 2 through chan.c (chan_recv -> ring_peek_kind, ring_read): one value buffered,
    the buffer ring's head misaligned."""
    r = w.r
    buf = r.load(w.chan + 8 * L.W_BUF)
    cap = r.load(buf + 8 * L.RW_CAP)
    r.store(w.chan + 8 * L.W_COUNT, 1)
    r.store(buf + L.RING_HEADER + cap - 8, 0x0800_0000 << 32)
    r.store(buf + L.RING_HEAD_LINE * L.LINE, pos(0, cap - 4))
    r.store(buf + L.RING_TAIL_LINE * L.LINE, pos(1, cap + 8))
    return r.chan_recv(w.chan)


def _oob_at_end(g: Guarded, move: bool = False) -> Any:
    """Finding 3: an out-of-band frame (3 words) in the ring's last word."""
    g.r.store(g.data(g.end) + CAP - 8, oob_header())
    g.words(g.end, pos(0, CAP - 8), pos(1, CAP + 16))
    if move:
        return g.r.ring_move_locked(g.end, g.mid)
    return g.r.ring_try_get(g.end)


def _unaligned_tail_put(g: Guarded) -> Any:
    """Finding 4: tail position cap - 4: the wrap marker would be stored across the end."""
    g.words(g.end, pos(0, CAP - 4), pos(0, CAP - 4))
    return g.r.ring_try_put(g.end, b"x" * 16)


def _unaligned_tail_put_inarena(g: Guarded) -> Any:
    """Finding 4 inside the buffer: the word after the ring must stay as it was."""
    after = g.data(g.mid) + CAP
    g.r.store(after, 0x1111_1111_1111_1111)
    g.words(g.mid, pos(0, CAP - 4), pos(0, CAP - 4))
    try:
        return g.r.ring_try_put(g.mid, b"x" * 16)
    finally:
        assert g.r.load(after) == 0x1111_1111_1111_1111, "the word after the ring was written"


def _tail_too_far(g: Guarded, op: str) -> Any:
    """Finding 4: tail more than the capacity ahead of the head."""
    g.r.store(g.data(g.mid), L.F_INLINE << L.KIND_SHIFT | 8)  # a frame that looks whole at the head
    g.words(g.mid, pos(0, 0), pos(1, CAP + 8))
    if op == "put":
        return g.r.ring_try_put(g.mid, b"x")
    if op == "many":
        return g.r.ring_put_many(g.mid, [b"x", b"y"], 0)
    return g.r.ring_try_get(g.mid)


def _same_position_other_count(g: Guarded) -> Any:
    """Finding 4: head and tail at one position with different counts (never equal words)."""
    g.r.store(g.data(g.mid) + 64, L.F_INLINE << L.KIND_SHIFT | 8)
    g.words(g.mid, pos(0, 64), pos(3, 64))
    return g.r.ring_try_get(g.mid)


def _frame_past_tail(g: Guarded) -> Any:
    """Finding 4: a 56-byte frame at the head, the tail 8 bytes on."""
    g.r.store(g.data(g.mid), L.F_INLINE << 32 | 48)
    g.words(g.mid, pos(0, 0), pos(1, 8))
    return g.r.ring_try_get(g.mid)


def _wrap_at_zero(g: Guarded) -> Any:
    """A wrap marker at data index 0 (the frame after it would be itself)."""
    g.r.store(g.data(g.mid), L.F_WRAP << 32)
    g.words(g.mid, pos(0, 0), pos(1, 64))
    return g.r.ring_try_get(g.mid)


def _unknown_kind(g: Guarded, kind: int) -> Any:
    """Finding 5: a kind word other than LOCKED or SPSC is refused, not run without a lock."""
    g.r.store(g.mid + 8 * L.RW_KIND, kind)
    return g.r.ring_try_put(g.mid, b"x")


def _get_many_unreachable(g: Guarded) -> Any:
    """Finding 6: 56-byte frames all round, the tail at position 8, which no head reaches."""
    d = g.data(g.mid)
    for p in range(0, CAP, 64):
        g.r.store(d + p, L.F_INLINE << 32 | 56)
    g.words(g.mid, pos(0, 0), pos(1, 8))
    return g.r.ring_get_many(g.mid, 1 << 62)


def _get_many_lapping(g: Guarded) -> Any:
    """Finding 6: a full lap of empty frames (a word each) but a tail word counting 5 frames:
    after the lap the head's position is the tail's, its count is not, so `head != tail`
    holds for ever; the frames in use bound the walk."""
    d = g.data(g.mid)
    for p in range(0, CAP, 8):
        g.r.store(d + p, L.F_INLINE << 32)
    g.words(g.mid, pos(0, 0), pos(5, CAP))
    return g.r.ring_get_many(g.mid, 1 << 62)


def _move_corrupt_dst(g: Guarded) -> Any:
    g.r.ring_try_put(g.mid, b"abc")
    g.words(g.end, pos(0, 4), pos(0, 4))
    return g.r.ring_move_locked(g.mid, g.end)


def _chan_recvq_unreachable(w: Any) -> Any:
    """Finding 6 through chan.c's pop_live: a receive queue of dead records around a tail no
    head reaches (it walked the ring for ever, GIL and channel lock held)."""
    import struct

    from csp_mp._chan.block import _REC

    r = w.r
    off = w.chan_block(cap=0)
    rq = r.load(off + 8 * L.W_RECVQ)
    cap = r.load(rq + 8 * L.RW_CAP)
    rec = _REC.pack(1, 42, 0, 5, 0, 0)  # P1, slot 0, gen 5: a select that already completed
    d, p = rq + L.RING_HEADER, 0
    while p + 8 + len(rec) <= cap:
        r.store(d + p, L.F_INLINE << 32 | len(rec))
        for i in range(len(rec) // 8):
            r.store(d + p + 8 + 8 * i, struct.unpack_from("<Q", rec, 8 * i)[0])
        p += 8 + len(rec)
    r.store(d + p, L.F_WRAP << 32)
    r.store(rq + L.RING_HEAD_LINE * L.LINE, pos(0, 0))
    r.store(rq + L.RING_TAIL_LINE * L.LINE, pos(1, 8))
    r.store(off + 8 * L.W_NRECV, 1)
    return w.ops(off=off, peers=w.peers()).send(1)


def _released(method: str) -> Callable[[Any], Any]:
    """A released region: every ring method raises."""
    calls: dict[str, Callable[[Any, int], Any]] = {
        "ring_try_put": lambda r, o: r.ring_try_put(o, b"x"),
        "ring_put_locked": lambda r, o: r.ring_put_locked(o, b"x"),
        "ring_try_get": lambda r, o: r.ring_try_get(o),
        "ring_get_locked": lambda r, o: r.ring_get_locked(o),
        "ring_put_many": lambda r, o: r.ring_put_many(o, [b"x"], 0),
        "ring_get_many": lambda r, o: r.ring_get_many(o, 4),
        "ring_len": lambda r, o: r.ring_len(o),
        "ring_move_locked": lambda r, o: r.ring_move_locked(o, o + 4096),
    }

    def case(w: Any) -> Any:
        w.r.ring_try_put(w.ring, b"abc")
        w.r.release()
        return calls[method](w.r, w.ring)

    return case


class _ReleasesOnIndex:
    """An offset whose conversion releases the region (Python code run by an argument)."""

    def __init__(self, region: Any, value: int) -> None:
        self.region, self.value = region, value

    def __index__(self) -> int:
        self.region.release()
        return self.value


def _released_by_argument(w: Any, method: str) -> Any:
    r = w.r
    if method == "put_many":  # the ring is opened only after `start` is converted
        return r.ring_put_many(w.inboxes[0], [b"x"], _ReleasesOnIndex(r, 0))
    return r.ring_move_locked(w.ring, _ReleasesOnIndex(r, w.inboxes[0]))


TP_CLEAR = 24  # PyTypeObject's tp_clear slot, in pointers from the start (CPython 3.8-3.13)


def tp_clear(obj: Any) -> None:
    """What the collector does to an object in a garbage cycle: its type's tp_clear."""
    fp = ctypes.c_void_p.from_address(id(type(obj)) + TP_CLEAR * ctypes.sizeof(ctypes.c_void_p))
    assert fp.value, f"{type(obj).__name__} has no tp_clear"
    ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(fp.value)(obj)


def _cleared_lock(call: Callable[[Any], Any], held: bool = False) -> Callable[[Any], Any]:
    """Finding 9: a Lock whose tp_clear ran; every method raises."""
    def case(w: Any) -> Any:
        lk = w.lock(2)
        if held:
            lk.acquire()
        tp_clear(lk)
        return call(lk)
    return case


Case = tuple[Callable[[Any], Any], str, str, str]  # (case, "guarded" | "world", type, fragment)
CORRUPT = "corrupt ring"
BAD = "head and tail positions"
CASES: dict[str, Case] = {
    "unaligned-head-get": (_unaligned_head_get, "guarded", "ValueError", BAD),
    "unaligned-head-get-inarena": (_unaligned_head_inarena, "guarded", "ValueError", BAD),
    "arena-unaligned-head": (_arena_unaligned_head, "world", "ValueError", BAD),
    "chan-recv-unaligned-head": (_chan_recv_unaligned_head, "world", "ValueError", BAD),
    "oob-frame-at-ring-end": (_oob_at_end, "guarded", "ValueError", "past the ring's end"),
    "oob-frame-move": (lambda g: _oob_at_end(g, move=True), "guarded", "ValueError",
                       "past the ring's end"),
    "unaligned-tail-put": (_unaligned_tail_put, "guarded", "ValueError", BAD),
    "unaligned-tail-put-inarena": (_unaligned_tail_put_inarena, "guarded", "ValueError",
                                   BAD),
    "tail-too-far-get": (lambda g: _tail_too_far(g, "get"), "guarded", "ValueError", BAD),
    "tail-too-far-put": (lambda g: _tail_too_far(g, "put"), "guarded", "ValueError", BAD),
    "tail-too-far-put-many": (lambda g: _tail_too_far(g, "many"), "guarded", "ValueError",
                              BAD),
    "same-position-other-count": (_same_position_other_count, "guarded", "ValueError", BAD),
    "frame-past-tail": (_frame_past_tail, "guarded", "ValueError", "past the tail"),
    "wrap-marker-at-zero": (_wrap_at_zero, "guarded", "ValueError", "unknown kind"),
    "move-corrupt-dst": (_move_corrupt_dst, "guarded", "ValueError", BAD),
    "kind-zero": (lambda g: _unknown_kind(g, 0), "guarded", "ValueError", "unknown kind"),
    "kind-seven": (lambda g: _unknown_kind(g, 7), "guarded", "ValueError", "unknown kind"),
    "get-many-unreachable-tail": (_get_many_unreachable, "guarded", "ValueError",
                                  "past the tail"),
    "get-many-lapping-tail": (_get_many_lapping, "guarded", "ValueError", BAD),
    "chan-recvq-unreachable-tail": (_chan_recvq_unreachable, "world", "ValueError",
                                    "past the tail"),
    "released-by-argument-put-many": (lambda w: _released_by_argument(w, "put_many"), "world",
                                      "ValueError", "closed"),
    "released-by-argument-move": (lambda w: _released_by_argument(w, "move"), "world",
                                  "ValueError", "closed"),
    **{f"released-{m}": (_released(m), "world", "ValueError", "closed") for m in (
        "ring_try_put", "ring_put_locked", "ring_try_get", "ring_get_locked", "ring_put_many",
        "ring_get_many", "ring_len", "ring_move_locked")},
    **{f"cleared-lock-{name}": (_cleared_lock(call, held), "world", "ValueError", "cleared")
       for name, call, held in (
           ("acquire", lambda lk: lk.acquire(), False),
           ("release", lambda lk: lk.release(), True),
           ("owner", lambda lk: lk.owner(), False),
           ("enter", lambda lk: lk.__enter__(), False),
           ("exit", lambda lk: lk.__exit__(None, None, None), True))},
}


def _run_batch(names: list[str]) -> int:
    """The child: run each case, print its name first and its outcome after."""
    for name in names:
        print("case", name, flush=True)
        call, where, _, _ = CASES[name]
        env = Guarded() if where == "guarded" else world()
        try:
            call(env)
        except Exception as exc:  # the outcome under test
            msg = " ".join(str(exc).split())
            print("raised", name, type(exc).__name__, msg, flush=True)
        else:
            print("returned", name, flush=True)
    return 0


def _batches(n: int) -> list[list[str]]:
    names = sorted(CASES)
    return [names[i::n] for i in range(n)]


def _child(args: list[str], code: str | None = None, timeout: float = 120) -> Any:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               CSP_MP_NATIVE="1")
    argv = [sys.executable, "-c", code] if code is not None else [
        sys.executable, os.path.abspath(__file__), *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("batch", _batches(2), ids=["a", "b"])
def test_corrupt_rings_raise_and_never_crash(batch: list[str]) -> None:
    out = _child(batch, timeout=120)
    lines = out.stdout.split("\n")
    started = [ln.split()[1] for ln in lines if ln.startswith("case ")]
    assert out.returncode == 0, (
        f"the child died (exit {out.returncode}) in case {started[-1:]}:\n{out.stderr[-2000:]}")
    outcomes = {ln.split()[1]: ln for ln in lines if ln.startswith(("raised ", "returned "))}
    assert sorted(outcomes) == sorted(batch)
    wrong = []
    for name in batch:
        _, _, exc, fragment = CASES[name]
        parts = outcomes[name].split(" ", 3)
        if parts[0] != "raised" or parts[2] != exc or fragment not in parts[3]:
            wrong.append(f"{name}: wanted {exc} with {fragment!r}, got {outcomes[name]!r}")
    assert not wrong, "\n".join(wrong)


# ---- a finalizer that releases the region in the middle of a call (finding 7)

FINALIZER = textwrap.dedent("""
    import gc, os, signal
    from csp_mp._shm import layout as L
    from test_native_fuzz_ring import Guarded, pos

    g = Guarded()
    r = g.r
    r2 = g.core.Region(g.buf, 64, 4)   # the same memory, a region that stays open
    off = g.ring(1024, 256, L.RING_LOCKED, 1)
    d = g.data(off)
    N = {n}
    for k in range(N):   # N out-of-band frames: (offset, length) tuples, tracked by the GC
        r.store(d + 24 * k, L.F_OOB << 32 | 16)
        r.store(d + 24 * k + 8, 4096 + k)
        r.store(d + 24 * k + 16, 100 + k)
    r.store(off + L.RING_TAIL_LINE * L.LINE, pos(N, 24 * N))

    class Bomb:
        def __del__(self):
            owner.append(r2.lock_owner(1))   # this process's pid: inside the call, under the lock
            r.release()

    owner = []
    gc.disable()
    keep = [tuple([i, -i]) for i in range(5000)]  # empty the 2-tuple free list: new ones
    b = Bomb(); b.self = b; del b                  # cyclic garbage with a finalizer
    # a collection at the call's first tuple, after {before} other tracked allocations in it
    # (the count read is get_count's own tuple's, freed at once)
    gc.set_threshold(gc.get_count()[0] + {before})
    gc.enable()
    try:
        res = {call}
        outcome = "returned"
    except Exception as e:
        res, outcome = None, f"raised {{type(e).__name__}}: {{e}}"
    gc.disable()
    assert owner == [os.getpid()], (owner, outcome)
    head = r2.load(off + L.RING_HEAD_LINE * L.LINE)
    if outcome == "returned":
        got = res if isinstance(res, list) else [res]
        assert got == [(4096 + k, 100 + k) for k in range(N)], got
        assert head == pos(N, 24 * N), hex(head)
    else:
        assert head == 0, "raised, yet frames were consumed"
    pid = os.fork()
    if pid == 0:   # another process takes the ring's lock, within 5 s
        signal.alarm(5)
        r2.lock(1)
        r2.unlock(1)
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, "the ring's lock was never given back"
    print("ok", outcome)
""")


@pytest.mark.parametrize("call, n, before", [("r.ring_try_get(off)", 1, 0),
                                             ("r.ring_get_many(off, 8)", 4, 1)],
                         ids=["try_get", "get_many"])
def test_a_finalizer_releasing_the_region_mid_call_loses_no_lock_and_no_frame(
        call: str, n: int, before: int) -> None:
    """An allocation under the ring's lock starts a collection whose finalizer releases the
    region: the call still gives the lock back (another process takes it), and its frames are
    either returned and consumed, or left in the ring."""
    out = _child([], FINALIZER.format(call=call, n=n, before=before), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert out.stdout.startswith("ok"), out.stdout


LOCK_THEN_RELEASE = textwrap.dedent("""
    import os, signal
    from test_native_fuzz_ring import Guarded

    g = Guarded()
    lk = g.core.Lock(g.r, 1)
    lk.acquire()
    g.r.release()          # the buffer stays: lk holds the mutex
    lk.release()           # so it can still give it back
    try:
        lk.acquire()
    except ValueError as e:
        assert "closed" in str(e), e
    else:
        raise AssertionError("a lock was taken on a released region")
    r2 = g.core.Region(g.buf, 64, 4)
    pid = os.fork()
    if pid == 0:
        signal.alarm(5)
        r2.lock(1)
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, "the mutex was never given back"
    print("ok")
""")


def test_a_lock_held_across_its_regions_release_can_be_given_back() -> None:
    out = _child([], LOCK_THEN_RELEASE, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr[-2000:]


# ---- behaviour the checks must keep

def test_get_many_takes_every_frame_of_a_full_ring_and_stops_at_the_tail() -> None:
    """The bound on ring_get_many is the frames there, not `max`: a full ring of the smallest
    frames and the largest inline frame, each taken once, wrap markers included."""
    w = world()
    try:
        r, off = w.r, w.inboxes[0]
        cap = r.load(off + 8 * L.RW_CAP)
        for lap in range(3):
            items = [bytes([lap, k]) for k in range(cap // 16)]  # 16-byte frames fill it
            assert r.ring_put_many(off, items, 0) == len(items)
            assert r.ring_try_put(off, b"x") == 0
            assert r.ring_get_many(off, 1 << 62) == items
            assert r.ring_get_many(off, 1 << 62) == []
            big = bytes(range(256)) * (cap // 2 // 256 + 1)
            big = big[:cap // L.INLINE_SHARE - L.FRAME_HEADER]
            for _ in range(3):  # the largest inline frame fits an empty ring wherever it wraps
                assert r.ring_try_put(off, big) == 1
                assert r.ring_try_put(off, b"y" * 3) == 1
                assert r.ring_get_many(off, 5) == [big, b"y" * 3]
            assert r.ring_try_put(off, big + b"z") == -1  # out of band: the Python path's
    finally:
        w.arena.sems.seal()
        w.arena.close()


def test_move_locked_moves_out_of_band_frames_whole() -> None:
    w = world()
    try:
        from csp_mp._shm.ring import NativeRing

        r = w.r
        src = NativeRing.create(w.arena, 256, 0)
        dst = NativeRing.create(w.arena, 1024, 0)
        assert src.try_put(b"a" * 200)  # out of band
        assert src.try_put(b"bc")
        with src.lock:
            assert r.ring_move_locked(src.offset, dst.offset) == 2
        assert len(src) == 0
        assert dst.get_many(4) == [b"a" * 200, b"bc"]
    finally:
        w.arena.sems.seal()
        w.arena.close()


def test_the_ring_constants_are_layout_pys_on_both_sides() -> None:
    """The position width, frame sizes, smallest capacity and inline share are spelled once, in
    layout.py: neither ring.c nor the Python ring modules write their values."""
    from csp_mp._shm import ring_frames

    here = os.path.join(ROOT, "csp_mp", "_shm")
    with open(os.path.join(here, "c", "ring.c")) as f:
        c = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    assert not re.search(r"\b(40|24)\b|[<>]{2}\s*40|cap\s*/\s*2|\b64\b", c), (
        "ring.c writes a layout number of its own")
    for name in ("ring_frames.py", "ring_batch.py", "ring.py"):
        with open(os.path.join(here, name)) as f:
            py = "\n".join(ln.split("#")[0] for ln in f if not ln.lstrip().startswith(
                ("#", '"', "'")))
        assert not re.search(r"[<>]{2} 40\b|\+ 24\b|= 24\b|// 2 - 8|max\(64", py), name
    assert (ring_frames._POS, ring_frames._OOB_FRAME) == (L.POS_BITS, L.OOB_FRAME)
    assert L.M40 == (1 << L.POS_BITS) - 1 and L.M24 == (1 << (64 - L.POS_BITS)) - 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(_run_batch(sys.argv[1:]))
