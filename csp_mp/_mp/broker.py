"""The broker: what a P's hub asks of the other Ps (Go's work stealing, wake-ups and checkdead).

One per P process, plugged into its hub (``hub.broker``). It owns:

- the stealable run queue of this P: ``place()`` serializes a new goroutine into it (the
  callable and its arguments are kept in ``pending`` and run here without unpickling if no
  thief takes it first);
- the inbox: WAKE messages from other Ps (a waiter on a shared channel or semaphore completed),
  stack requests and replies, panics and warnings forwarded to P0;
- select tokens: the words in the control block that make exactly one case of a select win;
- idling: steal half of a random victim's queue, else park on the doorbell;
- in P0: deadlock detection across Ps, lost-P and panic reports.

Invariants:
- ``pending`` maps the sequence numbers of this P's queued frames to their ``(fn, args,
  kwargs)``; a frame older than the one the owner pops was stolen, so its entry is dropped then.
- A token slot is in ``tokens`` (slot -> (g, sel, gen)) exactly while its select is parked or
  about to park; its word reads ``gen << 8 | WAITING`` until one claimer sets DONE.
- Owner P only, except ``claim`` and the message functions, which any P calls for any P under
  the documented locks.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import msgspec

from .._chan.local import SelectState
from .._errors import DeadlockError, ProcessLost
from .._hub import Hub, Outcome
from .._hub.g import WAITING
from .._shm import discard
from . import ctx as C
from . import lost, migrate_warn, remote_tb, tasks
from .shchan import K_GRANT, NO_OBJ, SharedChan, recv_payload

_msg = msgspec.msgpack.Encoder().encode
_unmsg = msgspec.msgpack.Decoder(tuple).decode

M_WAKE, M_PANIC, M_WARN, M_STACK_REQ, M_STACK_REP = range(1, 6)
T_WAITING, T_DONE = 1, 2
SPAWN_BATCH = 32  # go() frames published to the stealable queue at once
WAKE_BATCH = 32  # wake-ups to other Ps sent at once
IDLE_WAIT = 0.25  # longest park of an idle P without a timer (safety net, not a poll)
DEADLOCK_SETTLE = 0.05  # two identical all-stuck snapshots this far apart make a deadlock

# lock index ranges in the arena's lock set (lock 0 is the allocator's)
CHAN_LOCKS = 32
TOKEN_LOCKS = 32
OBJ_LOCKS = 32


def nlocks_for(maxprocs: int) -> int:
    """How many arena locks a runtime of ``maxprocs`` Ps needs."""
    return 1 + 2 * maxprocs + CHAN_LOCKS + TOKEN_LOCKS + OBJ_LOCKS


def _gset(hub: Hub) -> tuple[int, int]:
    """Changes whenever a goroutine starts or ends: (how many, newest id) (dicts keep order)."""
    allgs = hub.allgs
    return len(allgs), (next(reversed(allgs)) if allgs else 0)


class _BellWaker:
    """The hub's Waker protocol over the P's doorbell."""

    __slots__ = ("bell",)

    def __init__(self, bell: Any) -> None:
        self.bell = bell

    def post(self) -> None:
        self.bell.ring()

    def wait(self, timeout: float | None) -> bool:
        return self.bell.wait(timeout)


class Token:
    """The select token of one parked select of this P."""

    __slots__ = ("broker", "slot", "gen")

    def __init__(self, broker: Broker, slot: int, gen: int) -> None:
        self.broker = broker
        self.slot = slot
        self.gen = gen

    def claim(self, case: int) -> bool:
        """Win the select for ``case`` (a local partner completing it)."""
        return self.broker.claim(self.broker.ctx.p, self.slot, self.gen, case)


class Broker:
    """This P's link to the others (see the module docstring)."""

    def __init__(self, ctx: C.Ctx, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.p = ctx.p
        self.arena = ctx.arena
        locks = ctx.arena.locks
        base = 1 + 2 * ctx.maxprocs
        self.chan_lock_base = base
        self.token_locks = [locks.lock(base + CHAN_LOCKS + i) for i in range(TOKEN_LOCKS)]
        self.obj_lock_base = base + CHAN_LOCKS + TOKEN_LOCKS
        self._next_chan_lock = random.randrange(CHAN_LOCKS)
        self._next_obj_lock = random.randrange(OBJ_LOCKS)
        self.pending: dict[int, Any] = {}
        self.unflushed: list[bytes] = []
        self.wakes_out: list[tuple[int, bytes]] = []
        self._seq = 0
        self.tokens: dict[int, tuple[Any, SelectState, int]] = {}
        self._free_slots = list(range(C.TOKENS - 1, -1, -1))
        self._gen = 1
        self.chans: dict[int, Any] = {}  # arena offset -> Chan handle in this process
        self.objs: dict[int, Any] = {}  # arena offset -> shared atomic / semaphore handle
        self.outbox: list[tuple[int, bytes, bool]] = []
        self.warned: set[bytes] = set()
        self.stack_replies: dict[int, dict[int, str]] = {}
        self._req = 0
        self._dl_snap: tuple | None = None
        self._dl_t = 0.0
        self._info_t = 0.0
        self._info_n: tuple[int, int] = (-1, -1)
        self._rng = random.Random()
        ctx.pstore(C.P_PID, os.getpid())
        ctx.pstore(C.P_STATUS, C.RUNNING)
        hub.waker = _BellWaker(ctx.bell)  # M threads wake this P through its doorbell


    # ------------------------------------------------------------------ lock stripes

    def chan_lock_index(self) -> int:
        self._next_chan_lock = (self._next_chan_lock + 1) % CHAN_LOCKS
        return self.chan_lock_base + self._next_chan_lock

    def obj_lock_index(self) -> int:
        self._next_obj_lock = (self._next_obj_lock + 1) % OBJ_LOCKS
        return self.obj_lock_base + self._next_obj_lock

    # ------------------------------------------------------------------ select tokens

    def _tok_word(self, p: int, slot: int) -> int:
        return self.ctx.tok_base + p * C.TOKENS + slot

    def new_token(self, g: Any, sel: SelectState) -> Token:
        """A token for a select of goroutine ``g`` that waits on a shared channel."""
        if not self._free_slots:
            raise RuntimeError("too many goroutines blocked in select on shared channels")
        slot = self._free_slots.pop()
        self._gen = gen = (self._gen + 1) & 0xFFFF_FFFF_FFFF
        self.ctx.store(self._tok_word(self.p, slot), gen << 8 | T_WAITING)
        self.tokens[slot] = (g, sel, gen)
        tok = Token(self, slot, gen)
        sel.token = tok
        return tok

    def release_token(self, tok: Token) -> None:
        """The select that owned ``tok`` has finished."""
        if self.tokens.pop(tok.slot, None) is not None:
            self._free_slots.append(tok.slot)

    def claim(self, p: int, slot: int, gen: int, case: int) -> bool:
        """Win token ``(p, slot, gen)`` for ``case``; False if its select already completed."""
        word = self._tok_word(p, slot)
        lock = self.token_locks[(p * C.TOKENS + slot) % TOKEN_LOCKS]
        lock.acquire()
        try:
            if self.ctx.load(word) != gen << 8 | T_WAITING:  # load; under the token lock
                return False
            self.ctx.store(word, gen << 8 | T_DONE)  # store; under the token lock
            return True
        finally:
            lock.release()

    def token_live(self, p: int, slot: int, gen: int) -> bool:
        """Whether a record's select is still waiting (a snapshot)."""
        return slot < 0 or self.ctx.load(self._tok_word(p, slot)) == gen << 8 | T_WAITING

    def compact(self, q: Any, st: Any) -> None:
        """Drop the dead records of a full wait queue (caller holds its lock)."""
        from .shchan import _unrec

        live = []
        while (raw := q.get_locked()) is not None:
            rec = _unrec(raw)
            if self.token_live(rec[0], rec[2], rec[3]):
                live.append(raw)
        for raw in live:
            q.put_locked(raw)

    # ------------------------------------------------------------------ wake-ups

    def deliver(self, p: int, gid: int, slot: int, gen: int, case: int, kind: int,
                data: bytes | None, st: Any, obj: Any = NO_OBJ) -> None:
        """Tell goroutine ``gid`` of P ``p`` that its wait completed (after the lock is free).

        A receiver on this same P gets ``obj``, the sent object itself, when there is one:
        values between goroutines of one P pass by reference even on a shared channel.
        """
        if p == self.p:
            self._wake_local(gid, slot, case, kind, data, st, obj)
            return
        off = st.off if st is not None else 0
        self.wakes_out.append((p, _msg((M_WAKE, gid, slot, gen, case, kind, data, off))))
        self.hub.poll_now = True  # the next switch goes through the hub, which flushes
        if len(self.wakes_out) >= WAKE_BATCH:
            self.flush_wakes()

    def flush_wakes(self) -> None:
        """Send the queued wake-ups: one inbox write and one doorbell ring per P."""
        out, self.wakes_out = self.wakes_out, []
        if not out:
            return
        by_p: dict[int, list[bytes]] = {}
        for p, msg in out:
            by_p.setdefault(p, []).append(msg)
        ctx = self.ctx
        for p, msgs in by_p.items():
            n = 0 if self.outbox else ctx.inbox[p].put_many(msgs)
            if n:
                ctx.padd(C.P_SENT, n)
                ctx.bells[p].ring()
            for msg in msgs[n:]:
                self.outbox.append((p, msg, True))

    def _wake_local(self, gid: int, slot: int, case: int, kind: int, data: bytes | None,
                    st: Any, obj: Any = NO_OBJ) -> None:
        hub = self.hub
        if slot >= 0:
            entry = self.tokens.get(slot)
            if entry is None:
                return
            g, sel, _gen = entry
            sel.done = True
            sel.case = case
        else:
            g = hub.allgs.get(gid)
            if g is None:
                return
        if g.state != WAITING:
            return
        if obj is not NO_OBJ:
            if data is not None:
                discard(data, self.arena)  # out-of-band blocks nobody will decode
            payload = (obj, True)
        else:
            payload = recv_payload(st, kind, data) if kind != K_GRANT else None
        hub.ready(g, payload, next_=False)

    def send(self, p: int, msg: bytes, counted: bool = False) -> None:
        """Put ``msg`` in P ``p``'s inbox and ring its doorbell (queued locally if full)."""
        if self.outbox or not self.ctx.inbox[p].try_put(msg):
            self.outbox.append((p, msg, counted))
            return
        if counted:
            self.ctx.padd(C.P_SENT, 1)
        self.ctx.bells[p].ring()

    def _flush_outbox(self) -> None:
        out, self.outbox = self.outbox, []
        for i, (p, msg, counted) in enumerate(out):
            if not self.ctx.inbox[p].try_put(msg):
                self.outbox = out[i:]
                return
            if counted:
                self.ctx.padd(C.P_SENT, 1)
            self.ctx.bells[p].ring()

    def _handle(self, raw: bytes) -> None:
        m = _unmsg(raw)
        kind = m[0]
        if kind == M_WAKE:
            _, gid, slot, gen, case, wkind, data, off = m
            self.ctx.padd(C.P_HANDLED, 1)
            st = self._chan_state(off) if off else None
            if slot >= 0:
                entry = self.tokens.get(slot)
                if entry is None or entry[2] != gen:
                    return
            self._wake_local(gid, slot, case, wkind, data, st)
        elif kind == M_PANIC:
            self._on_panic(m[1], m[2], m[3])
        elif kind == M_WARN:
            text = m[1]
            if text not in self.warned:
                self.warned.add(text)
                migrate_warn.emit(text)
        elif kind == M_STACK_REQ:
            # the description a ProcessLost report uses and the count num_goroutine reads are
            # brought up to date with the stack, so that what the asker saw, it also counts
            hub = self.hub
            self.publish_info(hub)
            self.ctx.pstore(C.P_NGOR, len(hub.allgs))
            self.send(m[1], _msg((M_STACK_REP, m[2], self.p, hub.stack_text())))
        elif kind == M_STACK_REP:
            self.stack_replies.setdefault(m[1], {})[m[2]] = m[3]

    def _chan_state(self, off: int) -> Any:
        ch = self.chans.get(off)
        if ch is not None:
            return ch._st
        return SharedChan(self, off)

    # ------------------------------------------------------------------ the Broker protocol

    def place(self, hub: Hub, fn: Any, args: tuple, kwargs: dict) -> bool:
        """Queue a new goroutine where idle Ps can steal it (TypeError if it cannot travel).

        Frames are published in batches (at ``SPAWN_BATCH``, and whenever the hub polls), so a
        loop of ``go()`` calls pays one lock per batch. The goroutine gets its G only if it
        runs here (a thief makes its own).
        """
        self._seq += 1
        seq = self._seq
        frame = tasks.pack(seq, self.p, fn, args, kwargs, self.arena)
        self.pending[seq] = (fn, args, kwargs)
        self.unflushed.append(frame)
        if len(self.unflushed) >= SPAWN_BATCH:
            self.flush_spawns()
        return True

    def flush_spawns(self) -> None:
        """Publish the frames of goroutines spawned since the last flush."""
        frames = self.unflushed
        if not frames:
            return
        self.unflushed = []
        n = self.ctx.runq[self.p].put_many(frames)
        for frame in frames[n:]:  # queue full: they run here
            seq = tasks.own_frame(frame, self.arena)
            entry = self.pending.pop(seq, None)
            if entry is not None:
                self.hub.runq.append(self.hub.new_g(*entry, False))
        if n:
            self._wakep()

    def _wakep(self) -> None:
        """Ring one idle P (starting the search at a random P, so wakes spread out)."""
        ctx = self.ctx
        n = ctx.nprocs
        start = self._rng.randrange(n)
        for i in range(n):
            q = (start + i) % n
            if q != self.p and ctx.pload(q, C.P_STATUS) >= C.IDLE \
                    and ctx.pload(q, C.P_STATUS) != C.EXITED and not ctx.pload(q, C.P_DRAIN):
                ctx.bells[q].ring()
                return

    def poll(self, hub: Hub) -> bool:
        """Drain the inbox and, when nothing is runnable, take this P's own queued goroutines."""
        ctx = self.ctx
        got = False
        if self.wakes_out:
            self.flush_wakes()
        if self.unflushed:
            self.flush_spawns()
        if self.outbox:
            self._flush_outbox()
        inbox = ctx.inbox[self.p]
        if len(inbox):
            for raw in inbox.get_many(256):
                self._handle(raw)
                got = True
        if ctx.gload(C.G_STOP) and hub.outcome is None:
            hub.outcome = Outcome("stop")
            return True
        if self.p == 0:
            lost = ctx.gload(C.G_LOST)
            if lost and hub.outcome is None:
                self._on_lost(lost - 1)
                return True
        if not hub.runq and hub.runnext is None:
            got = self._pop_own(hub) or got
        if got:
            self._busy()
        return got

    def _busy(self) -> None:
        """This P has work again: leave IDLE/STUCK and count the transition (checkdead)."""
        ctx = self.ctx
        if ctx.pload(self.p, C.P_STATUS) != C.RUNNING:
            ctx.pstore(C.P_STATUS, C.RUNNING)
            ctx.padd(C.P_EPOCH, 1)

    def _pop_own(self, hub: Hub) -> bool:
        if not self.pending:
            return False
        # One at a time, as Go's runqget: a goroutine taken here starts here and can never move,
        # so taking a batch left other Ps idle at the end of a CPU-bound fan-out.
        frames = self.ctx.runq[self.p].get_many(1)
        if not frames:
            self.pending.clear()  # everything queued was stolen
            return False
        got = False
        for frame in frames:
            seq = tasks.own_frame(frame, self.arena)
            if self.pending and min(self.pending) < seq:
                for s in [s for s in self.pending if s < seq]:
                    del self.pending[s]  # older frames were stolen
            entry = self.pending.pop(seq, None)
            if entry is not None:
                hub.runq.append(hub.new_g(*entry, False))
                got = True
        return got

    def _steal(self, hub: Hub) -> bool:
        ctx = self.ctx
        if ctx.pload(self.p, C.P_DRAIN):
            return False
        n = ctx.nprocs
        victims = [q for q in range(n) if q != self.p]
        self._rng.shuffle(victims)
        for q in victims:
            ring = ctx.runq[q]
            k = len(ring)
            if not k:
                continue
            self._busy()  # before taking: checkdead must not see STUCK while frames are in hand
            frames = ring.get_many(max(1, k // 2))
            ctx.padd(C.P_STOLEN, len(frames))
            for frame in frames:
                self._adopt(hub, frame)
            if frames:
                self.publish_info(hub)  # should this P die, P0 can name what it took
                if len(ring):
                    self._wakep()  # work is left: another idle P may take its share (Go)
                return True
        return False

    def _adopt(self, hub: Hub, frame: bytes) -> None:
        try:
            fn, args, kwargs, warn, digest = tasks.unpack(frame, self.arena)
        except BaseException as exc:
            err = exc

            def fail() -> None:
                raise RuntimeError(f"cannot run a goroutine stolen from another P: {err}") from err

            fn, args, kwargs, warn, digest = fail, (), {}, "", b""
        if warn and digest not in self.warned:
            self.warned.add(digest)
            if self.p == 0:
                migrate_warn.emit(warn)
            else:
                self.send(0, _msg((M_WARN, warn)))
        g = hub.new_g(fn, args, kwargs, True)
        hub.runq.append(g)

    def idle(self, hub: Hub, timeout: float | None, local_can_wake: bool) -> None:
        """Nothing runnable here: poll, steal, then park on the doorbell."""
        ctx = self.ctx
        if self.poll(hub) or hub.runq or hub.outcome is not None:
            self._busy()
            return
        if self._steal(hub):
            self._busy()
            return
        stuck = not local_can_wake and not self.outbox and not self.pending
        now = time.monotonic()
        # describe the goroutines before publishing their count: whoever sees the count (P0
        # waiting for it before killing this P, say) finds the description already there
        if _gset(hub) != self._info_n or now - self._info_t > 0.05:
            self.publish_info(hub)
        ctx.pstore(C.P_NGOR, len(hub.allgs))
        ctx.pstore(C.P_STATUS, C.STUCK if stuck else C.IDLE)
        # blocks of received buffers that died since (deferred frees): back to the allocator
        # before sleeping, so that a sender's next large value reuses a block whose pages are
        # already mapped (a fresh 64 MiB block costs ~70 ms of page faults on the 2-vCPU VM)
        self.arena.collect()
        # A post taken here is a full barrier: a producer that queued work before reading our
        # status either sees IDLE (and rings) or its work is visible to the re-check below.
        if ctx.bell.wait(0) or self._work_visible():
            self._busy()
            return
        wait = IDLE_WAIT if timeout is None else min(timeout, IDLE_WAIT)
        if self.p == 0 and stuck:
            if self._check_deadlock(hub):
                return
            wait = min(wait, DEADLOCK_SETTLE)
        ctx.padd(C.P_PARKS, 1)
        if ctx.bell.wait(wait):
            self._busy()
        # on a timeout the status stays: nothing arrived, and a timer's goroutine runs with
        # the status IDLE, which never counts towards a deadlock

    def _work_visible(self) -> bool:
        ctx = self.ctx
        if len(ctx.inbox[self.p]):
            return True
        if ctx.pload(self.p, C.P_DRAIN):
            return False
        return any(len(ctx.runq[q]) for q in range(ctx.nprocs) if q != self.p)

    # ------------------------------------------------------------------ P0: checkdead

    def _check_deadlock(self, hub: Hub) -> bool:
        ctx = self.ctx
        n = ctx.nprocs
        sent = handled = 0
        epochs = []
        for q in range(n):
            status = ctx.pload(q, C.P_STATUS)
            if status not in (C.STUCK, C.EXITED):
                self._dl_snap = None
                return False
            if len(ctx.runq[q]) or len(ctx.inbox[q]):
                self._dl_snap = None
                return False
            sent += ctx.pload(q, C.P_SENT)
            handled += ctx.pload(q, C.P_HANDLED)
            epochs.append(ctx.pload(q, C.P_EPOCH))
        if sent != handled:
            self._dl_snap = None
            return False
        snap = (tuple(epochs), sent)
        now = time.monotonic()
        if snap != self._dl_snap:
            self._dl_snap = snap
            self._dl_t = now
            return False
        if now - self._dl_t < DEADLOCK_SETTLE:
            return False
        stack = self.gather_stacks(hub, 0.5)
        hub.outcome = Outcome("deadlock", error=DeadlockError(stack=stack))
        return True

    def gather_stacks(self, hub: Hub, timeout: float) -> str:
        """Every goroutine of every P (asks the other Ps; waits up to ``timeout``)."""
        ctx = self.ctx
        self._req += 1
        req = self._req
        others = [q for q in range(ctx.nprocs) if q != self.p
                  and ctx.pload(q, C.P_STATUS) != C.EXITED]
        for q in others:
            self.send(q, _msg((M_STACK_REQ, self.p, req)))
        deadline = time.monotonic() + timeout
        replies = self.stack_replies.setdefault(req, {})
        inbox = ctx.inbox[self.p]
        while len(replies) < len(others) and time.monotonic() < deadline:
            if self.outbox:
                self._flush_outbox()
            for raw in inbox.get_many(256):
                m = _unmsg(raw)
                if m[0] == M_STACK_REP:
                    self.stack_replies.setdefault(m[1], {})[m[2]] = m[3]
                else:
                    self._handle(raw)
            if len(replies) < len(others):
                ctx.bell.wait(0.01)
        self.stack_replies.pop(req, None)
        parts = {self.p: hub.stack_text()}
        parts.update(replies)
        for q in others:
            parts.setdefault(q, f"(P{q} did not answer)")
        return "\n".join(parts[q] for q in sorted(parts) if parts[q])

    def num_goroutine(self, hub: Hub) -> int:
        """Live goroutines in every P (other Ps' counts are their last published ones)."""
        ctx = self.ctx
        ctx.pstore(C.P_NGOR, len(hub.allgs))
        total = len(self.unflushed)
        for q in range(ctx.nprocs):
            if q == self.p:
                total += len(hub.allgs)
            elif ctx.pload(q, C.P_STATUS) != C.EXITED:
                total += ctx.pload(q, C.P_NGOR)
            total += len(ctx.runq[q])
        return total

    def stats(self) -> list[dict[str, int]]:
        """Per-P counters: parks on the doorbell, goroutines stolen, wake-ups sent and handled."""
        ctx = self.ctx
        return [{"p": q, "parks": ctx.pload(q, C.P_PARKS), "stolen": ctx.pload(q, C.P_STOLEN),
                 "wakes_sent": ctx.pload(q, C.P_SENT), "wakes_handled": ctx.pload(q, C.P_HANDLED),
                 "goroutines": ctx.pload(q, C.P_NGOR)} for q in range(ctx.nprocs)]

    def publish_info(self, hub: Hub) -> None:
        """Describe this P's goroutines for a ProcessLost report, should this P die."""
        # every publication is the baseline the next change is measured against (a steal
        # publishes too: measuring from an older one left the stolen goroutines' text in place)
        self._info_t = time.monotonic()
        self._info_n = _gset(hub)
        gs = sorted(hub.allgs.values(), key=lambda g: g.id)
        lines = lost.info_lines(gs, lambda g: g.reason if g.state == WAITING else g.state)
        self.ctx.publish_info("\n".join(lines))

    # ------------------------------------------------------------------ failures

    def report_panic(self, err: BaseException) -> None:
        """A worker P's goroutine panicked: tell P0 (the exception, or a stand-in)."""
        self.send(0, _msg((M_PANIC, *remote_tb.panic_report(err))))

    def _on_panic(self, blob: bytes, text: str, tb: str) -> None:
        hub = self.hub
        if hub.outcome is not None:
            return
        err = remote_tb.panic_from_report(blob, text, tb)
        kind = "interrupt" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "panic"
        hub.outcome = Outcome(kind, error=err)

    def _on_lost(self, q: int) -> None:
        info = self.ctx.read_info(q)
        names = tuple(line for line in info.splitlines() if line)
        what = lost.summary(names)
        err = ProcessLost(f"P{q} (pid {self.ctx.pload(q, C.P_PID)}) died; goroutines lost "
                          f"with it: {what}", p=q, goroutines=names)
        self.hub.outcome = Outcome("lost", error=err)
