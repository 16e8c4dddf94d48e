"""The run queue between Ps: publishing new goroutines, taking them back, stealing.

``go()`` on a P serializes the goroutine into that P's stealable ring in the arena (``place``,
in batches: ``flush_spawns``); the P keeps the callable and runs its own frames without
unpickling them (``pop_own``), unless an idle P steals half of its queue first (``steal``,
``adopt``). ``RunQueue`` is one P's side of it; the broker holds one and hands its bound
``place``, ``flush_spawns``, ``pop_own`` and ``steal`` to the hub and the compiled core, so a
call costs one method call. Stealing tells the P's task table (``replace.py``) and reporter
(``reports.py``) what came, and the broker's watchers (``watch.py``) see every frame taken.

Invariants:
- An entry is ``(seq, fn, args, kwargs, made)``, and the frame when the codec made it; ``made``
  is the goroutine's ``G.made`` (where ``go()`` was called, as its frame carries it).
- ``unflushed`` holds frames not yet in the ring (the last batch, or what a full ring could not
  take, oldest first) and ``unq`` their entries, in the same order: they are counted by
  ``num_goroutine`` and published at ``SPAWN_BATCH`` or at the next poll, at most ``FLUSH_MAX``
  per try. Nobody else can see them: the owner runs them first, without the ring's lock.
- ``pending`` holds the entries of the frames published to the ring, in increasing ``seq``
  order; an entry older than the frame the owner pops from the ring was stolen, so it is
  dropped then. All three are deques: both ends in O(1), however long the fan-out.
- A P marks itself RUNNING (``busy``) before taking stolen frames, so checkdead never sees it
  STUCK with work in hand.
- ``own_entry`` is the class's method while nobody watches, else the watched variant
  (``watch``).
- Owner P only (the rings themselves are locked for every P).
"""

from __future__ import annotations

import itertools
import operator
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from sys import _getframe
from typing import Any, cast

from .._chan import Chan
from .._hub import Hub
from .._hub.g import compiled_sites, queued_here
from . import argwatch, promote, tasks
from . import ctx as C
from .replace import TaskTable
from .reports import Reporter
from .watch import Watcher

SPAWN_BATCH = 32  # go() frames published to the stealable queue at once
FLUSH_MAX = 256  # most unflushed frames one flush offers the ring (a full ring takes none)
OWN_BATCH = 16  # unpublished frames a P takes back at once while the ring is full (pop_own)
# most frames one steal takes (half the queue, at most this, as Go's runqsteal takes half of a
# 256-slot queue): what a thief takes becomes its own goroutines, which no other P can take back
STEAL_MAX = 128
# the Spawner's creator(hub): the record of the goroutine calling go() (None, read as 0, when
# none runs); the compiled core reads its id from the record
_CREATOR = operator.attrgetter("current")
_SEQ = operator.itemgetter(0)  # an entry's seq


def _drop_left(d: deque, n: int) -> None:
    """Remove the ``n`` leftmost items of ``d``, in C (a Python loop of ``popleft`` calls cost
    P0 a third of a 100 k tiny-task fan-out's receiving phase)."""
    deque(itertools.starmap(d.popleft, itertools.repeat((), n)), maxlen=0)


class SpawnState:
    """What ``place`` remembers between calls: the seq last given, the callable last given and
    its ``pickle_fn`` entry. The compiled core's ``Spawner`` holds the same three and runs the
    common ``go()`` itself (``RunQueue._spawner``)."""

    __slots__ = ("seq", "fn_last", "entry", "armed")

    def __init__(self) -> None:
        self.seq = 0
        self.armed = True  # an empty ring takes the next frame at once (place)
        self.fn_last: Any = None
        self.entry: tuple[bytes, bytes, str] = (b"", b"", "")


