"""A multi-P runtime folded into one process, for differential tests of the shared protocol.

``Fold(native)`` builds what ``_mp/procs.py`` builds for a run of two Ps, from the real parts: an
arena (``Arena.create``, the compiled core's or the Python path's, as asked), its doorbells and
lock stripes, the control block with every P's inbox and token table (``Ctx.create``). Each P is
a ``FoldedP``: the real ``Broker``'s wake-up messaging (``deliver``, its ``Messages`` part,
``handle``, ``_wake_local``), token table and lock stripes over that arena, as
the shared channels' ``ProcLayer``; only the process boundary is folded, so a ``SharedChan`` and
a ``NativeSharedChan`` (one ``Fold`` each) run side by side in one process, without starting Ps.

- P0 runs on the hub of the test's implicit runtime: its goroutines are real (``go_local``).
- P1 runs on a ``FoldedHub``: each of its goroutines is a greenlet started by the test, which
  ``park`` switches out of (the call returns ``PARKED`` to the test) and ``ready`` queues to
  resume at the next ``FoldedHub.run``. Its results land in ``FoldedHub.results``.

Nothing runs by itself: ``Fold.poll`` does what each P's hub poll does with its broker (send the
queued wake-ups, read the inbox, run what was woken), until nothing moves.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from greenlet import GreenletExit, getcurrent, greenlet

from csp_mp import Chan
from csp_mp._hub import current_hub
from csp_mp._hub.g import RUNNING, WAITING
from csp_mp._mp import ctx as C
from csp_mp._mp.broker import CHAN_LOCKS, Broker, nlocks_for
from csp_mp._mp.messages import Messages
from csp_mp._mp.tokens import TOKEN_LOCKS, TokenTable
from csp_mp._shm import Arena, Doorbell

ARENA_BYTES = 16 << 20
MAXPROCS = 2
PARKED = object()  # what a P1 operation returns while its goroutine waits
DEADLINE = 10.0  # seconds a poll may take to come to rest


class FoldedG:
    """A goroutine of P1: an id, a state, the greenlet running it."""

    __slots__ = ("id", "state", "glet", "param")

    def __init__(self, gid: int, glet: greenlet) -> None:
        self.id = gid
        self.state = RUNNING
        self.glet = glet
        self.param: Any = None


class FoldedHub:
    """P1's hub: the parts of ``Hub`` a shared channel and the broker use, over greenlets."""

    def __init__(self, first_gid: int) -> None:
        self.current: FoldedG | None = None
        self.allgs: dict[int, FoldedG] = {}
        self.runq: deque[FoldedG] = deque()
        self.runnext = None
        self.outcome: Any = None  # a lost wake-up's failure (Broker._lost_wake)
        self.poll_now = False
        self.n_xops = 0
        self.n_xbytes = 0
        self.results: dict[Any, Any] = {}  # goroutine key -> what its call returned or raised
        self._next = first_gid
        self._keys: dict[int, Any] = {}

    def go(self, key: Any, fn: Callable[[FoldedHub], Any]) -> Any:
        """Run ``fn(self)`` as a new goroutine keyed ``key``: what it returned, or ``PARKED``."""
        gid = self._next
        self._next += 1
        glet = greenlet(self._body)
        g = FoldedG(gid, glet)
        self.allgs[gid] = g
        self._keys[gid] = key
        return self._enter(g, fn)

    def _body(self, g: FoldedG, fn: Callable[[FoldedHub], Any]) -> Any:
        try:
            out: Any = ("ok", fn(self))
        except GreenletExit:
            raise
        except Exception as exc:  # the outcome compared between paths
            out = ("raised", type(exc).__name__, str(exc))
        self.results[self._keys.pop(g.id)] = out
        del self.allgs[g.id]
        return out

    def _enter(self, g: FoldedG, *args: Any) -> Any:
        prev = self.current
        self.current = g
        g.state = RUNNING
        try:
            return g.glet.switch(g, *args) if args else g.glet.switch()
        finally:
            self.current = prev

    def park(self, reason: str) -> Any:
        g = self.current
        assert g is not None and g.glet is getcurrent(), "park outside a P1 goroutine"
        g.state = WAITING
        g.glet.parent.switch(PARKED)
        v, g.param = g.param, None
        return v

    def ready(self, g: FoldedG, value: Any = None, next_: bool = True) -> None:
        assert g.state == WAITING, f"ready of P1 goroutine {g.id}, which is not waiting"
        g.state = "runnable"
        g.param = value
        self.runq.append(g)

    def gosched(self) -> None:
        raise AssertionError("a P1 goroutine yielded: run_own is never true here")

    def run(self) -> bool:
        """Resume the readied goroutines until none is left; whether any ran."""
        ran = False
        while self.runq:
            g = self.runq.popleft()
            g.glet.parent = getcurrent()
            self._enter(g)
            ran = True
        return ran

    def parked(self) -> list[Any]:
        """The keys of the goroutines waiting."""
        return [self._keys[gid] for gid, g in self.allgs.items() if g.state == WAITING]

    def kill(self) -> None:
        """End every goroutine still waiting (their greenlets unwind)."""
        for g in list(self.allgs.values()):
            if not g.glet.dead:
                g.glet.parent = getcurrent()
                g.glet.throw(GreenletExit)
        self.allgs.clear()


