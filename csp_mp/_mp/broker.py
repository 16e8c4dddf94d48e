"""The broker: what a P's hub asks of the other Ps (Go's work stealing, wake-ups and checkdead).

One per P process, plugged into its hub (``hub.broker``), and the ``ProcLayer`` of the shared
channels of this process. It reads this P's inbox (WAKE messages from other Ps, stack requests
and replies, panics and warnings forwarded to P0), wakes the goroutines parked on shared objects
(``deliver``), and keeps the handles of shared objects and the lock stripes. The other jobs are
parts it is composed of, each a class owning its state, in a module that imports none of the
others' above it:

- ``messages``: this P's messages to other Ps, wake-ups sent in batches and ``P_OWES``
  (``Messages``);
- ``runq``: the stealable run queue of this P and stealing (``RunQueue``);
- ``balance``: after a time slice, unstarted goroutines to idle Ps (``Balance``);
- ``tokens``: select tokens, the words that make exactly one case of a select win
  (``TokenTable``);
- ``replace``: whether this worker P holds only executor tasks, and those tasks (``TaskTable``);
- ``reports``: goroutine descriptions and stacks, panic and lost-P reports (``Reporter``);
- ``checkdead``: deadlock detection across Ps (``Checkdead``, run by P0).

``idle`` and ``poll`` bring them together (Go's findRunnable). The parts' methods on hot paths
(``place``, ``flush_spawns``, ``claim``, ``token_live``, ``owe``, ``send``, ...) are bound
methods cached as this broker's attributes, so the hub and the channels call them without an
extra layer; tools watch it through ``watch`` (``watch.py``).

Invariants:
- ``wakes_out``/``outbox`` are the ``Messages`` part's lists, ``unflushed``/``pending`` the run
  queue's deques and ``token_waiting`` the token table's dict, read here (never rebound by
  either side).
- ``_queue_wake`` is ``Messages.queue_wake`` while nobody watches, else the watched variant.
- Owner P only, except ``claim``/``token_live``/``plain_live`` and ``chan_lock_index``/
  ``obj_lock_index``, which any P's channels call for any P under the documented locks, and
  ``work_waiting`` (reads only, any thread).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, cast

import msgspec

from .._chan.block import _OWN_SPARES as OWN_SPARES
from .._chan.block import _SPARE_SLOTS as SPARE_SLOTS
from .._chan.proclayer import K_GRANT, NO_OBJ, recv_payload
from .._chan.shared import SharedChan
from .._errors import InternalError
from .._hub import Hub, Outcome
from .._hub.g import WAITING
from .._shm import discard
from .._shm.doorbell import NativeDoorbell
from .._shm.layout import WAKE_ITEMS
from .._shm.native import core as native_core
from . import ctx as C
from . import migrate_warn, promote, tracing
from .balance import Balance
from .checkdead import DEADLOCK_SETTLE, Checkdead, work_visible
from .messages import Messages
from .promote import HandleRef
from .replace import TaskTable
from .reports import INFO_EVERY, Reporter
from .runq import OWN_BATCH, RunQueue
from .tokens import TOKEN_LOCKS, TokenTable
from .watch import Watcher

_msg = msgspec.msgpack.Encoder().encode
_unmsg = msgspec.msgpack.Decoder(tuple).decode

IDLE_WAIT = 0.25  # longest park of an idle P without a timer (safety net, not a poll)

# lock index ranges in the arena's lock set (lock 0 is the allocator's)
CHAN_LOCKS = 32
OBJ_LOCKS = 32


CHAN_SPIN = 50e-6  # seconds a goroutine alone on its P polls a shared channel before parking
_NCPU = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def spin_seconds(ctx: C.Ctx) -> float:
    """How long a lone goroutine polls a shared channel before parking: ``CHAN_SPIN`` when every
    P can have a core to itself (a P that spins then burns only its own core), else 0."""
    return CHAN_SPIN if ctx.gload(C.G_LOGICAL) <= _NCPU else 0.0


def nlocks_for(maxprocs: int) -> int:
    """How many arena locks a runtime of ``maxprocs`` Ps needs (the last: the spare pool's)."""
    return 1 + 2 * maxprocs + CHAN_LOCKS + TOKEN_LOCKS + OBJ_LOCKS + 1


class _BellWaker:
    """The hub's ``Wakes`` protocol over the P's doorbell."""

    __slots__ = ("bell",)

    def __init__(self, bell: Any) -> None:
        self.bell = bell

    def post(self) -> None:
        self.bell.ring()

    def wait(self, timeout: float | None) -> bool:
        return self.bell.wait(timeout)


class Broker:
    """This P's link to the others (see the module docstring); the shared channels'
    ``ProcLayer``."""

    def __init__(self, ctx: C.Ctx, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.p = ctx.p
        self.arena = ctx.arena
        self.spin_seconds = spin_seconds(ctx)
        base = 1 + 2 * ctx.maxprocs
        self.chan_lock_base = base
        self.obj_lock_base = base + CHAN_LOCKS + TOKEN_LOCKS
        self._next_chan_lock = random.randrange(CHAN_LOCKS)
        self._next_obj_lock = random.randrange(OBJ_LOCKS)
        # messaging: this P's inbox, and its messages to other Ps (a part, bound once)
        self._inbox = ctx.inbox[ctx.p]
        self.use_messages(Messages(ctx, hub))
        self.warned: set[bytes | str] = set()  # warnings shown (P0) or sent: text, key
        self.watchers: tuple[Watcher, ...] = ()
        # goroutine ids come in batches unique in the runtime; those of this P's earlier
        # processes are below its floor (replace.py)
        self.gfloor = ctx.pload(ctx.p, C.P_GFLOOR)
        hub.use_ids(ctx.goids())  # small ids, unique in the runtime (ctx.G_GOIDS)
        # arena offset -> weak ref to this process's Chan handle (promote.HandleRef); the refs
        # of dead handles wait in ``dead`` for release_handles (promote.py's protocol)
        self.chans: dict[int, Any] = {}
        self.dead: list[Any] = []
        # arena offset -> weak ref to this process's atomic or semaphore handle (promote.ObjRef)
        self.objs: dict[int, Any] = {}
        self.spares = ctx.spares  # destroyed channels' blocks, for any P
        self.chan_states: dict[int, SharedChan] = {}  # SharedChan.attach's
        self.spare_states: dict[int, list[SharedChan]] = {}  # blocks this P destroyed
        self.live_word = ctx.pbase + C.P_LIVE_CHAN  # its live channels (ProcLayer)
        # the parts
        self.reporter = Reporter(ctx, hub, self)
        self.checkdead = Checkdead(ctx, self.reporter.gather_stacks)
        self.task_table = TaskTable(ctx, hub)
        self.runq = RunQueue(ctx, hub, self.task_table, self.reporter, self.warn_migration)
        # the compiled core's token claims and wake-ups (the shared channel's hand-off)
        self.peers: Any = self._peers()
        self.tokens = TokenTable(ctx, base + CHAN_LOCKS, self.gfloor, self.peers)
        # the parts' methods the hub, the channels and the compiled core call (bound once)
        rq, tt, rep = self.runq, self.tokens, self.reporter
        self.place = rq.place
        self.flush_spawns = rq.flush_spawns
        self.pop_own = rq.pop_own
        self.steal = rq.steal
        self.busy = rq.busy
        self.unflushed = rq.unflushed
        self.pending = rq.pending
        self.spawn = rq.spawn  # go(): the SpawnState or compiled Spawner (its armed flag)
        self.balance = Balance(ctx, rq)
        self.new_token = tt.new_token
        self.claim = tt.claim
        self.token_live = tt.token_live
        self.plain_live = tt.plain_live
        self.token_waiting = tt.waiting
        self.report_panic = rep.report_panic
        self.gather_stacks = rep.gather_stacks
        self.stats = rep.stats
        # go(): the compiled core's Spawner when it runs (place() is its slow path), else place
        hub.set_placer(getattr(rq.spawn, "go", rq.place))
        # the compiled core's registration and release of channel handles (promote.py's
        # protocol, whose Python path _register and release_handles spell out), else None
        self.handles: Any = (native_core().Handles(
            ctx.arena.core, self.chans, promote.names, self.dead, self.chan_states,
            self.spare_states, OWN_SPARES, self.spares.stacks(), self.spares.lock_index,
            SPARE_SLOTS, promote.state_facts, promote.adopt_state, self._release_slow,
            self.live_word * 8)
            if ctx.arena.core is not None else None)
        if self.handles is not None:  # the whole release in one C call
            self.release_handles = self.handles.release
        # this P's doorbell in the arena (compiled core): a channel poll ends when it rings
        self.bell_off = -1 if self.peers is None else cast(NativeDoorbell, ctx.bell).offset
        ctx.pstore(C.P_PID, os.getpid())
        ctx.pstore(C.P_STATUS, C.RUNNING)
        if self.p == 0:  # where plain code meets a poisoned arena: the lost P is what it raises
            ctx.arena.poisoned_error = self.reporter.lost_error
        hub.use_waker(_BellWaker(ctx.bell))  # M threads wake this P through its doorbell
        if self.p:  # a worker P: replaced, should it die holding only executor tasks
            self.task_table.start_clean()

    def use_messages(self, mail: Messages) -> None:
        """Make ``mail`` this P's messages to other Ps, its methods this broker's own."""
        self.messages = mail
        self.wakes_out = mail.wakes_out
        self.outbox = mail.outbox
        self.owe = mail.owe
        self.owe_cancel = mail.owe_cancel
        self._queue_wake = mail.queue_wake
        self.flush_wakes = mail.flush_wakes
        self.send = mail.send
        self.flush_outbox = mail.flush_outbox

    def _peers(self) -> Any:
        """The compiled core's ``Peers`` of this P (token claims by CAS, wake-ups written to
        other Ps' inboxes), or None on the Python path."""
        core = self.arena.core
        if core is None:
            return None
        ctx = self.ctx
        bells = [cast(NativeDoorbell, bell).offset for bell in ctx.bells]
        return native_core().Peers(
            core, self.p, ctx.tok_base * 8, C.TOKENS, [r.offset for r in ctx.inbox], bells,
            ctx.pidx(self.p, C.P_SENT) * 8, self.deliver_off, NO_OBJ,
            floor_off=ctx.pidx(0, C.P_GFLOOR) * 8, pstride=C.P_STRIDE * 8,
            owes_off=ctx.pidx(self.p, C.P_OWES) * 8)

    @property
    def seq(self) -> int:
        """The seq of the last frame this P queued (go() calls framed so far)."""
        return int(self.runq.spawn.seq)

    # ------------------------------------------------------------------ hook points

    def watch(self, w: Watcher) -> None:
        """Send this P's process-layer events to ``w`` too (``watch.py``; owner P)."""
        if w in self.watchers:
            raise ValueError(f"{w!r} already watches this broker")
        self.watchers = self.messages.watchers = (*self.watchers, w)
        self.runq.watch(w)
        self._queue_wake = self.messages.queue_wake_watched
        if self.peers is not None:  # every hand-off's wake-up comes through deliver_off
            self.peers.divert = True

    def unwatch(self, w: Watcher) -> None:
        """Stop sending events to ``w``; nothing if it does not watch."""
        self.watchers = self.messages.watchers = tuple(x for x in self.watchers if x is not w)
        self.runq.unwatch(w)
        if not self.watchers:
            self._queue_wake = self.messages.queue_wake
            if self.peers is not None:
                self.peers.divert = False

    # ------------------------------------------------------------------ the ProcLayer's

    def spin_time(self, hub: Hub) -> float:
        """ProcLayer: how long a goroutine about to park on a shared channel may poll it: only
        when no other goroutine of this P is runnable or queued (owner P only)."""
        if hub.runq or hub.runnext is not None or hub.fresh or self.unflushed or self.pending:
            return 0.0
        return self.spin_seconds

    def run_own(self, hub: Hub) -> bool:
        """ProcLayer: make this P's goroutines not started yet run next, ahead of the caller,
        which yields (``hub.gosched``) and looks again, when nothing else is runnable: those the
        hub holds not started (``fresh``), else those ``pop_own`` takes from this P's queue
        while more are queued than other Ps are idle (Go's order: a P runs its own queue while
        idle Ps steal from it; what is left for them stays theirs to take). At most
        ``OWN_BATCH`` run before the caller looks again: a batch ``pop_own`` took runs back to
        back (one at a time, a tiny task cost the receiver two switches and a look each)."""
        if hub.runq or hub.runnext is not None:
            return False
        if not hub.fresh:
            if not (self.pending or self.unflushed):
                return False
            if self.unflushed:  # published first: a P still starting (RUNNING until it idles)
                self.flush_spawns()  # or one that goes idle next must be able to take them
            ctx = self.ctx
            idle = 0
            for q in range(ctx.nprocs):
                if q != self.p and ctx.pload(q, C.P_STATUS) != C.RUNNING:
                    idle += 1
            if idle and len(self.unflushed) + len(ctx.runq[self.p]) <= idle:
                return False
            if not self.pop_own(hub):
                return False
        fresh, runq = hub.fresh, hub.runq
        for _ in range(min(len(fresh), OWN_BATCH)):
            runq.append(fresh.popleft())  # before the caller, whose gosched() follows
        return True

    def wakes_pending(self) -> bool:
        """Whether a wake-up between Ps is queued here or sent and not yet handled where it
        went (a goroutine it wakes still shows as blocked)."""
        if self.wakes_out:
            return True
        ctx = self.ctx
        n = ctx.nprocs
        return sum(ctx.pload(q, C.P_SENT) for q in range(n)) \
            != sum(ctx.pload(q, C.P_HANDLED) for q in range(n))

    def num_goroutine(self, hub: Hub) -> int:
        """Live goroutines in every P (other Ps' counts are their last published ones)."""
        return self.reporter.num_goroutine(hub, len(self.unflushed))

    # ------------------------------------------------------------------ lock stripes

    def chan_lock_index(self) -> int:
        self._next_chan_lock = (self._next_chan_lock + 1) % CHAN_LOCKS
        return self.chan_lock_base + self._next_chan_lock

    def obj_lock_index(self) -> int:
        self._next_obj_lock = (self._next_obj_lock + 1) % OBJ_LOCKS
        return self.obj_lock_base + self._next_obj_lock

    # ------------------------------------------------------------------ wake-ups and messages

    def deliver(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                data: bytes | None, st: SharedChan | None, obj: Any = NO_OBJ) -> None:
        """Tell goroutine ``gid`` of P ``p`` that its wait completed (after the lock is free).

        A receiver on this same P gets ``obj``, the sent object itself, when there is one:
        values between goroutines of one P pass by reference even on a shared channel.
        """
        if p == self.p:
            self._wake_local(gid, slot, case, kind, data, st, obj)
            return
        self._queue_wake(p, gid, slot, gen, case, kind, data, st.off if st is not None else 0)

    def deliver_off(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                    data: bytes | None, off: int, obj: Any = NO_OBJ) -> None:
        """``deliver`` for the compiled core's hand-off, which names the channel by ``off`` and
        always passes ``obj`` with a value (so a local receiver needs no channel state)."""
        if p == self.p:
            self._wake_local(gid, slot, case, kind, data, None, obj)
            return
        self._queue_wake(p, gid, slot, gen, case, kind, data, off)

    def _wake_local(self, gid: int, slot: int, case: int, kind: int, data: bytes | None,
                    st: Any, obj: Any = NO_OBJ) -> None:
        hub = self.hub
        if gid < self.gfloor:  # for a goroutine of this P's dead process (replace.py)
            if data is not None:
                discard(data, self.arena)
            return
        if slot >= 0:
            entry = self.token_waiting.get(slot)
            if entry is None:
                return self._lost_wake(f"select token {slot} of goroutine {gid}", data)
            g, sel, _gen = entry
            sel.done = True
            sel.case = case
        else:
            g = hub.allgs.get(gid)
            if g is None:
                return self._lost_wake(f"goroutine {gid}, which has ended", data)
        if g.state != WAITING:
            return self._lost_wake(f"goroutine {gid}, which is not waiting", data)
        if obj is not NO_OBJ:
            if data is not None:
                discard(data, self.arena)  # out-of-band blocks nobody will decode
            payload = (obj, True)
        else:
            payload = recv_payload(st, kind, data) if kind != K_GRANT else None
        hub.ready(g, payload, next_=False)

    def _lost_wake(self, what: str, data: bytes | None) -> None:
        """A claimed wait whose goroutine cannot take its wake-up: a broken invariant (a
        completed send or receive would be lost), reported as the run's failure."""
        if data is not None:
            discard(data, self.arena)
        hub = self.hub
        if hub.outcome is None:  # else the run is ending and its goroutines with it
            hub.outcome = Outcome("panic", error=InternalError(f"a wake-up for {what} on "
                                                               f"P{self.p} was lost"))

    def warn_migration(self, text: str, key: bytes) -> None:
        """Show a ``MigrationWarning`` once per ``key``: on P0 itself, from another P by
        sending it to P0."""
        if key in self.warned:
            return
        self.warned.add(key)
        if self.p == 0:
            # by its text too: the same warning comes from other Ps by text, and from a frame
            # of P0's own taken back from another P's queue by key
            if text in self.warned and text != key:
                return
            self.warned.add(text)
            migrate_warn.emit(text)
        else:
            self.send(0, _msg((C.M_WARN, text)))

    def drain_warnings(self) -> None:
        """As the run ends on P0: show the migration warnings other Ps sent that it has not read
        yet (a P sends one before it runs the goroutine, so main may finish first). Other
        messages are dropped: the run is over. Never raises (a diagnostic)."""
        try:
            for raw in self.ctx.inbox[self.p].get_many(1 << 16):
                if _unmsg(raw)[0] == C.M_WARN:
                    self.handle(raw)
        except Exception:
            pass

    def handle(self, raw: bytes) -> None:
        m = _unmsg(raw)
        kind = m[0]
        if kind == C.M_WAKE:
            _, gid, slot, gen, case, wkind, data, off = m[:WAKE_ITEMS]
            self.ctx.padd(C.P_HANDLED, 1)
            if len(m) > WAKE_ITEMS:  # sent while watched: the flow it carries
                for w in self.watchers:
                    w.wake_arrived(gid, m[WAKE_ITEMS])
            if slot >= 0:
                entry = self.token_waiting.get(slot)
                if entry is None or entry[2] != gen:
                    return
            st = self._chan_state(off) if off else None
            if st is None and data is not None:  # a waiter holds its channel's handle
                return self._lost_wake(f"goroutine {gid}, whose channel is gone", data)
            self._wake_local(gid, slot, case, wkind, data, st)
        elif kind == C.M_PANIC:
            self.reporter.on_panic(m[1], m[2], m[3])
        elif kind == C.M_WARN:
            self.warn_migration(m[1], m[1])
        elif kind == C.M_STACK_REQ:
            self.reporter.answer_stacks(self.hub, m[1], m[2])
        elif kind == C.M_STACK_REP:
            self.reporter.stack_reply(m[1], m[2], m[3])
        elif kind == C.M_TRACE_REQ or kind == C.M_TRACE_REP:
            tracing.on_message(self, m)

    def _chan_state(self, off: int) -> SharedChan | None:
        """The state of this P's handle on channel ``off``; None without one. Never a bare
        state: the block may have been freed and reused (promote.py's protocol)."""
        ref = self.chans.get(off)
        ch = ref() if ref is not None else None
        return ch._st if ch is not None else None

    def release_handles(self) -> None:
        """Drop the counts of this P's handles that died, destroying a channel (freeing an
        atomic's or a semaphore's block) whose count reaches 0 (owner P only, at a poll or
        after a send: never inside the weakref callback). The Python path: on the compiled
        core, ``Handles.release`` takes this method's place on the instance."""
        dead = self.dead
        chans = self.chans
        names = promote.names
        while dead:
            ref = dead.pop()
            if type(ref) is not HandleRef:  # an atomic's or a semaphore's handle
                self._release_obj(ref)
                continue
            off, st = ref.off, ref.st
            if chans.get(off) is ref:
                del chans[off]
                names.pop(st.key, None)
            if st.broker is self and st.drop_name() == 1:  # the last reference
                st.destroy()

    def _release_slow(self, ended: list, others: list, freed: list) -> None:
        """What the compiled core's ``Handles.release`` leaves to Python: channels to destroy
        (holding values, or no room among this P's spares), channels it ended to free (no
        room in the pool either), atomics' and semaphores' handles."""
        for st in ended:
            st.destroy()
        for st in freed:
            st._free()
        for ref in others:
            self._release_obj(ref)

    def _release_obj(self, ref: promote.ObjRef) -> None:
        """The count of a dead atomic or semaphore handle; at 0, its block is freed."""
        if self.objs.get(ref.off) is ref:
            del self.objs[ref.off]
        arena = self.arena
        if arena.add_word(ref.refs, -1) == 0:
            ref.free(arena, ref.off)
            self.ctx.live_add(ref.live, -1)

    # ------------------------------------------------------------------ the hub's poll

    def poll(self, hub: Hub) -> bool:
        """Drain the inbox and, when nothing is runnable, take this P's own queued goroutines."""
        ctx = self.ctx
        got = False
        if self.dead:
            self.release_handles()
        self.spawn.armed = True  # go() may put a frame into an empty ring at once (place)
        if self.wakes_out or self.messages.owes_kept:
            self.flush_wakes()
        if self.unflushed:
            # where idle Ps can steal them (SPEC: taken at once); what a full ring cannot
            # take stays, and pop_own below takes it first
            self.flush_spawns()
        if self.outbox:
            self.flush_outbox()
        if self.reporter.info_stale and time.monotonic() - self.reporter.info_t >= INFO_EVERY:
            self.reporter.publish_info(hub)
        inbox = self._inbox
        if len(inbox):
            for raw in inbox.get_many(256):
                self.handle(raw)
                got = True
        if ctx.gload(C.G_STOP) and hub.outcome is None:
            hub.outcome = Outcome("stop")
            return True
        if self.p == 0:
            lost = ctx.gload(C.G_LOST)
            if lost and hub.outcome is None:
                self.reporter.on_lost(lost - 1)
                return True
        if hub.preempted is not None:
            if hub.fresh or self.pending or self.unflushed:
                got = self.balance.after_slice(hub) or got
        elif not hub.runq and hub.runnext is None and not hub.fresh:
            self.balance.declined_at = 0.0
            got = self.pop_own(hub) or got
        elif self.pending and not len(ctx.runq[self.p]):
            # every frame published was stolen: their arguments go now, not when this P next
            # runs out of work (a channel among them is freed once no goroutine can reach it)
            self.pending.clear()
        if got:
            self.busy()
        return got

    # ------------------------------------------------------------------ idling

    def idle(self, hub: Hub, timeout: float | None, local_can_wake: bool) -> None:
        """Nothing runnable here: poll, steal, then park on the doorbell."""
        ctx = self.ctx
        if self.poll(hub) or hub.runq or hub.fresh or hub.outcome is not None:
            self.busy()
            return
        tt = self.task_table
        if self.p and not tt.clean:  # before a steal too: a P fed tasks without a pause gets clean
            tt.at_idle(bool(self.unflushed or self.pending or self.wakes_out or self.outbox))
        if self.steal(hub):
            self.busy()
            return
        stuck = not local_can_wake and not self.outbox and not self.pending and not self.unflushed
        # it publishes STUCK or IDLE only after describing its goroutines (reports.py)
        self.reporter.publish_idle(hub)
        ctx.pstore(C.P_STATUS, C.STUCK if stuck else C.IDLE)
        if not ctx.pload(self.p, C.P_DRAIN):
            ctx.gstore(C.G_HUNGRY, self.p + 1)  # a go() anywhere publishes and rings it
            # a full barrier (an atomic add) between that store and the last look at the rings
            # below: a publisher reads the hint after its frames' store (RunQueue.wake_hungry)
            self.arena.add_word((ctx.base + C.G_HUNGRY) * 8, 0)
        # blocks of received buffers that died since (deferred frees): back to the allocator
        # before sleeping, so that a sender's next large value reuses a block whose pages are
        # already mapped (a fresh 64 MiB block costs ~70 ms of page faults on the 2-vCPU VM)
        self.arena.collect()
        # A post taken here is a full barrier: a producer that queued work before reading our
        # status either sees IDLE (and rings) or its work is visible to the re-check below.
        if ctx.bell.wait(0) or work_visible(ctx):
            self.busy()
            return
        wait = IDLE_WAIT if timeout is None else min(timeout, IDLE_WAIT)
        if self.p == 0 and stuck:
            if self.checkdead.check(hub):
                return
            wait = min(wait, DEADLOCK_SETTLE)
        ctx.padd(C.P_PARKS, 1)
        if ctx.bell.wait(wait):
            self.busy()

    def work_waiting(self) -> bool:
        """Whether this P has something to take from other Ps: queued frames of its own,
        messages, stealable frames, a stop or a lost P. Reads only: sysmon calls it from its
        thread."""
        ctx = self.ctx
        if (self.unflushed or self.wakes_out or self.outbox or ctx.gload(C.G_STOP)
                or ctx.gload(C.G_LOST)):
            return True
        if self.pending and len(ctx.runq[self.p]):
            return True
        return work_visible(ctx)
