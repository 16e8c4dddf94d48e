"""The per-process view of a multi-P runtime: the arena, the control block, inboxes, doorbells.

The control block is one arena block written by P0 before the other Ps start::

    line 0          global words: magic, stop, nprocs (active), maxprocs, lost P + 1, gen,
                    spare blocks, the last goroutine id handed out (``G_GOIDS``)
    line 1          ``G_HUNGRY``: a P went idle and nothing was published for it since
    P lines         32 words per P (four 64-byte lines), see the ``P_*`` indices;
                    from ``P_CREATED`` on: runtime.metrics() counters (counters.py)
    token tables    TOKENS words per P: select tokens (see tokens.py)

Invariants:
- Per-P words are stored only by their P (any P may load them), except ``P_DRAIN`` (P0 stores)
  and the words P0 resets when it replaces a dead P (replace.py), before the new process starts.
- ``P_SENT`` and ``P_HANDLED`` count WAKE messages: the sum of SENT over every P minus the sum of
  HANDLED is the number of wake-ups in flight; deadlock detection needs it to be 0.
- ``G_STOP`` goes 0 -> 1 once; every P ends its hub loop when it sees it.
- ``G_GOIDS`` only grows, by atomic adds of ``GOID_BATCH``: each add hands its P the ids above
  the old value, so goroutine ids are unique in the runtime and small (Go's ``goidcache``). P0
  owns the first batch from the start (main is goroutine 1).
- ``G_HUNGRY`` is a hint, never trusted for correctness: an idle P stores its number + 1
  before it sleeps, a P that publishes frames stores 0 and rings that P (or, after a batch, an
  idle P). While it is set, ``go()`` publishes its frame at once instead of at the batch's end
  (Go's ``wakep`` on ``newproc``).
- ``G_NPROCS`` (Ps started) only grows; ``G_LOGICAL`` is GOMAXPROCS, and every started P at or
  above it has ``P_DRAIN`` set: it finishes its goroutines but takes no new work.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from .._chan.block import SparePool
from .._proc import proc
from .._shm import Arena, Doorbell, Ring, attach_ring, make_ring
from .._shm import layout as L

# the words' indices are layout.py's (wake.c and handles.c are built from it)
MAGIC = L.CTX_MAGIC
TOKENS = 8192  # select tokens per P (concurrently blocked selects on shared channels)

# global words
G_MAGIC, G_STOP, G_NPROCS, G_MAXPROCS = L.G_MAGIC, L.G_STOP, L.G_NPROCS, L.G_MAXPROCS
G_LOST, G_LOGICAL, G_SPARES, G_GOIDS = L.G_LOST, L.G_LOGICAL, L.G_SPARES, L.G_GOIDS
G_HUNGRY = L.G_HUNGRY
GOID_BATCH = 16  # goroutine ids a P takes from G_GOIDS at a time (Go's _GoidCacheBatch)
_G_WORDS = L.G_WORDS

# per-P words
P_STATUS, P_EPOCH, P_SENT, P_HANDLED = L.P_STATUS, L.P_EPOCH, L.P_SENT, L.P_HANDLED
P_NGOR, P_PID, P_INBOX, P_RUNQ = L.P_NGOR, L.P_PID, L.P_INBOX, L.P_RUNQ
P_INFO, P_INFOLEN, P_DRAIN, P_PARKS, P_STOLEN = (
    L.P_INFO, L.P_INFOLEN, L.P_DRAIN, L.P_PARKS, L.P_STOLEN)
# a P replaced after it died (replace.py): the first goroutine id of its current process (0:
# the first process; waiter records and wake-ups naming a lower id are of a dead one), whether
# it may hold more than executor tasks (``DIRTY``), whether it owes other Ps messages
P_GFLOOR, P_DIRTY, P_OWES = L.P_GFLOOR, L.P_DIRTY, L.P_OWES
# the P's executor tasks: TASK_SLOTS entries (owner pid, task key) from the word P_TASKS names
P_TASKS = L.P_TASKS
TASK_SLOTS = 256
P_CREATED, P_PREEMPT, P_BLOCKING, P_XOPS = L.P_CREATED, L.P_PREEMPT, L.P_BLOCKING, L.P_XOPS
P_XBYTES, P_MTHREADS, P_MBUSY = L.P_XBYTES, L.P_MTHREADS, L.P_MBUSY
# shared objects this P made live minus those it ended, by kind (mod 2**64; the sum over Ps is
# the runtime's live count): written only by this P, at once (not published)
P_LIVE_CHAN, P_LIVE_INT64, P_LIVE_SEMA = L.P_LIVE_CHAN, L.P_LIVE_INT64, L.P_LIVE_SEMA
P_LIVE_ARRAY = L.P_LIVE_ARRAY  # shared arrays (_mp/arrays.py)
LIVE_KINDS = {"chan": P_LIVE_CHAN, "int64": P_LIVE_INT64, "sema": P_LIVE_SEMA,
              "array": P_LIVE_ARRAY}
# ... and those this P pinned (promote.PIN: kept until the run ends), by kind
PINNED_KINDS = {"chan": L.P_PINNED_CHAN, "int64": L.P_PINNED_INT64, "sema": L.P_PINNED_SEMA,
                "array": L.P_PINNED_ARRAY}
_P_WORDS = L.P_WORDS
P_STRIDE = _P_WORDS  # words from one P's block to the next's

# P_STATUS values
RUNNING, IDLE, STUCK, EXITED = 0, 1, 2, 3

# inbox messages: msgpack tuples whose first field is the kind (M_WAKE: kind, gid, slot, gen,
# case, wake kind, data, channel offset, and while a trace runs the flow id)
M_WAKE, M_PANIC, M_WARN, M_STACK_REQ = L.M_WAKE, L.M_PANIC, L.M_WARN, L.M_STACK_REQ
M_STACK_REP, M_TRACE_REQ, M_TRACE_REP = L.M_STACK_REP, L.M_TRACE_REQ, L.M_TRACE_REP

INBOX_BYTES = 1 << 20
RUNQ_BYTES = 1 << 20
INFO_BYTES = 4096


def block_bytes(maxprocs: int) -> int:
    """Size of the control block for ``maxprocs`` Ps."""
    return (_G_WORDS + maxprocs * _P_WORDS + maxprocs * TOKENS) * 8


class Ctx:
    """Everything one process knows about the runtime it belongs to. Any P."""

    def __init__(self, arena: Arena, off: int, p: int, bells: list[Doorbell]) -> None:
        self.arena = arena
        self.off = off
        self.p = p
        self.bells = bells
        w = arena.words
        self.load = w.load
        self.store = w.store
        self.q = w.view  # q[i] loads word i, q[i] = v stores it (the hot paths use this)
        self.base = off // 8
        self.pbase = self.base + _G_WORDS + p * _P_WORDS  # this P's words
        self.maxprocs = self.load(self.base + G_MAXPROCS)
        self.tok_base = self.base + _G_WORDS + self.maxprocs * _P_WORDS
        self.inbox: list[Ring] = []
        self.runq: list[Ring] = []
        for q in range(self.maxprocs):
            self.inbox.append(attach_ring(arena, self.pload(q, P_INBOX)))
            self.runq.append(attach_ring(arena, self.pload(q, P_RUNQ)))
        self.bell = bells[p]
        self.spares = SparePool(arena, self.load(self.base + G_SPARES))

    @classmethod
    def create(cls, arena: Arena, maxprocs: int, nprocs: int, bells: list[Doorbell]) -> Ctx:
        """Write a fresh control block (P0, before any other P starts)."""
        size = block_bytes(maxprocs)
        off = arena.alloc(size)
        base = off // 8
        w = arena.words
        arena.map[off : off + size] = bytes(size)  # one memset: no other process maps it yet
        w.store(base + G_MAXPROCS, maxprocs)
        w.store(base + G_NPROCS, nprocs)  # Ps started (grows with gomaxprocs)
        w.store(base + G_LOGICAL, nprocs)  # GOMAXPROCS: Ps at or above it are drained
        for q in range(maxprocs):
            pb = base + _G_WORDS + q * _P_WORDS
            w.store(pb + P_INBOX, make_ring(arena, INBOX_BYTES, lock_key=2 * q).offset)
            w.store(pb + P_RUNQ, make_ring(arena, RUNQ_BYTES, lock_key=2 * q + 1).offset)
            w.store(pb + P_INFO, arena.alloc(INFO_BYTES))
            tasks = arena.alloc(TASK_SLOTS * 16)
            arena.map[tasks : tasks + TASK_SLOTS * 16] = bytes(TASK_SLOTS * 16)
            w.store(pb + P_TASKS, tasks)
        w.store(base + G_SPARES, SparePool.create(arena, len(arena.locks) - 1).off)  # its own
        w.store(base + G_GOIDS, GOID_BATCH)  # P0's first batch: 1..GOID_BATCH (goids)
        arena.guard_state_from(1 + 2 * maxprocs)  # the inbox and run queue locks come first
        w.store(base + G_MAGIC, MAGIC)
        return cls(arena, off, 0, bells)

    # ---- words

    def gload(self, i: int) -> int:
        """Load global word ``i`` (pairs with the store in ``gstore``)."""
        return self.q[self.base + i]

    def gstore(self, i: int, v: int) -> None:
        """Store global word ``i``."""
        self.q[self.base + i] = v

    def pidx(self, q: int, i: int) -> int:
        return self.base + _G_WORDS + q * _P_WORDS + i

    def pload(self, q: int, i: int) -> int:
        """Load word ``i`` of P ``q`` (stored by q; a snapshot)."""
        return self.q[self.base + _G_WORDS + q * _P_WORDS + i]

    def pstore(self, i: int, v: int) -> None:
        """Store word ``i`` of this P (owner P only)."""
        self.q[self.pbase + i] = v

    def padd(self, i: int, d: int) -> None:
        """Add to word ``i`` of this P (owner P only: single writer, no lock needed)."""
        self.q[self.pbase + i] += d

    def live_add(self, i: int, d: int) -> None:
        """Add ``d`` (either sign) to this P's live-object word ``i`` (owner P only)."""
        j = self.pbase + i
        self.q[j] = (self.q[j] + d) & 0xFFFF_FFFF_FFFF_FFFF

    def live(self, i: int) -> int:
        """The runtime's live objects of the kind of word ``i``: the sum over every P."""
        total = sum(self.pload(q, i) for q in range(self.maxprocs)) & 0xFFFF_FFFF_FFFF_FFFF
        return total - (1 << 64) if total >> 63 else total

    def goids(self) -> Iterator[int]:
        """This P's goroutine ids: batches of ``GOID_BATCH`` taken from ``G_GOIDS`` as they run
        out (the hub's ``next(ids)`` stays one C call within a batch). P0 starts with the
        batch ``create`` reserved for it."""
        first = range(1, GOID_BATCH + 1) if self.p == 0 else ()  # (P0 is never replaced)
        return itertools.chain(first, itertools.chain.from_iterable(self._goid_batches()))

    def _goid_batches(self) -> Iterator[range]:
        add, off = self.arena.add_word, (self.base + G_GOIDS) * 8
        while True:
            top = add(off, GOID_BATCH)  # atomic: no other P gets these ids
            yield range(top - GOID_BATCH + 1, top + 1)

    def goids_taken(self) -> int:
        """The highest goroutine id any P may have been given so far (P0, for replace.py)."""
        return self.gload(G_GOIDS)

    @property
    def nprocs(self) -> int:
        return self.gload(G_NPROCS)

    @property
    def stopping(self) -> bool:
        return self.gload(G_STOP) != 0

    # ---- info text (what a lost P was running)

    def publish_info(self, text: str) -> None:
        """Store a short description of this P's goroutines for ProcessLost (owner P)."""
        data = text.encode("utf-8", "replace")[: INFO_BYTES - 8]
        off = self.pload(self.p, P_INFO)
        self.arena.map[off : off + len(data)] = data
        self.pstore(P_INFOLEN, len(data))

    def read_info(self, q: int) -> str:
        """The last description P ``q`` published."""
        off = self.pload(q, P_INFO)
        n = self.pload(q, P_INFOLEN)
        return bytes(self.arena.map[off : off + n]).decode("utf-8", "replace")

    def __reduce__(self) -> Any:
        raise TypeError("the runtime context does not travel")


def current() -> Ctx | None:
    """This process's context, or None outside a multi-P runtime."""
    return proc.ctx


def set_current(ctx: Ctx | None) -> None:
    """Install (or clear) this process's context."""
    proc.ctx = ctx
