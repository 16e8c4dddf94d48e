"""Goroutines that have not started, moved from node 0 to nodes with idle Ps.

Node 0's balancer thread looks every millisecond for room on the other nodes and for goroutines
waiting in node 0's run queues (the frames of its Ps' stealable queues, or, with one P, the
goroutines queued on its hub that have not started), and has the hub ship them at its next pass
(``ship_round``), as does every ``done``. An idle node gets its share of what waits (at most
``STEAL_MAX``), a busy one is kept at ``SHIP_PER_P`` goroutines per P. It ships them in one
``go`` message per node; a goroutine that cannot travel (its function or arguments do not
pickle for another node) or an executor task starts on node 0's P0 instead. Each shipped
goroutine, once ended, is counted back (``done``), with the next batch of messages to node 0
(``Net.flush``).

What a goroutine costs is learnt per function: each ``done`` says, per function, how many of
its goroutines ended and the CPU time their P spent while they ran. Shipped goroutines that end
quickly (``SHORT_S`` of CPU: a tiny task) cost node 0 more to ship and take back than to run:
while the goroutine at the head of node 0's run queue is of a function whose last ones ran that
short, node 0 ships a node one goroutine at a time, every ``PROBE_S`` at most, and runs the
rest itself; while it is of a function not seen yet, an idle node is sent at most
``STEAL_FIRST``. (With several Ps on node 0, the last report stands for
every function: their queued goroutines are not looked at before they are taken.)

Messages: ``("go", [(fn, args, kwargs, made), ...])`` goroutines node 0 ships, counted back once
ended by ``("done", k, {function: [goroutines, CPU seconds]})``; ``("go1", [...])``
goroutines started on a given node (``go_node``), not counted.

Invariants:
- ``outstanding[k]`` counts the goroutines shipped to node k and not yet reported ended
  (node 0, hub thread only).
- A goroutine taken from a run queue starts exactly once: on the node it was shipped to, or
  here if it cannot travel.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from .._chan import Chan
from .._hub.g import queued_here, requeued
from .._proc import proc

#: goroutines shipped to a node and not yet ended, per P of that node
SHIP_PER_P = 2
#: most goroutines one node is sent at once; of a function not seen yet
STEAL_MAX = 128
STEAL_FIRST = 32
_BUSY_POLL = 0.001
#: goroutines of a one-P run queue looked at per goroutine taken, at most
_SCAN = 8
#: shipped goroutines that ran this long on average or less cost node 0 more to ship and take
#: back than to run: a node is sent at most one such goroutine per ``PROBE_S`` (module doc)
SHORT_S = 50e-6
PROBE_S = 0.010


class Shipping:
    """Goroutines shipped between nodes (P0's hub only). ``net``: the node's ``Net``."""

    def __init__(self, net: Any) -> None:
        self.net = net
        #: (node 0) goroutines shipped to each node and not yet ended
        self.outstanding = [0] * net.n
        #: (a node of several Ps) where its shipped goroutines on other Ps report their end
        self.done: Chan | None = None
        #: shipped goroutines ended here and not yet reported, and per function how many
        #: and the CPU seconds they took: one ``done`` per batch
        self.unsent = 0
        self.unsent_s: dict[str, list] = {}
        #: (node 0) the CPU seconds the last reported goroutines of each function took on
        #: average, and of any function; when each node was last sent a short one
        self.task_s: dict[str, float] = {}
        self.last_s: float | None = None
        self.probed = [0.0] * net.n

    def start_balancer(self) -> None:
        """(node 0) Start the balancer thread."""
        threading.Thread(target=balance, args=(self.net,), name="csp_mp-net-balance",
                         daemon=True).start()

    def round(self) -> bool:
        """Ship what node 0 has waiting to the nodes with room (hub thread); whether any
        left."""
        return ship_round(self.net)

    def ended(self, node: int, k: int, costs: dict[str, list]) -> None:
        """(dispatcher) ``k`` goroutines shipped to ``node`` ended, of the functions in
        ``costs`` (name -> [how many, CPU seconds]): ship more."""
        self.outstanding[node] -= k
        for name, (n, secs) in costs.items():
            self.task_s[name] = self.last_s = secs / max(1, n)
        ship_round(self.net)

    def count_done(self, name: str, seconds: float) -> None:
        """A goroutine of function ``name`` shipped here ended after ``seconds`` of its P's
        CPU: told to node 0 with the next batch."""
        if not self.unsent:
            self.net.arm()
        self.unsent += 1
        got = self.unsent_s.get(name)
        if got is None:
            self.unsent_s[name] = [1, seconds]
        else:
            got[0] += 1
            got[1] += seconds

    def take_unsent(self) -> tuple[int, dict[str, list]]:
        """The ends not yet reported, and none left."""
        got = self.unsent, self.unsent_s
        self.unsent, self.unsent_s = 0, {}
        return got

    def arrived(self, batch: list, counted: bool) -> None:
        """(dispatcher) Goroutines another node sent here; see ``start_shipped``."""
        start_shipped(self.net, batch, counted)


def balance(net: Any) -> None:
    """(a thread on node 0) Until the run ends, have the hub ship queued goroutines whenever
    another node has room and node 0 has goroutines waiting: at the hub's next pass, so that
    goroutines waiting behind long-running ones leave before they start."""
    stopped, post = net.stopped, net.hub.post
    posted = [False]

    def tick() -> None:
        posted[0] = False
        if not net.stopping:
            net.ship.round()

    while not stopped.wait(_BUSY_POLL):
        if posted[0] or not _room(net) or not _work_visible(net):
            continue
        posted[0] = True
        try:
            post(tick)
        except Exception:  # the runtime stopped meanwhile
            return


def _room(net: Any) -> bool:
    procs, out = net.procs, net.ship.outstanding
    return any(procs[k] * SHIP_PER_P > out[k] for k in range(1, net.n) if k not in net.lost)


def _work_visible(net: Any) -> bool:
    """Whether goroutines seem to wait in this node's run queues (read from another thread:
    a hint, checked again on the hub)."""
    broker = proc.broker
    if broker is None:
        return len(net.hub.runq) > 1
    ctx = broker.ctx
    return any(len(ctx.runq[q]) > 1 for q in range(ctx.nprocs))


def ship_round(net: Any) -> bool:
    """Ship what node 0 has waiting to the nodes with room (hub thread); whether any left."""
    procs, out = net.procs, net.ship.outstanding
    nodes = [k for k in range(1, net.n) if k not in net.lost and k in net.links]
    if not nodes:
        return False
    # an idle node takes its share of what waits (Go's stealing takes half of a queue);
    # a node at work is kept at SHIP_PER_P goroutines per P
    queued = _queued(net)
    total_procs = sum(procs[k] for k in (0, *nodes))
    room = {}
    task_s = _head_cost(net)
    short = task_s is not None and task_s <= SHORT_S
    now = time.monotonic() if short else 0.0
    for k in nodes:
        if short:  # one at a time, now and then: see SHORT_S
            r = 1 if out[k] == 0 and now - net.ship.probed[k] >= PROBE_S else 0
        else:
            r = procs[k] * SHIP_PER_P - out[k]
            if out[k] == 0:
                most = STEAL_MAX if task_s is not None else STEAL_FIRST
                r = max(r, min(most, queued * procs[k] // total_procs))
        if r > 0:
            room[k] = r
    total = sum(room.values())
    if not total:
        return False
    items = _take_local(net, total)
    if not items:
        return False
    batches: dict[int, list] = {k: [] for k in room}
    order = [k for k, r in room.items() for _ in range(r)]
    for item, k in zip(items, order, strict=False):
        batches[k].append(item)
    for k, batch in batches.items():
        if not batch:
            continue
        if short:
            net.ship.probed[k] = now
        try:
            net.send(k, ("go", batch))
            net.ship.outstanding[k] += len(batch)
            continue
        except Exception:
            pass
        for item in batch:  # one at a time: those that cannot travel stay here
            try:
                net.send(k, ("go", [item]))
                net.ship.outstanding[k] += 1
            except Exception:
                _start(net.hub, *item)
    return True


def _head_cost(net: Any) -> float | None:
    """The CPU seconds the goroutines of the function next in line to ship took on another
    node, as last reported; None if not known yet (hub thread; see the module doc)."""
    ship = net.ship
    if proc.broker is not None:
        return ship.last_s
    skipped = False
    for i, g in enumerate(net.hub.runq):
        if i >= _SCAN:
            break
        if g.glet is None and not g.local and not g.is_main:
            if skipped:
                return ship.task_s.get(fn_name(g.fn))
            skipped = True
    return ship.last_s


def fn_name(fn: Any) -> str:
    """How a goroutine's function is named in a ``done`` (its module and qualified name)."""
    return f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _queued(net: Any) -> int:
    """Goroutines not started waiting in this node's run queues, at most (hub thread: with one
    P, every goroutine waiting on its hub counts)."""
    broker = proc.broker
    if broker is None:
        return len(net.hub.runq)
    ctx = broker.ctx
    return sum(len(ctx.runq[q]) for q in range(ctx.nprocs))


