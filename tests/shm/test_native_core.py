"""The compiled core on its own: words, robust locks, doorbells, rings, channel fast paths.

Every test here runs real processes on a real arena. The rest of the suite runs on the compiled
core too (unless ``CSP_MP_NATIVE=0``), and on the Python path in CI's second run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from csp_mp._shm import native
from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell
from csp_mp._shm.ring import NativeRing, Ring, attach_ring

from . import _workers

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

CHAN_MAGIC = 0xC4A7_0000_0000_0001


@pytest.fixture
def carena() -> Iterator[Arena]:
    """An arena on the compiled core, whatever CSP_MP_NATIVE says."""
    a = Arena.create(16 << 20, nlocks=8, use_native=True)
    try:
        yield a
    finally:
        a.sems.seal()
        a.close()


def _word(a: Arena) -> int:
    off = a.alloc(8)
    a.core.store(off, 0)
    return off


def _chan_block(a: Arena, cap: int, lock: int = 3) -> int:
    """A shared channel block laid out as csp_mp/_chan/block.py lays it (no waiters)."""
    off = a.alloc(128)
    key = lock - 1  # Ring.create maps key k to lock 1 + k % (nlocks - 1)
    words = [0, cap, 0, 0, Ring.create(a, 4096, key).offset, Ring.create(a, 1024, key).offset,
             Ring.create(a, 1024, key).offset, lock, 0, 0]
    for i, v in enumerate(words[1:], 1):
        a.core.store(off + 8 * i, v)
    a.core.store(off, CHAN_MAGIC)
    return off


def test_words(carena: Arena) -> None:
    c, off = carena.core, _word(carena)
    c.store(off, 5)
    assert c.load(off) == 5
    assert c.cas(off, 5, 7) is True and c.cas(off, 5, 9) is False and c.load(off) == 7
    assert c.fetch_add(off, 3) == 7 and c.load(off) == 10
    assert carena.words.load(off // 8) == 10  # the same word the Python path reads


def test_signed_words_wrap_as_int64(carena: Arena) -> None:
    c, off = carena.core, _word(carena)
    c.istore(off, 2**63 - 1)
    assert c.iadd(off, 1) == -(2**63)
    assert c.iswap(off, -5) == -(2**63)
    assert c.icas(off, -5, 3) is True and c.icas(off, -5, 4) is False and c.iload(off) == 3


@pytest.mark.parametrize("call", [
    lambda c, n: c.load(-8), lambda c, n: c.load(n), lambda c, n: c.load(12),
    lambda c, n: c.store(n - 4, 1), lambda c, n: c.fetch_add(1 << 40, 1),
    lambda c, n: c.lock(8), lambda c, n: c.unlock(-1),
    lambda c, n: c.ring_try_put(4096, b"x"), lambda c, n: c.ring_try_get(n - 64),
    lambda c, n: c.chan_send(4096, b"x"), lambda c, n: c.chan_recv(n + 64),
    lambda c, n: c.bell_ring(n),
], ids=["negative", "end", "misaligned", "straddles-end", "far", "lock-index", "unlock-index",
        "not-a-ring", "ring-at-end", "not-a-channel", "chan-past-end", "bell-past-end"])
def test_bad_offsets_raise(carena: Arena, call) -> None:
    with pytest.raises(ValueError):
        call(carena.core, carena.size)


def test_closed_region_raises_instead_of_touching_memory() -> None:
    a = Arena.create(1 << 20, nlocks=2, use_native=True)
    core = a.core
    a.sems.seal()
    a.close()
    with pytest.raises(ValueError, match="closed"):
        core.load(0)
    with pytest.raises(ValueError, match="closed"):
        core.lock(0)


def test_lock_misuse_raises(carena: Arena) -> None:
    lock = carena.locks.lock(2)
    assert lock.acquire() is False
    with pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
    assert lock.owner() == os.getpid()  # the main thread's id is the pid
    lock.release()
    assert lock.owner() == 0
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_rings_interoperate_with_the_python_path(carena: Arena) -> None:
    """Frames written by either implementation are read by the other, out-of-band ones too."""
    off = Ring.create(carena, 1024).offset
    py, c = Ring(carena, off), NativeRing(carena, off)
    assert type(attach_ring(carena, off)) is NativeRing
    big = b"B" * 2000  # more than half the ring: out of band
    assert py.try_put(b"one") and c.try_put(b"two") and c.try_put(big) and py.try_put(big)
    assert c.put_many([b"3", b"4", bytearray(b"5")]) == 3
    assert len(c) == len(py) == 7
    assert [c.try_get(), py.try_get(), py.try_get(), c.try_get()] == [b"one", b"two", big, big]
    assert py.get_many(10) == [b"3", b"4", b"5"]
    assert c.try_get() is None and c.get_many(5) == []


def test_ring_move_keeps_every_frame_in_order(carena: Arena) -> None:
    """A full queue moved to a bigger one (a shared channel's buffer growing): inline and
    out-of-band frames, across the source's wrap point, arrive in order and the source is left
    empty; a destination too small takes what fits and leaves the rest in the source."""
    src = NativeRing.create(carena, 512, 2)
    for _ in range(9):  # move the head past the start: the frames below wrap around
        assert src.try_put(b"w" * 40) and src.try_get() == b"w" * 40
    big = b"B" * 400  # more than half the ring: out of band
    items = [b"%02d" % i + b"x" * (i * 7 % 30) for i in range(8)]
    items.insert(3, big)
    for item in items:
        assert src.try_put(item)
    dst = NativeRing.create(carena, 1024, 2)
    assert dst.try_put(b"first")
    with src.lock:
        assert carena.core.ring_move_locked(src.offset, dst.offset) == len(items)
    assert len(src) == 0 and src.try_get() is None
    assert dst.get_many(20) == [b"first", *items]
    small = NativeRing.create(carena, 64, 2)  # two frames of 8 + 24 bytes
    for item in (b"a" * 20, b"b" * 20, b"c" * 20):
        assert src.try_put(item)
    with src.lock:
        assert carena.core.ring_move_locked(src.offset, small.offset) == 2
    assert small.get_many(5) == [b"a" * 20, b"b" * 20] and src.get_many(5) == [b"c" * 20]


def test_ring_fills_and_wraps(carena: Arena) -> None:
    r = NativeRing.create(carena, 256)
    sent = got = 0
    for _ in range(50):  # many laps, with a wrap marker now and then
        while r.try_put(b"%05d" % sent + b"x" * (sent % 23)):
            sent += 1
        for item in r.get_many(7):
            assert item == b"%05d" % got + b"x" * (got % 23)
            got += 1
    assert got > 200


def test_lock_recovered_from_holder_killed_while_others_wait(carena: Arena, ctx) -> None:
    """kill -9 of a holder while three processes queue on the lock: one of them takes it over,
    all finish, and no increment made under the lock is lost."""
    bell = Doorbell.create(carena)
    word, rec = _word(carena), _word(carena)
    holder = ctx.Process(target=_workers.hold_native_lock, args=(carena, 4, bell))
    holder.start()
    workers = []
    try:
        assert bell.wait(20)
        workers = [ctx.Process(target=_workers.count_under_lock,
                               args=(carena, 4, word, 2000, rec, bell)) for _ in range(3)]
        for w in workers:
            w.start()
        for _ in workers:
            assert bell.wait(20)  # each is running (and soon blocked on the held lock)
        assert carena.core.load(word) == 0
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(20)
        for w in workers:
            w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert carena.core.load(word) == 3 * 2000
    assert carena.core.load(rec) == 1


def test_doorbell_wait_lets_a_signal_handler_raise(carena: Arena) -> None:
    bell = Doorbell.create(carena)

    def boom(signum: int, frame: object) -> None:
        raise KeyError("from the handler")

    old = signal.signal(signal.SIGALRM, boom)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyError, match="from the handler"):
            bell.wait(10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    bell.ring()
    assert bell.pending == 1 and bell.wait(0) and bell.pending == 0


def test_doorbell_saturates_instead_of_overflowing(carena: Arena) -> None:
    bell = Doorbell.create(carena)
    carena.core.store(bell._bell.offset, 0x7FFF_FFFF)  # count at its maximum, no sleeper
    bell.ring()
    assert bell.pending == 0x7FFF_FFFF
    assert bell.drain() == 0x7FFF_FFFF and bell.pending == 0


def test_chan_fast_paths(carena: Arena) -> None:
    c = carena.core
    off = _chan_block(carena, cap=3)
    assert [c.chan_send(off, b"%d" % i) for i in range(4)] == [True, True, True, False]
    assert c.load(off + 3 * 8) == 3  # count
    assert c.chan_poll(off, False, 0.0) is True and c.chan_poll(off, True, 0.001) is False
    assert [c.chan_recv(off) for _ in range(4)] == [b"0", b"1", b"2", None]
    c.store(off + 8 * 8, 1)  # a receiver queued: a send must take the slow path (hand-off)
    assert c.chan_send(off, b"x") is False
    c.store(off + 8 * 8, 0)
    assert c.chan_send(off, b"y") is True
    c.store(off + 9 * 8, 1)  # a sender queued: a receive must take the slow path
    assert c.chan_recv(off) is None
    c.store(off + 9 * 8, 0)
    c.store(off + 2 * 8, 1)  # closed: sends take the slow path (which raises)
    assert c.chan_send(off, b"z") is False
    assert c.chan_recv(off) == b"y"
    assert c.load(off + 3 * 8) == 0


def test_chan_fast_paths_across_processes(carena: Arena, ctx) -> None:
    """Four producer processes through one channel block: every message once, each producer's
    in order."""
    off = _chan_block(carena, cap=64)
    n = 3000
    procs = [ctx.Process(target=_workers.chan_producer, args=(carena, off, me, n))
             for me in range(4)]
    for p in procs:
        p.start()
    c = carena.core
    last = [-1] * 4
    got = 0
    deadline = time.monotonic() + 60
    try:
        while got < 4 * n:
            assert time.monotonic() < deadline
            data = c.chan_recv(off)
            if data is None:
                c.chan_poll(off, False, 0.001)
                continue
            me, seq = _workers.check(data)
            assert seq == last[me] + 1
            last[me] = seq
            got += 1
    finally:
        for p in procs:
            p.join(20)
    assert last == [n - 1] * 4 and c.chan_recv(off) is None


# ---- the hand-off to a parked partner (Peers, ChanOps), against the Python formats


class _TwoPs:
    """Two Ps' worth of what a Peers names: token tables, inboxes, doorbells, P_SENT words."""

    NTOK = 4

    def __init__(self, a: Arena) -> None:
        self.a = a
        self.tok = a.alloc(2 * self.NTOK * 8)
        self.sent = [_word(a), _word(a)]
        for q in range(2):
            for s in range(self.NTOK):
                a.core.store(self.tok + (q * self.NTOK + s) * 8, 0)
        self.inbox = [NativeRing.create(a, 4096, 0), NativeRing.create(a, 4096, 0)]
        self.bells = [Doorbell.create(a), Doorbell.create(a)]
        self.local: list[tuple] = []

    def peers(self, p: int = 0, **kw) -> object:
        args = dict(region=self.a.core, p=p, tok_off=self.tok, ntokens=self.NTOK,
                    inboxes=[r.offset for r in self.inbox], bells=[b.offset for b in self.bells],
                    sent_off=self.sent[p % 2], deliver=self._deliver, no_obj=NO_OBJ)
        args.update(kw)
        return native.core().Peers(**args)

    def _deliver(self, *args) -> None:
        self.local.append(args)

    def token(self, q: int, slot: int, gen: int, state: int = 1) -> None:
        self.a.core.store(self.tok + (q * self.NTOK + slot) * 8, gen << 8 | state)

    def token_word(self, q: int, slot: int) -> int:
        return self.a.core.load(self.tok + (q * self.NTOK + slot) * 8)


def _ops(a: Arena, off: int, peers: object) -> object:
    import functools

    from csp_mp._shm.codec import _mdec, _menc, _tdec, decode

    return native.core().ChanOps(a.core, off, _menc, _mdec, _tdec,
                                 functools.partial(decode, arena=a), NO_VALUE, 1 << 20, peers)


NO_OBJ, NO_VALUE = object(), object()
W_NRECV, W_NSEND = 8, 9


def _park(a: Arena, off: int, wi: int, rec: tuple) -> None:
    """Queue waiter record ``rec`` as SharedChan.enqueue_l does (queue word ``wi``)."""
    from csp_mp._chan.block import _rec

    ring = attach_ring(a, a.core.load(off + wi * 8))
    assert ring.put_locked(_rec(rec)) == 1
    a.core.store(off + (W_NRECV if wi == 5 else W_NSEND) * 8, len(ring))


def _wakes(ps: _TwoPs, q: int) -> list[tuple]:
    import msgspec

    return [msgspec.msgpack.decode(m, type=tuple) for m in ps.inbox[q].get_many(100)]


def test_peers_checks_its_arguments(carena: Arena) -> None:
    ps = _TwoPs(carena)
    with pytest.raises(ValueError):
        ps.peers(p=2)
    with pytest.raises(ValueError):
        ps.peers(tok_off=carena.size - 8)
    with pytest.raises(ValueError, match="offsets for"):
        ps.peers(bells=[ps.bells[0].offset])
    with pytest.raises(TypeError, match="callable"):
        ps.peers(deliver=None)
    peers = ps.peers()
    with pytest.raises(ValueError, match="no select token"):
        peers.claim(0, ps.NTOK, 1, 0)
    with pytest.raises(ValueError, match="no select token"):
        peers.claim(5, 0, 1, 0)
    with pytest.raises(TypeError, match="same region"):
        _ops(carena, _chan_block(carena, cap=1), object())
    other = Arena.create(1 << 20, nlocks=4, use_native=True)
    try:
        with pytest.raises(TypeError, match="same region"):
            _ops(carena, _chan_block(carena, cap=1), _TwoPs(other).peers())
    finally:
        other.sems.seal()
        other.close()


def test_peers_claim_is_one_winner_per_waiting_token(carena: Arena) -> None:
    ps = _TwoPs(carena)
    peers = ps.peers()
    ps.token(1, 2, gen=7)
    assert peers.claim(1, 2, 6, 0) is False  # another select's generation
    assert peers.claim(1, 2, 7, 0) is True
    assert ps.token_word(1, 2) == 7 << 8 | 2  # T_DONE, as tokens.py reads it
    assert peers.claim(1, 2, 7, 1) is False


def test_send_hands_off_to_a_receiver_parked_on_another_p(carena: Arena) -> None:
    from csp_mp._shm.codec import encode

    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=0)
    ops = _ops(carena, off, ps.peers(p=0))
    assert ops.send(5) is False  # nobody waiting, no buffer: the slow path parks
    _park(carena, off, 5, (1, 42, -1, 0, 0, None))  # goroutine 42 of P1 parked receiving
    assert ops.send(5) is True
    assert _wakes(ps, 1) == [(1, 42, -1, 0, 0, 0, encode(5), off)]  # M_WAKE ... K_VALUE
    assert ps.bells[1].pending == 1 and ps.bells[0].pending == 0
    assert carena.core.load(ps.sent[0]) == 1  # P_SENT: one wake-up in flight
    assert carena.core.load(off + W_NRECV * 8) == 0
    assert ops.send(6) is False and ps.local == []


