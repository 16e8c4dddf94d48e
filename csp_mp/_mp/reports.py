"""What a P tells the others about itself: goroutine stacks and counts, panics, lost Ps.

``Reporter`` is this P's part of it (the broker holds one):

- ``publish_info``: a description of this P's goroutines in its control-block line, which P0
  quotes in ``ProcessLost`` should the P die (``after_steal`` and ``publish_idle`` decide when);
- ``gather_stacks``/``num_goroutine``/``stats``: ``runtime.stack()`` and friends over every P,
  and ``answer_stacks``, a P's reply to another's ``gather_stacks``;
- ``report_panic`` (a worker P) and ``on_panic``/``on_lost``/``lost_error``/``lost_behind``
  (P0): a failure becomes the run's outcome.

It sends and reads messages through the P's mail (``Mail``: the broker's inbox messaging).

Invariants:
- ``info_n`` and ``info_t`` are the goroutine set and time of the last description;
  ``info_stale`` is true while a steal left its goroutines undescribed, or tallied by function
  only (the next poll, or ``INFO_EVERY`` later, describes them); a steal into a P whose last
  description was empty publishes that tally at once, so a P holding goroutines never has only
  an empty description published.
- Owner P only.
"""

from __future__ import annotations

import operator
import time
from typing import Protocol

import msgspec

from .._errors import ProcessLost
from .._hub import Hub, Outcome
from .._shm import ArenaPoisoned
from . import counters, lost, remote_tb
from . import ctx as C

_msg = msgspec.msgpack.Encoder().encode
_unmsg = msgspec.msgpack.Decoder(tuple).decode
_BY_ID = operator.attrgetter("id")

INFO_EVERY = 0.01  # seconds between two descriptions a steal publishes (publish_info)
IDLE_INFO_EVERY = 0.05  # an idle P describes its goroutines again at least this often
LOST_WAIT = 2.0  # how long a run ended by a poisoned arena waits for the watcher to name the P


class Mail(Protocol):
    """The inbox messaging of this P (the broker's)."""

    outbox: list  # messages no inbox had room for yet

    def send(self, p: int, msg: bytes, counted: bool = False) -> None:
        """Put ``msg`` in P ``p``'s inbox and ring its doorbell (queued locally if full)."""

    def flush_outbox(self) -> None:
        """Retry the messages in ``outbox``."""

    def handle(self, raw: bytes) -> None:
        """Act on one message of this P's inbox."""


def gset(hub: Hub) -> tuple[int, int]:
    """Changes whenever a goroutine starts or ends: (how many, newest id) (dicts keep order)."""
    allgs = hub.allgs
    return len(allgs), (next(reversed(allgs)) if allgs else 0)


