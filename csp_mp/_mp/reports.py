"""What a P tells the others about itself: goroutine stacks and counts, panics, lost Ps.

- ``publish_info``: a description of this P's goroutines in its control-block line, which P0
  quotes in ``ProcessLost`` should the P die;
- ``gather_stacks``/``num_goroutine``/``stats``: ``runtime.stack()`` and friends over every P;
- ``report_panic`` (a worker P) and ``on_panic``/``on_lost`` (P0): a failure becomes the run's
  outcome.

The functions take the P's ``Broker`` and use its inbox messaging (``send``, ``handle``).
Owner P only.
"""

from __future__ import annotations

import operator
import time
from typing import TYPE_CHECKING

import msgspec

from .._errors import ProcessLost
from .._hub import Hub, Outcome
from .._hub.g import WAITING
from .._shm import ArenaPoisoned
from . import ctx as C
from . import lost, remote_tb

if TYPE_CHECKING:
    from .broker import Broker

_msg = msgspec.msgpack.Encoder().encode
_unmsg = msgspec.msgpack.Decoder(tuple).decode
_BY_ID = operator.attrgetter("id")

INFO_EVERY = 0.01  # seconds between two descriptions a steal publishes (publish_info)


def gset(hub: Hub) -> tuple[int, int]:
    """Changes whenever a goroutine starts or ends: (how many, newest id) (dicts keep order)."""
    allgs = hub.allgs
    return len(allgs), (next(reversed(allgs)) if allgs else 0)


def gather_stacks(b: Broker, hub: Hub, timeout: float) -> str:
    """Every goroutine of every P (asks the other Ps; waits up to ``timeout``)."""
    ctx = b.ctx
    b.stack_req += 1
    req = b.stack_req
    others = [q for q in range(ctx.nprocs) if q != b.p
              and ctx.pload(q, C.P_STATUS) != C.EXITED]
    for q in others:
        b.send(q, _msg((C.M_STACK_REQ, b.p, req)))
    deadline = time.monotonic() + timeout
    replies = b.stack_replies.setdefault(req, {})
    inbox = ctx.inbox[b.p]
    while len(replies) < len(others) and time.monotonic() < deadline:
        if b.outbox:
            b.flush_outbox()
        for raw in inbox.get_many(256):
            m = _unmsg(raw)
            if m[0] == C.M_STACK_REP:
                b.stack_replies.setdefault(m[1], {})[m[2]] = m[3]
            else:
                b.handle(raw)
        if len(replies) < len(others):
            ctx.bell.wait(0.01)
    b.stack_replies.pop(req, None)
    parts = {b.p: hub.stack_text()}
    parts.update(replies)
    for q in others:
        parts.setdefault(q, f"(P{q} did not answer)")
    return "\n".join(parts[q] for q in sorted(parts) if parts[q])


def num_goroutine(b: Broker, hub: Hub) -> int:
    """Live goroutines in every P (other Ps' counts are their last published ones)."""
    ctx = b.ctx
    ctx.pstore(C.P_NGOR, len(hub.allgs))
    total = len(b.unflushed)
    for q in range(ctx.nprocs):
        if q == b.p:
            total += len(hub.allgs)
        elif ctx.pload(q, C.P_STATUS) != C.EXITED:
            total += ctx.pload(q, C.P_NGOR)
        total += len(ctx.runq[q])
    return total


def stats(b: Broker) -> list[dict[str, int]]:
    """Per-P counters: parks on the doorbell, goroutines stolen, wake-ups sent and handled."""
    ctx = b.ctx
    return [{"p": q, "parks": ctx.pload(q, C.P_PARKS), "stolen": ctx.pload(q, C.P_STOLEN),
             "wakes_sent": ctx.pload(q, C.P_SENT), "wakes_handled": ctx.pload(q, C.P_HANDLED),
             "goroutines": ctx.pload(q, C.P_NGOR)} for q in range(ctx.nprocs)]


def publish_info(b: Broker, hub: Hub) -> None:
    """Describe this P's goroutines for a ProcessLost report, should this P die."""
    # every publication is the baseline the next change is measured against (a steal
    # publishes too: measuring from an older one left the stolen goroutines' text in place)
    b.info_t = time.monotonic()
    b.info_n = gset(hub)
    b.info_stale = False
    gs = sorted(hub.allgs.values(), key=_BY_ID)
    lines = lost.info_lines(gs, lambda g: g.reason if g.state == WAITING else g.state)
    b.ctx.publish_info("\n".join(lines))


def report_panic(b: Broker, err: BaseException) -> None:
    """A worker P's goroutine panicked: tell P0 (the exception, or a stand-in)."""
    b.send(0, _msg((C.M_PANIC, *remote_tb.panic_report(err))))


def on_panic(b: Broker, blob: bytes, text: str, tb: str) -> None:
    hub = b.hub
    if hub.outcome is not None:
        return
    err = remote_tb.panic_from_report(blob, text, tb)
    kind = "interrupt" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "panic"
    hub.outcome = Outcome(kind, error=err)


def _lost_error(b: Broker, q: int) -> ProcessLost:
    """The ``ProcessLost`` naming P ``q`` and the goroutines it last described."""
    info = b.ctx.read_info(q)
    names = tuple(line for line in info.splitlines() if line)
    what = lost.summary(names)
    return ProcessLost(f"P{q} (pid {b.ctx.pload(q, C.P_PID)}) died; goroutines lost "
                       f"with it: {what}", p=q, goroutines=names)


def on_lost(b: Broker, q: int) -> None:
    """P ``q`` died: the run ends with its loss."""
    b.hub.outcome = Outcome("lost", error=_lost_error(b, q))


LOST_WAIT = 2.0  # how long a run ended by a poisoned arena waits for the watcher to name the P


def _poisoned(err: BaseException | None) -> bool:
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, ArenaPoisoned):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def lost_error(b: Broker, err: ArenaPoisoned) -> BaseException:
    """What P0 raises where it finds the arena poisoned (``Arena.poisoned_error``): the loss of
    the P that died inside the allocator, once P0's watcher names it (``ProcessLost``, ``err``
    its cause), else ``err``. The implicit runtime's main goroutine meets it in plain code."""
    ctx = b.ctx
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
    lost_err = _lost_error(b, q - 1)
    lost_err.__cause__ = err
    return lost_err


def lost_behind(b: Broker, out: Outcome) -> Outcome:
    """The outcome of a run that ended in a panic from a poisoned arena: a P died inside the
    allocator, and that loss, once P0's watcher names the P, is what the run reports
    (``ProcessLost``, the panic as its cause). Any other outcome is returned as it is."""
    if out.kind != "panic" or not _poisoned(out.error):
        return out
    ctx = b.ctx
    deadline = time.monotonic() + LOST_WAIT
    while not ctx.gload(C.G_LOST) and time.monotonic() < deadline:
        ctx.bell.wait(0.05)  # the watcher rings P0's bell as it stores G_LOST
    q = ctx.gload(C.G_LOST)
    if not q:
        return out
    b.hub.outcome = None
    on_lost(b, q - 1)
    lost_out = b.hub.outcome
    assert lost_out is not None
    lost_out.error.__cause__ = out.error
    return lost_out