def test_send_skips_dead_selects_and_wakes_a_local_receiver_by_callback(carena: Arena) -> None:
    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=1)
    ops = _ops(carena, off, ps.peers(p=0))
    ps.token(1, 0, gen=3, state=2)  # a select of P1 that another case already won
    ps.token(0, 1, gen=9)  # a select of this P still waiting
    _park(carena, off, 5, (1, 10, 0, 3, 0, None))
    _park(carena, off, 5, (0, 11, 1, 9, 2, None))
    obj = ["the object"]
    assert ops.send_data(b"\x93\x01\x02\x03", obj) is True
    assert ps.local == [(0, 11, 1, 9, 2, 0, b"\x93\x01\x02\x03", off, obj)]
    assert ps.token_word(0, 1) == 9 << 8 | 2  # claimed
    assert _wakes(ps, 1) == [] and carena.core.load(off + W_NRECV * 8) == 0
    assert ops.send(1) is True  # no receiver left: buffered
    assert carena.core.load(off + 3 * 8) == 1


def test_recv_takes_from_a_sender_parked_on_another_p(carena: Arena) -> None:
    from csp_mp._shm.codec import encode

    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=0)
    ops = _ops(carena, off, ps.peers(p=0))
    assert ops.recv() is NO_VALUE
    _park(carena, off, 6, (1, 7, -1, 0, 0, encode(("a", 1))))
    assert ops.recv() == ("a", 1)
    assert _wakes(ps, 1) == [(1, 7, -1, 0, 0, 2, None, off)]  # K_SENT, no value
    assert carena.core.load(off + W_NSEND * 8) == 0
    assert ops.recv() is NO_VALUE


