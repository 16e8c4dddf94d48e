"""The run queue between Ps: publishing new goroutines, taking them back, stealing, idling.

``go()`` on a P serializes the goroutine into that P's stealable ring in the arena (``place``,
in batches: ``flush_spawns``); the P keeps the callable and runs its own frames without
unpickling them (``pop_own``), unless an idle P steals half of its queue first (``steal``,
``adopt``). A P with nothing to run polls, steals, then parks on its doorbell (``idle``). The
functions take the P's ``Broker``; it binds the hot ones (``place``, ``flush_spawns``,
``idle``, ``pop_own``, ``busy``) as its methods, so a call costs what a method call did.

Invariants:
- An entry is ``(seq, fn, args, kwargs)``, and the frame when the codec made it.
- ``b.unflushed`` holds frames not yet in the ring (the last batch, or what a full ring could
  not take, oldest first) and ``b.unq`` their entries, in the same order: they are counted by
  ``num_goroutine`` and published at ``SPAWN_BATCH`` or at the next poll, at most ``FLUSH_MAX``
  per try. Nobody else can see them: the owner runs them first, without the ring's lock.
- ``b.pending`` holds the entries of the frames published to the ring, in increasing ``seq``
  order; an entry older than the frame the owner pops from the ring was stolen, so it is
  dropped then. All three are deques: both ends in O(1), however long the fan-out.
- A P marks itself RUNNING (``busy``) before taking stolen frames, so checkdead never sees it
  STUCK with work in hand; it publishes STUCK or IDLE only after describing its goroutines.
- Owner P only (the rings themselves are locked for every P).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._chan import Chan
from .._hub import Hub
from . import argwatch, checkdead, counters, migrate_warn, promote, replace, reports, tasks
from . import ctx as C

if TYPE_CHECKING:
    from .broker import Broker

_msg = msgspec.msgpack.Encoder().encode

SPAWN_BATCH = 32  # go() frames published to the stealable queue at once
FLUSH_MAX = 256  # most unflushed frames one flush offers the ring (a full ring takes none)
OWN_BATCH = 16  # unpublished frames a P takes back at once while the ring is full (pop_own)
# most frames one steal takes (half the queue, at most this, as Go's runqsteal takes half of a
# 256-slot queue): what a thief takes becomes its own goroutines, which no other P can take back
STEAL_MAX = 128
IDLE_WAIT = 0.25  # longest park of an idle P without a timer (safety net, not a poll)


class SpawnState:
    """What ``place`` remembers between calls: the seq last given, the callable last given and
    its ``pickle_fn`` entry. The compiled core's ``Spawner`` holds the same three and runs the
    common ``go()`` itself (``spawner``)."""

    __slots__ = ("seq", "fn_last", "entry")

    def __init__(self) -> None:
        self.seq = 0
        self.fn_last: Any = None
        self.entry: tuple[bytes, bytes, str] = (b"", b"", "")


def spawner(b: Broker, hub: Hub) -> Any:
    """This P's go() state: a ``SpawnState`` for ``place``, or on the compiled core its
    ``Spawner``, whose ``go`` frames and queues the call of the callable last given with plain
    arguments as ``place`` does (and calls ``place`` for every other call)."""
    encoder = getattr(b.encode_plain, "__self__", None)
    if encoder is None:
        return SpawnState()
    from .._shm.native import core

    return core().Spawner(encoder, hub, b.p, b.unflushed, b.unq, b.place, b.flush_spawns,
                          SPAWN_BATCH)


def place(b: Broker, fn: Any, args: tuple, kwargs: dict) -> None:
    """Queue a new goroutine where idle Ps can steal it (TypeError if it cannot travel).

    Frames are published in batches (at ``SPAWN_BATCH``, and whenever the hub polls), so a
    loop of ``go()`` calls pays one lock per batch. The goroutine gets its G only if it
    runs here (a thief makes its own). The common fan-out call, scalar and channel arguments
    of the function last given, is framed by one call (``b.encode_plain``: the compiled core's
    when it runs, else ``tasks.encode_plain``); ``tasks.pack`` frames every other call.
    """
    if b.hub.stopping:
        return
    st = b.spawn
    if fn is st.fn_last:
        entry = st.entry
    else:
        entry = st.entry = tasks.pickle_fn(fn)
        st.fn_last = fn
    st.seq = seq = st.seq + 1
    frame = None if kwargs else b.encode_plain(seq, b.p, entry, args)
    if frame is None:
        frame = tasks.pack(seq, b.p, fn, args, kwargs, b.arena)
        b.unq.append((seq, fn, args, kwargs, frame))  # the codec's frame: freed if run here
    else:
        b.unq.append((seq, fn, args, kwargs))
    unflushed = b.unflushed
    unflushed.append(frame)
    if not len(unflushed) % SPAWN_BATCH:  # every batch; also retried while the ring is full
        flush_spawns(b)


def flush_spawns(b: Broker) -> None:
    """Publish the frames of goroutines spawned since the last flush."""
    frames = b.unflushed
    if not frames:
        return
    ring = b.ctx.runq[b.p]
    if b.ring_full and len(ring) >= b.ring_full:
        return  # no thief took a frame since the ring refused the last ones: still full
    n = ring.put_many(
        list(frames) if len(frames) <= FLUSH_MAX else list(itertools.islice(frames, FLUSH_MAX)))
    b.ring_full = 0 if n else len(ring)
    if n:
        # what a full ring could not take waits here, still stealable once thieves make room
        # (made local goroutines, a fan-out larger than the ring ran mostly on this P, and a
        # preempted spawner waited behind all of them)
        unq = b.unq
        if n == len(frames):
            frames.clear()
            b.pending.extend(unq)
            unq.clear()
        else:
            b.pending.extend(itertools.islice(unq, n))
            for _ in range(n):
                frames.popleft()
                unq.popleft()
        wakep(b)


def wakep(b: Broker) -> None:
    """Ring one idle P (starting the search at a random P, so wakes spread out)."""
    ctx = b.ctx
    n = ctx.nprocs
    start = b.rng.randrange(n)
    for i in range(n):
        q = (start + i) % n
        if q != b.p and ctx.pload(q, C.P_STATUS) >= C.IDLE \
                and ctx.pload(q, C.P_STATUS) != C.EXITED and not ctx.pload(q, C.P_DRAIN):
            ctx.bells[q].ring()
            return


def busy(b: Broker) -> None:
    """This P has work again: leave IDLE/STUCK and count the transition (checkdead)."""
    ctx = b.ctx
    if ctx.pload(b.p, C.P_STATUS) != C.RUNNING:
        ctx.pstore(C.P_STATUS, C.RUNNING)
        ctx.padd(C.P_EPOCH, 1)


def pop_own(b: Broker, hub: Hub) -> bool:
    """Make this P's oldest queued goroutines runnable here (True if it found one).

    The oldest frames thieves cannot see come first, without any lock: ``OWN_BATCH`` at once
    while more than a batch waits (the ring could not take them: the ring's frames are the
    thieves' share, and the hub runs the batch back to back, as one P runs a fan-out), else
    one. Then the ring's head, one at a time, as Go's runqget: a goroutine taken here starts
    here and can never move, so taking a batch left other Ps idle at the end of a CPU-bound
    fan-out.
    """
    unflushed = b.unflushed
    if unflushed:
        unq, runq, new_g, own_entry = b.unq, hub.runq, hub.new_g, b.own_entry
        for _ in range(min(OWN_BATCH, len(unflushed)) if len(unflushed) > SPAWN_BATCH else 1):
            unflushed.popleft()
            entry = own_entry(unq.popleft())
            runq.append(new_g(entry[1], entry[2], entry[3], False))
        return True
    pending = b.pending
    if not pending:
        return False
    frames = b.ctx.runq[b.p].get_many(1)
    if not frames:
        pending.clear()  # everything queued was stolen
        return False
    seq = tasks.frame_seq(frames[0])
    while pending and pending[0][0] < seq:  # in seq order: the frames before it were stolen
        pending.popleft()
    if not pending or pending[0][0] != seq:
        return False
    entry = b.own_entry(pending.popleft())
    hub.runq.append(hub.new_g(entry[1], entry[2], entry[3], False))
    return True


def own_entry(b: Broker, entry: tuple) -> tuple:
    """``entry``, the live ``(seq, fn, args, kwargs, ...)`` of a frame this P runs itself: the
    channel names its frame carries are consumed and a frame the codec made has its out-of-band
    argument blocks freed, as nobody will read it (promote.py's protocol)."""
    if len(entry) > 4:
        tasks.own_frame(entry[4], b.arena)
    else:  # encode_plain's frame: one name per untyped channel argument
        for a in entry[2]:
            if type(a) is Chan and a._type is None:
                a._st.drop_name()  # type: ignore[attr-defined]
    return entry


def steal(b: Broker, hub: Hub) -> bool:
    ctx = b.ctx
    if ctx.pload(b.p, C.P_DRAIN):
        return False
    n = ctx.nprocs
    victims = [q for q in range(n) if q != b.p]
    b.rng.shuffle(victims)
    for q in victims:
        ring = ctx.runq[q]
        k = len(ring)
        if not k:
            continue
        busy(b)  # before taking: checkdead must not see STUCK while frames are in hand
        clean = b.clean
        if clean:  # frames in hand: lost with this P should it die now (replace.py)
            ctx.pstore(C.P_DIRTY, 1)
        frames = ring.get_many(max(1, min(k // 2, STEAL_MAX)))
        ctx.padd(C.P_STOLEN, len(frames))
        adopt(b, hub, frames)
        if clean and b.clean:  # every frame was an executor task, now in the task table
            ctx.pstore(C.P_DIRTY, 0)
        if frames:
            # should this P die, P0 can name what it took: now, or when the hub next polls
            # (steals of a tiny-task fan-out come thousands a second; each description costs
            # what ~20 of its tasks do)
            if time.monotonic() - b.info_t >= reports.INFO_EVERY:
                reports.publish_info(b, hub)
            else:
                b.info_stale = True
            if len(ring):
                wakep(b)  # work is left: another idle P may take its share (Go)
            return True
    return False


def work_waiting(b: Broker) -> bool:
    """Whether this P has something to take from other Ps: queued frames of its own, messages,
    stealable frames, a stop or a lost P. Reads only: sysmon calls it from its thread."""
    ctx = b.ctx
    if b.unflushed or b.wakes_out or b.outbox or ctx.gload(C.G_STOP) or ctx.gload(C.G_LOST):
        return True
    if b.pending and len(ctx.runq[b.p]):
        return True
    return checkdead.work_visible(b)


def adopt(b: Broker, hub: Hub, frames: list[bytes]) -> None:
    """Queue a G for each of ``frames``, stolen from another P (a frame that cannot be
    unpacked becomes a G raising why, so that the run reports it)."""
    unframe, known_fn, new_g, decode = tasks.unframe, tasks.known_fn, hub.new_g, b.decode_plain
    gs: list = []
    i, n = 0, len(frames)
    while i < n:
        # the frames the compiled core decodes whole, then the one it leaves to this path
        done = decode(frames, i, tasks.fns, promote.names)
        if done:
            gs.extend([new_g(fn, args, {}, True) for fn, args in done])
            i += len(done)
            if i == n:
                break
        frame = frames[i]
        i += 1
        try:
            t = unframe(frame)
            fn = known_fn(t[2])
            if fn is not None and type(t[4]) is list and not t[5]:  # plain, callable known
                gs.append(new_g(fn, tuple(t[4]), {}, True))
                continue
            fn, args, kwargs, warn, digest = tasks.unpack_items(t, b.arena)
            if type(t[4]) is bytes:  # the codec carried them: lists, dicts, arrays to watch
                fn = argwatch.watch(b, fn, args, kwargs)
        except BaseException as exc:
            fn, args, kwargs, warn, digest = _failing(exc), (), {}, "", b""
        if warn and digest not in b.warned:
            b.warned.add(digest)
            if b.p == 0:
                migrate_warn.emit(warn)
            else:
                b.send(0, _msg((C.M_WARN, warn)))
        gs.append(new_g(fn, args, kwargs, True))
    if b.clean:
        replace.adopted(b, hub, gs)
    hub.runq.extend(gs)


def _failing(err: BaseException) -> Any:
    def fail() -> None:
        raise RuntimeError(f"cannot run a goroutine stolen from another P: {err}") from err

    return fail


def idle(b: Broker, hub: Hub, timeout: float | None, local_can_wake: bool) -> None:
    """Nothing runnable here: poll, steal, then park on the doorbell."""
    ctx = b.ctx
    if b.poll(hub) or hub.runq or hub.outcome is not None:
        busy(b)
        return
    if b.p and not b.clean:  # before a steal too: a P fed tasks without a pause gets clean
        replace.at_idle(b, hub)
    if steal(b, hub):
        busy(b)
        return
    stuck = not local_can_wake and not b.outbox and not b.pending and not b.unflushed
    now = time.monotonic()
    # describe the goroutines before publishing their count: whoever sees the count (P0
    # waiting for it before killing this P, say) finds the description already there
    if reports.gset(hub) != b.info_n or now - b.info_t > 0.05:
        reports.publish_info(b, hub)
    ctx.pstore(C.P_NGOR, len(hub.allgs))
    if now - b.metrics_t >= counters.PUBLISH_EVERY:  # metrics() asks every P anyway
        counters.publish(ctx, hub)
        b.metrics_t = now
    ctx.pstore(C.P_STATUS, C.STUCK if stuck else C.IDLE)
    # blocks of received buffers that died since (deferred frees): back to the allocator
    # before sleeping, so that a sender's next large value reuses a block whose pages are
    # already mapped (a fresh 64 MiB block costs ~70 ms of page faults on the 2-vCPU VM)
    b.arena.collect()
    # A post taken here is a full barrier: a producer that queued work before reading our
    # status either sees IDLE (and rings) or its work is visible to the re-check below.
    if ctx.bell.wait(0) or checkdead.work_visible(b):
        busy(b)
        return
    wait = IDLE_WAIT if timeout is None else min(timeout, IDLE_WAIT)
    if b.p == 0 and stuck:
        if checkdead.check(b, hub):
            return
        wait = min(wait, checkdead.DEADLOCK_SETTLE)
    ctx.padd(C.P_PARKS, 1)
    if ctx.bell.wait(wait):
        busy(b)