class Reporter:
    """This P's reports to the others and, on P0, what it makes of theirs (see the module
    doc)."""

    def __init__(self, ctx: C.Ctx, hub: Hub, mail: Mail) -> None:
        self.ctx = ctx
        self.hub = hub
        self.p = ctx.p
        self.mail = mail
        self.stack_replies: dict[int, dict[int, str]] = {}  # request -> P -> its stacks
        self.stack_req = 0
        self.info_t = 0.0
        self.info_stale = False
        self.info_n: tuple[int, int] = (-1, -1)
        self.metrics_t = 0.0  # when publish_idle last published this P's counters

    # ------------------------------------------------------------------ this P's description

    def publish_info(self, hub: Hub, shown: int = lost.SHOWN) -> None:
        """Describe this P's goroutines for a ProcessLost report, should this P die (the first
        ``shown`` one by one, the rest tallied by function)."""
        # every publication is the baseline the next change is measured against (a steal
        # publishes too: measuring from an older one left the stolen goroutines' text in place)
        self.info_t = time.monotonic()
        self.info_n = gset(hub)
        self.info_stale = False
        gs = sorted(hub.allgs.values(), key=_BY_ID)
        lines = lost.info_lines(gs, lambda g: g.waiting(), shown)
        self.ctx.publish_info("\n".join(lines))

    def after_steal(self, hub: Hub) -> None:
        """Goroutines were stolen: should this P die, P0 can name them, now or when the hub
        next polls (steals of a tiny-task fan-out come thousands a second; each description
        costs what ~20 of its tasks do). A P whose last description held no goroutine
        describes them now, before any of them runs: one that starts a long computation may
        not poll again before it dies, and P0 would report it held nothing. That description
        names one goroutine and tallies the rest by function (one description per function,
        not one per goroutine of the batch); the hub's poll describes them one by one
        ``INFO_EVERY`` later, if they still run."""
        if not self.info_n[0]:
            self.publish_info(hub, shown=1)
            self.info_stale = True
        elif time.monotonic() - self.info_t >= INFO_EVERY:
            self.publish_info(hub)
        else:
            self.info_stale = True

    def publish_idle(self, hub: Hub) -> None:
        """This P is about to idle: describe its goroutines if they changed, then publish their
        count (whoever sees the count, P0 waiting for it before killing this P say, finds the
        description already there) and, now and then, its counters."""
        ctx = self.ctx
        now = time.monotonic()
        if gset(hub) != self.info_n or now - self.info_t > IDLE_INFO_EVERY:
            self.publish_info(hub)
        ctx.pstore(C.P_NGOR, len(hub.allgs))
        if now - self.metrics_t >= counters.PUBLISH_EVERY:  # metrics() asks every P anyway
            counters.publish(ctx, hub)
            self.metrics_t = now

    # ------------------------------------------------------------------ every P's goroutines

    def gather_stacks(self, hub: Hub, timeout: float) -> str:
        """Every goroutine of every P (asks the other Ps; waits up to ``timeout``)."""
        ctx, mail = self.ctx, self.mail
        self.stack_req += 1
        req = self.stack_req
        others = [q for q in range(ctx.nprocs) if q != self.p
                  and ctx.pload(q, C.P_STATUS) != C.EXITED]
        for q in others:
            mail.send(q, _msg((C.M_STACK_REQ, self.p, req)))
        deadline = time.monotonic() + timeout
        replies = self.stack_replies.setdefault(req, {})
        inbox = ctx.inbox[self.p]
        while len(replies) < len(others) and time.monotonic() < deadline:
            if mail.outbox:
                mail.flush_outbox()
            for raw in inbox.get_many(256):
                m = _unmsg(raw)
                if m[0] == C.M_STACK_REP:
                    self.stack_reply(m[1], m[2], m[3])
                else:
                    mail.handle(raw)
            if len(replies) < len(others):
                ctx.bell.wait(0.01)
        self.stack_replies.pop(req, None)
        parts = {self.p: hub.stack_text()}
        parts.update(replies)
        for q in others:
            parts.setdefault(q, f"(P{q} did not answer)")
        return "\n".join(parts[q] for q in sorted(parts) if parts[q])

    def stack_reply(self, req: int, q: int, text: str) -> None:
        """P ``q``'s answer to this P's request ``req``."""
        self.stack_replies.setdefault(req, {})[q] = text

    def answer_stacks(self, hub: Hub, asker: int, req: int) -> None:
        """Send this P's stacks to P ``asker`` (its request ``req``)."""
        # the description a ProcessLost report uses and the count num_goroutine reads are
        # brought up to date with the stack, so that what the asker saw, it also counts
        self.publish_info(hub)
        self.ctx.pstore(C.P_NGOR, len(hub.allgs))
        counters.publish(self.ctx, hub)
        self.mail.send(asker, _msg((C.M_STACK_REP, req, self.p, hub.stack_text())))

    def num_goroutine(self, hub: Hub, unpublished: int) -> int:
        """Live goroutines in every P (other Ps' counts are their last published ones);
        ``unpublished``: this P's queued goroutines that no run queue holds yet."""
        ctx = self.ctx
        ctx.pstore(C.P_NGOR, len(hub.allgs))
        total = unpublished
        for q in range(ctx.nprocs):
            if q == self.p:
                total += len(hub.allgs)
            elif ctx.pload(q, C.P_STATUS) != C.EXITED:
                total += ctx.pload(q, C.P_NGOR)
            total += len(ctx.runq[q])
        return total

    def stats(self) -> list[dict[str, int]]:
        """Per-P counters: parks on the doorbell, goroutines stolen, wake-ups sent and
        handled."""
        ctx = self.ctx
        return [{"p": q, "parks": ctx.pload(q, C.P_PARKS), "stolen": ctx.pload(q, C.P_STOLEN),
                 "wakes_sent": ctx.pload(q, C.P_SENT), "wakes_handled": ctx.pload(q, C.P_HANDLED),
                 "goroutines": ctx.pload(q, C.P_NGOR)} for q in range(ctx.nprocs)]

    # ------------------------------------------------------------------ failures

    def report_panic(self, err: BaseException) -> None:
        """A worker P's goroutine panicked: tell P0 (the exception, or a stand-in)."""
        self.mail.send(0, _msg((C.M_PANIC, *remote_tb.panic_report(err))))

    def on_panic(self, blob: bytes, text: str, tb: str) -> None:
        """P0: another P's goroutine panicked; the run ends with it."""
        hub = self.hub
        if hub.outcome is not None:
            return
        err = remote_tb.panic_from_report(blob, text, tb)
        kind = "interrupt" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "panic"
        hub.outcome = Outcome(kind, error=err)

    def _lost_error(self, q: int) -> ProcessLost:
        """The ``ProcessLost`` naming P ``q`` and the goroutines it last described."""
        ctx = self.ctx
        info = ctx.read_info(q)
        names = tuple(line for line in info.splitlines() if line)
        what = lost.summary(names)
        return ProcessLost(f"P{q} (pid {ctx.pload(q, C.P_PID)}) died; goroutines lost "
                           f"with it: {what}", p=q, goroutines=names)

    def on_lost(self, q: int) -> None:
        """P ``q`` died: the run ends with its loss."""
        self.hub.outcome = Outcome("lost", error=self._lost_error(q))

    def lost_error(self, err: ArenaPoisoned) -> BaseException:
        """What P0 raises where it finds the arena poisoned (``Arena.poisoned_error``): the loss
        of the P that died inside the allocator, once P0's watcher names it (``ProcessLost``,
        ``err`` its cause), else ``err``. The implicit runtime's main goroutine meets it in
        plain code."""
        ctx = self.ctx
        deadline = time.monotonic() + LOST_WAIT
        waited = False
        while not ctx.gload(C.G_LOST) and time.monotonic() < deadline:
            ctx.bell.wait(0.05)  # the watcher rings P0's bell as it stores G_LOST
            waited = True
        if waited:
            ctx.bell.ring()  # the ring this wait took was the hub's: it polls and sees the loss
        q = ctx.gload(C.G_LOST)
        if not q:
            return err
        lost_err = self._lost_error(q - 1)
        lost_err.__cause__ = err
        return lost_err

    def lost_behind(self, out: Outcome) -> Outcome:
        """The outcome of a run that ended in a panic from a poisoned arena: a P died inside
        the allocator, and that loss, once P0's watcher names the P, is what the run reports
        (``ProcessLost``, the panic as its cause). Any other outcome is returned as it is."""
        if out.kind != "panic" or not _poisoned(out.error):
            return out
        ctx = self.ctx
        deadline = time.monotonic() + LOST_WAIT
        while not ctx.gload(C.G_LOST) and time.monotonic() < deadline:
            ctx.bell.wait(0.05)  # the watcher rings P0's bell as it stores G_LOST
        q = ctx.gload(C.G_LOST)
        if not q:
            return out
        self.hub.outcome = None
        self.on_lost(q - 1)
        lost_out = self.hub.outcome
        assert lost_out is not None
        lost_out.error.__cause__ = out.error
        return lost_out


def _poisoned(err: BaseException | None) -> bool:
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, ArenaPoisoned):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False