def test_a_dead_select_holding_a_value_is_left_to_the_python_path(carena: Arena) -> None:
    """Its value may hold arena blocks only the codec can free: C changes nothing."""
    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=0)
    ops = _ops(carena, off, ps.peers(p=0))
    ps.token(1, 3, gen=4, state=2)
    _park(carena, off, 6, (1, 7, 3, 4, 0, b"\x01"))
    assert ops.recv() is NO_VALUE
    assert ops.recv_data() is None
    assert carena.core.load(off + W_NSEND * 8) == 1  # still queued, for SharedChan._pop_live
    assert _wakes(ps, 1) == [] and ps.local == []


def test_recv_on_a_full_buffer_moves_the_parked_senders_value_in(carena: Arena) -> None:
    from csp_mp._shm.codec import encode

    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=2)
    ops = _ops(carena, off, ps.peers(p=0))
    assert ops.send(1) is True and ops.send(2) is True and ops.send(3) is False
    _park(carena, off, 6, (1, 8, -1, 0, 0, encode(3)))  # the third send parked on P1
    assert ops.recv() == 1
    assert _wakes(ps, 1) == [(1, 8, -1, 0, 0, 2, None, off)]
    assert carena.core.load(off + 3 * 8) == 2 and carena.core.load(off + W_NSEND * 8) == 0
    assert [ops.recv(), ops.recv(), ops.recv()] == [2, 3, NO_VALUE]