def _take_local(net: Any, k: int) -> list[tuple]:
    """Up to ``k`` goroutines not started, taken out of this node's run queues."""
    broker = proc.broker
    hub = net.hub
    out: list[tuple] = []
    if broker is None:  # one P: goroutines go() queued on the hub, not started yet
        return _take_queued(hub, k)
    from .._mp import tasks

    ctx = broker.ctx
    for q in range(ctx.nprocs):
        if len(out) >= k:
            break
        ring = ctx.runq[q]
        avail = len(ring)
        if avail < 2:
            continue
        for frame in ring.get_many(min(k - len(out), avail - avail // 2)):
            try:
                t = tasks.unframe(frame)
                fn = tasks.known_fn(t[2])
                if fn is not None and type(t[4]) is list and not t[5]:
                    args, kwargs = tuple(t[4]), dict[str, Any]()
                else:
                    fn, args, kwargs, _warn, _digest = tasks.unpack_items(t, broker.arena)
            except BaseException as exc:  # noqa: BLE001 - reported where it would have run
                hub.spawn_local(_failing, (exc,), {})
                continue
            if getattr(fn, "__dict__", {}).get("executor_task"):
                hub.spawn_local(fn, args, kwargs)  # its outcome goes to this node's future
                continue
            out.append((fn, args, kwargs, tasks.made_of(t)))
    return out


def _take_queued(hub: Any, k: int) -> list[tuple]:
    """(one P) Up to ``k`` goroutines not started from the head of the hub's run queue, in
    their order, the first one left for this P (Go steals from a run queue's head). Looks at
    ``_SCAN`` goroutines per one taken at most: readied goroutines gather at the queue's tail,
    and the queue may be long."""
    runq = hub.runq
    looked: list[Any] = []
    taken: list[Any] = []
    skipped = False
    budget = k * _SCAN + _SCAN
    while runq and len(taken) < k and budget:
        budget -= 1
        g = runq.popleft()
        if (g.glet is None and not g.local and not g.is_main
                and not getattr(g.fn, "__dict__", {}).get("executor_task")):
            if skipped:
                taken.append(g)
                continue
            skipped = True
        looked.append(g)
    runq.extendleft(reversed(looked))
    out = []
    for g in taken:
        hub.allgs.pop(g.id, None)
        out.append((g.fn, g.args, g.kwargs, requeued(g.made)))  # a code object cannot travel
    return out


def _failing(exc: BaseException) -> None:
    raise RuntimeError(f"cannot run a goroutine taken from a run queue: {exc}") from exc


def start_shipped(net: Any, batch: list, counted: bool) -> None:
    """(node k's dispatcher) Start goroutines another node sent here, on any of this node's
    Ps; ``counted``: node 0's balancer shipped them and counts them back."""
    hub = net.hub
    done = net.ship.done
    if counted and done is None and proc.broker is not None:
        done = net.ship.done = Chan(1024)
        net.hub.spawn_local(_count_done, (net, done), {})
        net.infra += 1
    for fn, args, kwargs, made in batch:
        if counted:
            _start(hub, _shipped, (fn, args, kwargs, done), {}, made)
        else:
            _start(hub, fn, args, kwargs, made)


def _start(hub: Any, fn: Any, args: tuple, kwargs: dict, made: tuple | None) -> None:
    """``go(fn, *args, **kwargs)`` on this node, created where ``made`` says: where the go()
    call that made it on another node was (G.made, as go() queues it for any P)."""
    made = requeued(made)
    if hub.broker is not None:
        hub.broker.place(fn, args, kwargs, made)
        return
    g = hub.spawn(fn, args, kwargs, False)
    if g is not None:
        g.made = made


def _shipped(fn: Any, args: tuple, kwargs: dict, done: Chan | None) -> None:
    """The body of a goroutine shipped from node 0: counted back there once it ends, with
    the CPU time its P spent meanwhile (its own, and that of the goroutines the P ran while it
    waited: never less than what it cost)."""
    t0 = time.thread_time()
    try:
        fn(*args, **kwargs)
    finally:
        dt = time.thread_time() - t0
        net = proc.cluster
        if net is not None:
            net.ship.count_done(fn_name(fn), dt)
        elif done is not None:
            done.send((fn_name(fn), dt))


def _count_done(net: Any, done: Chan) -> None:
    for name, dt in done:
        net.ship.count_done(name, dt)


def go_node(node: int, fn: Any, *args: Any, **kwargs: Any) -> None:
    """Start ``fn(*args, **kwargs)`` in a goroutine on ``node`` (from a node's P0; for tests
    and benchmarks that need a goroutine on a given node). TypeError if it cannot travel."""
    net = proc.cluster
    if net is None:
        raise RuntimeError("go_node needs a cluster run, from P0 of a node")
    if node == net.me:
        net.hub.go(fn, args, kwargs)
        return
    made = queued_here(sys._getframe(1), net.hub.current)
    net.send(node, ("go1", [(fn, args, kwargs, made)]))