class FoldedP(Broker):
    """One P of a ``Fold``: the real broker's messaging, tokens and lock stripes, no process.

    Only what the shared channels, shared atomics and semaphores use is set up: no run queue,
    reports or deadlock check. ``spin_time`` is 0 and ``run_own`` False: a goroutine never polls
    a channel nor yields to queued work before it parks.
    """

    def __init__(self, fold: Fold, p: int, hub: Any) -> None:  # no super(): no real P
        ctx = C.Ctx(fold.arena, fold.ctx_off, p, fold.bells)
        self.ctx = ctx
        self.hub = hub
        self.p = p
        self.arena = ctx.arena
        self.spin_seconds = 0.0
        base = 1 + 2 * ctx.maxprocs
        self.chan_lock_base = base
        self.obj_lock_base = base + CHAN_LOCKS + TOKEN_LOCKS
        self._next_chan_lock = self._next_obj_lock = -1  # the same stripes on both paths
        self._inbox = ctx.inbox[p]
        self.use_messages(Messages(ctx, hub))
        self.warned = set()
        self.watchers = ()
        self.gfloor = 0
        self.chans = {}
        self.dead = []
        self.objs = {}
        self.spares = ctx.spares
        self.chan_states = {}
        self.spare_states = {}
        self.live_word = ctx.pbase + C.P_LIVE_CHAN
        self.peers = self._peers()
        self.tokens = TokenTable(ctx, base + CHAN_LOCKS, 0, self.peers)
        tt = self.tokens
        self.new_token = tt.new_token
        self.claim = tt.claim
        self.token_live = tt.token_live
        self.plain_live = tt.plain_live
        self.token_waiting = tt.waiting
        self.handles = None
        self.bell_off = -1 if self.peers is None else ctx.bell.offset

    def spin_time(self, hub: Any) -> float:
        return 0.0

    def run_own(self, hub: Any) -> bool:
        return False

    def adopt(self, ch: Chan) -> Chan:
        """Register ``ch`` (whose state is a channel of this P) as this P's handle on it, as
        promotion does: a WAKE naming its block finds it."""
        self.chans[ch._st.off] = weakref.ref(ch)
        return ch

    def poll_once(self) -> bool:
        """What the hub's poll does with the broker's messages: send the queued wake-ups, read
        the inbox; whether anything moved."""
        moved = bool(self.wakes_out or self.outbox)
        if self.wakes_out:
            self.flush_wakes()
        if self.outbox:
            self.flush_outbox()
        for raw in self._inbox.get_many(256):
            self.handle(raw)
            moved = True
        self.ctx.bell.drain()  # what the idle hub's wait takes
        return moved

    def inbox_messages(self) -> list[tuple]:
        """The messages waiting in this P's inbox, decoded and left in place (a snapshot)."""
        raw = self._inbox.get_many(1 << 16)
        if raw:
            assert self._inbox.put_many(raw) == len(raw)
        import msgspec

        return [msgspec.msgpack.decode(m) for m in raw]

    def words(self) -> dict[str, int]:
        """This P's control-block words the wake-up protocol writes."""
        ctx = self.ctx
        return {name: ctx.pload(self.p, i) for name, i in (
            ("sent", C.P_SENT), ("handled", C.P_HANDLED), ("owes", C.P_OWES),
            ("live_chan", C.P_LIVE_CHAN), ("live_int64", C.P_LIVE_INT64),
            ("live_sema", C.P_LIVE_SEMA))}


class Fold:
    """Two Ps over one real arena in this process (see the module docstring)."""

    def __init__(self, native: bool) -> None:
        self.native = native
        arena = Arena.create(ARENA_BYTES, nlocks_for(MAXPROCS), use_native=native)
        try:
            self.bells = [Doorbell.create(arena) for _ in range(MAXPROCS)]
            ctx = C.Ctx.create(arena, MAXPROCS, MAXPROCS, self.bells)
            arena.seal()  # no other process: no name needs to stay
        except BaseException:
            arena.close()
            raise
        self.arena = arena
        self.ctx_off = ctx.off
        self.p1hub = FoldedHub(first_gid=1 << 40)
        self.ps = [FoldedP(self, 0, current_hub()), FoldedP(self, 1, self.p1hub)]

    @property
    def kind(self) -> str:
        return "native" if self.native else "python"

    def poll(self, done: Callable[[], bool] = lambda: True) -> None:
        """Poll both Ps (and let P0's goroutines run) until nothing moves and ``done()``;
        AssertionError after ``DEADLINE``."""
        from csp_mp import runtime

        deadline = time.monotonic() + DEADLINE
        while True:
            moved = False
            for fp in self.ps:
                moved = fp.poll_once() or moved
            moved = self.p1hub.run() or moved
            hub = current_hub()
            if hub.runq or hub.runnext is not None:
                runtime.gosched()
                moved = True
            if not moved and done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the {self.kind} fold did not come to rest")
            if not moved:
                runtime.gosched()

    def words(self) -> dict[str, Any]:
        """Every P's protocol words and doorbell posts (the wake-up counters)."""
        out: dict[str, Any] = {}
        for fp in self.ps:
            for k, v in fp.words().items():
                out[f"p{fp.p}.{k}"] = v
            out[f"p{fp.p}.bell_posts"] = self.bells[fp.p].pending
            out[f"p{fp.p}.wakes_queued"] = len(fp.wakes_out) + len(fp.outbox)
        return out

    def close(self) -> None:
        """End P1's goroutines and unmap the arena (P0's are the runtime's: shutdown ends
        them)."""
        self.p1hub.kill()
        for fp in self.ps:
            fp.chans.clear()
            fp.chan_states.clear()
            fp.spare_states.clear()
            fp.hub = None
        self.ps = []
        self.arena.close()


@pytest.fixture
def folds() -> Iterator[tuple[Fold, Fold]]:
    """A Python-path fold and a compiled-core fold, side by side in this process."""
    py, nat = Fold(native=False), Fold(native=True)
    try:
        yield py, nat
    finally:
        py.close()
        nat.close()