def test_a_parked_value_the_full_buffer_cannot_take_is_left_to_python(carena: Arena) -> None:
    """The buffer ring's bytes are sized for small values; the Python path grows it."""
    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=2)
    ops = _ops(carena, off, ps.peers(p=0))
    assert ops.send_data(b"\x01" * 1500, None) and ops.send_data(b"\x02" * 1500, None)
    _park(carena, off, 6, (1, 8, -1, 0, 0, b"\x03" * 1900))  # fits after one frees: no
    assert ops.recv_data() is None
    assert carena.core.load(off + W_NSEND * 8) == 1 and carena.core.load(off + 3 * 8) == 2
    assert _wakes(ps, 1) == []


@pytest.mark.timeout(60)
def test_chan_poll_ends_when_this_ps_doorbell_rings(carena: Arena) -> None:
    """A goroutine polling a channel gives way as soon as a wake-up for another one arrives."""
    c = carena.core
    off = _chan_block(carena, cap=0)
    bell = Doorbell.create(carena)
    assert c.chan_poll(off, False, 0.001, bell.offset) is False  # nothing: times out
    bell.ring()
    assert c.chan_poll(off, False, 3600.0, bell.offset) is False  # at once, not in an hour
    assert bell.pending == 1  # the post stays for the hub to take
    assert c.chan_poll(off, False, 0.001, -1) is False
    with pytest.raises(ValueError):
        c.chan_poll(off, False, 0.001, carena.size)