class RunQueue:
    """This P's run queue between Ps (see the module doc)."""

    def __init__(self, ctx: C.Ctx, hub: Hub, task_table: TaskTable, reporter: Reporter,
                 warn: Callable[[str, bytes], None]) -> None:
        """``warn(text, key)``: a migration warning for a stolen frame (once per ``key``)."""
        self.ctx = ctx
        self.hub = hub
        self.p = ctx.p
        self.arena = ctx.arena
        self.task_table = task_table
        self.reporter = reporter
        self.warn = warn
        self.pending: deque[tuple] = deque()
        self.unflushed: deque[bytes] = deque()
        self.unq: deque[tuple] = deque()
        self.ring_full = 0  # frames in this P's ring when it last refused a flush (0: it took)
        self.encode_plain = tasks.plain_encoder(ctx.arena)
        self.decode_plain = tasks.plain_decoder(self.encode_plain)
        self.rng = random.Random()
        self.watchers: tuple[Watcher, ...] = ()
        self.q = ctx.q
        self.hungry_i = ctx.base + C.G_HUNGRY  # the G_HUNGRY hint's word (ctx.py)
        self.ring = ctx.runq[self.p]  # this P's run queue
        # go(): the compiled core's Spawner when it runs (place() is its slow path), else place
        self.spawn: Any = self._spawner(hub)

    def _spawner(self, hub: Hub) -> Any:
        """This P's go() state: a ``SpawnState`` for ``place``, or on the compiled core its
        ``Spawner``, whose ``go`` frames and queues the call of the callable last given with
        plain arguments as ``place`` does (and calls ``place`` for every other call)."""
        encoder = getattr(self.encode_plain, "__self__", None)
        if encoder is None:
            return SpawnState()
        from .._shm.native import core

        bells = tuple(cast(Any, b).offset for b in self.ctx.bells)  # native: in the arena
        return core().Spawner(encoder, hub, self.p, self.unflushed, self.unq, self.place,
                              self.flush_spawns, SPAWN_BATCH, compiled_sites(), _CREATOR,
                              self.hungry_i * 8, self.ring.offset, self.pending,
                              self.wake_hungry, bells)

    def holds(self) -> bool:
        """Whether goroutines of this P wait in its queue (published or not)."""
        return bool(self.unflushed or self.pending)

    # ------------------------------------------------------------------ go()

    def place(self, fn: Any, args: tuple, kwargs: dict, made: tuple | None = None) -> None:
        """Queue a new goroutine where idle Ps can steal it (TypeError if it cannot travel).

        A frame goes into the ring at once when nothing of this P is left there for idle Ps
        to take (once between two polls of the hub: a burst of ``go()`` calls fills the ring
        in batches), or another P is idle and nothing was published for it (``G_HUNGRY``,
        which also rings it): it can start the goroutine whatever this one does next (Go's
        ``newproc`` and ``wakep``). Others are published in batches (at ``SPAWN_BATCH``, and
        whenever the hub polls), so a loop of ``go()`` calls pays one lock per batch. The
        goroutine gets its G only if it runs here (a thief makes its own). The common fan-out
        call, scalar and channel arguments of the function last given, is framed by one call
        (``encode_plain``: the compiled core's when it runs, else ``tasks.encode_plain``);
        ``tasks.pack`` frames every other call.
        """
        if self.hub.stopping:
            return
        st = self.spawn
        if fn is st.fn_last:
            entry = st.entry
        else:
            entry = st.entry = tasks.pickle_fn(fn)
            st.fn_last = fn
        st.seq = seq = st.seq + 1
        if made is None:  # (given: a goroutine handed back, made where it was first queued)
            try:
                at = _getframe(2)  # go()'s caller: the search for the user's call starts there
            except ValueError:  # go() at the bottom of a stack (a greenlet's run)
                at = None
            made = queued_here(at, self.hub.current)  # G.created_by
        frame = None if kwargs else self.encode_plain(seq, self.p, entry, args, made)
        if frame is None:
            frame = tasks.pack(seq, self.p, fn, args, kwargs, self.arena, made)
            item: tuple = (seq, fn, args, kwargs, made, frame)  # the codec's: freed if run here
        else:
            item = (seq, fn, args, kwargs, made)
        unflushed = self.unflushed
        if not unflushed:  # else behind those: frames enter the ring in seq order
            hungry = self.q[self.hungry_i]
            if hungry or (st.armed and not len(self.ring)):
                self.pending.append(item)  # the entry first (pop_own pairs them)
                if self.ring.try_put(frame):
                    if not hungry:
                        st.armed = False  # once a pass: a burst of go() fills it in batches
                    self.wake_hungry()
                    return
                self.pending.pop()  # full: queued with the rest
        self.unq.append(item)
        unflushed.append(frame)
        # every batch (also retried while the ring is full), and while a P waits for work
        if not len(unflushed) % SPAWN_BATCH or self.q[self.hungry_i]:
            self.flush_spawns()

    def flush_spawns(self) -> None:
        """Publish the frames of goroutines spawned since the last flush."""
        frames = self.unflushed
        if not frames:
            return
        ring = self.ctx.runq[self.p]
        if self.ring_full and len(ring) >= self.ring_full:
            return  # no thief took a frame since the ring refused the last ones: still full
        n = ring.put_many(
            list(frames) if len(frames) <= FLUSH_MAX
            else list(itertools.islice(frames, FLUSH_MAX)))
        self.ring_full = 0 if n else len(ring)
        if n:
            # what a full ring could not take waits here, still stealable once thieves make
            # room (made local goroutines, a fan-out larger than the ring ran mostly on this P,
            # and a preempted spawner waited behind all of them)
            unq = self.unq
            if n == len(frames):
                frames.clear()
                self.pending.extend(unq)
                unq.clear()
            else:
                self.pending.extend(itertools.islice(unq, n))
                _drop_left(frames, n)
                _drop_left(unq, n)
            # the P the hint names is rung; without a hint, any idle P (one that stored its
            # status and not yet its hint must not sleep through these frames)
            if not self.wake_hungry():
                self.wakep()

    def wake_hungry(self) -> bool:
        """Frames were published: take the hint and ring the P it names; whether one did.

        The hint is read by an atomic add, a full barrier after the frames' store: a P that
        went idle stored its hint before it looked at the rings one last time (broker.idle),
        so either this sees that hint or that look sees the frames."""
        h = self.arena.add_word(self.hungry_i * 8, 0)
        if not h:
            return False
        self.q[self.hungry_i] = 0
        bells = self.ctx.bells
        if h > len(bells):  # a word of the arena: task.c's Spawner raises the same
            raise ValueError(f"the hint word reads {h}, not a P of {len(bells)} (a corrupt "
                             "control block)")
        bells[h - 1].ring()
        return True

    def wakep(self) -> None:
        """Ring one idle P (starting the search at a random P, so wakes spread out)."""
        ctx = self.ctx
        n = ctx.nprocs
        start = self.rng.randrange(n)
        for i in range(n):
            q = (start + i) % n
            if q != self.p and ctx.pload(q, C.P_STATUS) >= C.IDLE \
                    and ctx.pload(q, C.P_STATUS) != C.EXITED and not ctx.pload(q, C.P_DRAIN):
                ctx.bells[q].ring()
                return

    def busy(self) -> None:
        """This P has work again: leave IDLE/STUCK and count the transition (checkdead)."""
        ctx = self.ctx
        if ctx.pload(self.p, C.P_STATUS) != C.RUNNING:
            ctx.pstore(C.P_STATUS, C.RUNNING)
            ctx.padd(C.P_EPOCH, 1)

    # ------------------------------------------------------------------ this P's own frames

    def pop_own(self, hub: Hub) -> bool:
        """Make G's of this P's oldest queued goroutines, with the hub's goroutines not
        started yet (``fresh``; True if it found one).

        The oldest frames thieves cannot see come first, without any lock: ``OWN_BATCH`` at
        once while more than a batch waits (the ring could not take them: the ring's frames are
        the thieves' share, and the hub runs the batch back to back, as one P runs a fan-out),
        else one. Then the ring's head, one at a time, as Go's runqget: a goroutine that starts
        here never moves, so taking a batch left other Ps idle at the end of a CPU-bound
        fan-out.
        """
        unflushed = self.unflushed
        if unflushed:
            unq, fresh, new_g, own_entry = self.unq, hub.fresh, hub.new_g, self.own_entry
            for _ in range(min(OWN_BATCH, len(unflushed)) if len(unflushed) > SPAWN_BATCH
                           else 1):
                unflushed.popleft()
                entry = own_entry(unq.popleft())
                g = new_g(entry[1], entry[2], entry[3], False)
                g.made = entry[4]
                fresh.append(g)
            return True
        pending = self.pending
        if not pending:
            return False
        frames = self.ring.get_many(1)
        if not frames:
            pending.clear()  # everything queued was stolen
            return False
        seq = tasks.frame_seq(frames[0])
        stolen = bisect_left(pending, seq, key=_SEQ)  # in seq order: those before it were
        if stolen:
            _drop_left(pending, stolen)
        if not pending or pending[0][0] != seq:
            return False
        entry = self.own_entry(pending.popleft())
        g = hub.new_g(entry[1], entry[2], entry[3], False)
        g.made = entry[4]
        hub.fresh.append(g)
        return True

    def own_entry(self, entry: tuple) -> tuple:
        """``entry``, the live ``(seq, fn, args, kwargs, made, ...)`` of a frame this P runs
        itself: the channel names its frame carries are consumed and a frame the codec made has
        its out-of-band argument blocks freed, as nobody will read it (promote.py's protocol)."""
        if len(entry) > 5:
            tasks.own_frame(entry[5], self.arena)
        else:  # encode_plain's frame: one name per untyped channel argument
            for a in entry[2]:
                if type(a) is Chan and a._type is None:
                    a._st.drop_name()  # type: ignore[attr-defined]
        return entry

    def _own_entry_watched(self, entry: tuple) -> tuple:
        """``own_entry`` while watchers watch: each learns the frame's seq first."""
        for w in self.watchers:
            w.own(entry[0])
        return RunQueue.own_entry(self, entry)

    def watch(self, w: Watcher) -> None:
        """Send this queue's events to ``w`` too (owner P)."""
        self.watchers = (*self.watchers, w)
        self.own_entry = self._own_entry_watched

    def unwatch(self, w: Watcher) -> None:
        """Stop sending events to ``w``; nothing if it does not watch."""
        self.watchers = tuple(x for x in self.watchers if x is not w)
        if not self.watchers:
            self.__dict__.pop("own_entry", None)  # the class's method again

    # ------------------------------------------------------------------ other Ps' frames

    def steal(self, hub: Hub) -> bool:
        """Take half of another P's queued frames (rounded up, as Go's runqgrab; at most
        ``STEAL_MAX``) and make them this P's goroutines; True if any came."""
        ctx = self.ctx
        if ctx.pload(self.p, C.P_DRAIN):
            return False
        n = ctx.nprocs
        victims = [q for q in range(n) if q != self.p]
        self.rng.shuffle(victims)
        for q in victims:
            ring = ctx.runq[q]
            k = len(ring)
            if not k:
                continue
            self.busy()  # before taking: checkdead must not see STUCK while frames are in hand
            was_clean = self.task_table.steal_begins()
            frames = ring.get_many(min(k - k // 2, STEAL_MAX))
            ctx.padd(C.P_STOLEN, len(frames))
            for w in self.watchers:
                w.stolen(q, frames)
            self.task_table.steal_ends(was_clean, self.adopt(hub, frames))
            if frames:
                self.reporter.after_steal(hub)
                if len(ring):
                    self.wakep()  # work is left: another idle P may take its share (Go)
                return True
        return False

    def adopt(self, hub: Hub, frames: list[bytes]) -> list:
        """Queue a G for each of ``frames``, stolen from another P, with the hub's goroutines
        not started yet (``fresh``), and return them; a frame that cannot be unpacked becomes a
        G raising why, so that the run reports it."""
        unframe, known_fn, new_g = tasks.unframe, tasks.known_fn, hub.new_g
        decode = self.decode_plain
        gs: list = []
        i, n = 0, len(frames)
        while i < n:
            # the frames the compiled core decodes whole, then the one it leaves to this path
            done = decode(frames, i, tasks.fns, promote.names)
            if done:
                gs.extend(hub.new_gs(done))
                i += len(done)
                if i == n:
                    break
            frame = frames[i]
            i += 1
            try:
                t = unframe(frame)
                fn = known_fn(t[2])
                if fn is not None and type(t[4]) is list and not t[5]:  # plain, callable known
                    g = new_g(fn, tuple(t[4]), {}, False)
                    g.made = tasks.made_of(t)
                    gs.append(g)
                    continue
                fn, args, kwargs, warn, digest = tasks.unpack_items(t, self.arena)
                pinned = False
                if type(t[4]) is bytes:  # the codec carried them: lists, dicts, arrays to watch
                    watched = argwatch.watch(self.p, self.warn, fn, args, kwargs)
                    pinned = watched is not fn  # handed on, it would lose the watch
                    fn = watched
                made = tasks.made_of(t)
            except BaseException as exc:
                fn, args, kwargs, warn, digest = _failing(exc), (), {}, "", b""
                pinned = True
                made = None
            if warn:
                self.warn(warn, digest)
            g = new_g(fn, args, kwargs, pinned)
            g.made = made
            gs.append(g)
        hub.fresh.extend(gs)
        return gs


def _failing(err: BaseException) -> Any:
    def fail() -> None:
        raise RuntimeError(f"cannot run a goroutine stolen from another P: {err}") from err

    return fail