def test_a_diverted_peers_sends_every_wake_up_through_the_callback(carena: Arena) -> None:
    """While a trace runs, the broker sees each wake-up (and draws its flow)."""
    from csp_mp._shm.codec import encode

    ps = _TwoPs(carena)
    off = _chan_block(carena, cap=0)
    peers = ps.peers(p=0)
    ops = _ops(carena, off, peers)
    assert peers.divert is False
    peers.divert = True
    _park(carena, off, 5, (1, 42, -1, 0, 0, None))
    assert ops.send(5) is True
    assert ps.local == [(1, 42, -1, 0, 0, 0, encode(5), off, 5)]
    assert _wakes(ps, 1) == [] and carena.core.load(ps.sent[0]) == 0


def test_a_word_stack_pushes_up_to_its_bound_and_pops_last_first(carena: Arena) -> None:
    core = carena.core
    at = carena.alloc(8 * 5)
    for i in range(5):
        core.store(at + 8 * i, 0)
    assert core.stack_pop(at, 3) is None
    assert [core.stack_push(at, 3, v, 3) for v in (11, 22, 33, 44)] == [True, True, True, False]
    assert core.load(at) == 3
    assert [core.stack_pop(at, 3) for _ in range(4)] == [33, 22, 11, None]
    with pytest.raises(ValueError):
        core.stack_push(carena.size - 8, 3, 1, 4)  # its items would run past the arena


def test_chan_retire_ends_only_an_empty_channel_whose_rings_kept_their_size(carena: Arena
                                                                              ) -> None:
    core = carena.core
    off = _chan_block(carena, 2)
    carena.core.store(off + 8 * 12, 0)  # grown: no
    assert core.chan_send(off, b"\x01")
    assert core.chan_retire(off) is False  # it holds a value
    assert core.chan_recv(off) == b"\x01"
    core.store(off + 8 * 12, 1)
    assert core.chan_retire(off) is False  # a ring grew
    core.store(off + 8 * 12, 0)
    assert core.chan_retire(off) is True
    assert core.load(off) == 0  # the magic: a stale name is refused
    with pytest.raises(ValueError, match="no shared channel"):
        core.chan_send(off, b"\x02")
    core.chan_reopen(off, 5)
    assert (core.load(off), core.load(off + 8), core.load(off + 8 * 10)) == (CHAN_MAGIC, 5, 1)
    assert core.chan_send(off, b"\x03") and core.chan_recv(off) == b"\x03"
