"""A node's network part: one ``Net`` per node, on the node's P0, reached as ``proc.cluster``.
It owns the node's parts and runs the dispatcher that carries out every message.

The parts, each a module of its own: the links and their threads (``link.py``, ``Mesh``), what
a frame's pickle holds (``wire.py``), the objects homed here and the requests between nodes
(``homes.py``, ``Homes``), which nodes hold them (``refs.py``, ``Refs``), send credits and
the fence (``credits.py``, ``Credits``), the offers of selects waiting on other nodes' channels
(``offers.py``, ``Offers``), deadlock detection across nodes
(``rounds.py``, ``Rounds``), the runtime-wide views (``views.py``, ``Views``) and goroutines
shipped between nodes (``ship.py``, ``Shipping``). Threads only move bytes. The links are read
by the hub itself when P0 is the node's only P (``netpoll.py``: it waits for frames when idle
and polls in its pass), else by a thread that hands the frames over through ``hub.post``;
either way whole frames go to the dispatcher goroutine, which unpickles each message and hands
it to the part it is for. Every part runs on P0's hub, so none of them takes a lock.

Batches: a put, a request, a reply, and the count of shipped goroutines ended here (``done``,
once per batch), go into their node's batch instead of its link; the batches are written, each
in one write, when the flusher goroutine gets its turn (it is queued at the head of the run
queue when the first of them is batched, so what the running goroutine sends until it yields
goes out together: a stream's puts; and a goroutine readied into ``runnext`` runs before it: a
request and the reply a stand-in then sends, as in a ping-pong, share one write and wake the
other node once), when a batch is ``BATCH_MAX`` long, and before any other frame is written on
any link (so frames leave in the order they were sent, batched or not). Whoever sends a request
parks for its reply, and a reply comes from the dispatcher or a stand-in, which yield soon
after: neither waits behind a goroutine's time slice. The receiver reads a batch as the frames
it is made of.

Wire: every frame is a 4-byte big-endian length and a pickle (protocol 5, cloudpickle for
functions; ``link.py``, ``wire.py``); a channel inside it travels as its home node, id and
capacity, and arrives as the channel itself on its home, as a ``RemoteChan`` elsewhere.
Messages:

- ``("hello", node, addr)`` a new link says whose it is; ``("table", addrs)`` node 0 tells every
  node where the others listen; ``("ready", node)`` a node has a link to every other one;
- ``("req", rid, oid, op, arg)`` an operation on an object homed at the receiver, answered by
  ``("rep", rid, ok, value or exception)``; blocking ones are carried out by a goroutine at the
  home, parked there as the remote goroutine's stand-in (``homes.py``);
- ``("put", oid, value)`` a send into buffered channel ``oid`` on a credit (a buffer slot the
  home reserved for the sender's node), no answer; ``("credit", oid, k)`` the home reserves k
  more slots of channel ``oid`` for the receiver; ``("recall", oid)`` the home asks for the
  slots of ``oid`` the receiver has not used, answered by ``("unused", oid, k)`` after every
  put sent on the others; ``("putfail", oid, exc)`` a put found the
  channel closed (a send on a closed channel: the sender's run panics); ``("fence", k)`` the
  sender waits until its first k puts to the receiver have landed, answered by
  ``("fenced", k)`` (``credits.py``);
- ``("release", oid, count, unused)`` the sender dropped its handle on object ``oid`` homed
  at the receiver, into which ``count`` references had arrived, and gives back ``unused``
  credits; ``("lend", oid, node)`` the sender passed a handle on object ``oid`` of the receiver
  on to ``node`` (``refs.py``);
- ``("go", [(fn, args, kwargs, made), ...])`` goroutines to start here (``made``: where
  they were created, G.made), ``("done", k, costs)`` k of
  them ended, having taken so much CPU time per function;
  ``("go1", [...])`` goroutines started here on purpose, not counted back (``ship.py``);
- ``("offer", oid, token, case, is_send, value)`` / ``("unoffer", oid, token)`` a select of
  the sender offers a case on channel ``oid`` here, or takes its offers back; ``("poke",
  token)`` one of its offered cases could complete at the sender: the select tries its cases
  again; a try finding no partner claims an offer's token at its node (node operation
  ``claim``, object id 0): the claim is a send on the token's unbuffered channel, which commits
  only while the select waits on it (``offers.py``, ``remote.select_remote``);
- ``("hb",)`` heartbeat, ``("panic", exc, text)`` a node's run ended in a panic,
  ``("stop",)`` the run is over, ``("bye",)`` the sender closes the link on purpose;
- ``("dq", round)`` node 0 asks whether the node's program is durably blocked, answered by
  ``("dr", round, state)`` (``rounds.py``); neither counts as the program's traffic.

Invariants:
- Every operation on a remote object commits at its home, once: a request is carried out
  exactly once, and its requester gets one reply, or ``ProcessLost`` if the home is lost first.
- A node's sends into one remote channel land in the order its goroutines made them (puts and
  blocking sends alike), each once.
- Frames are written in the order ``write`` and ``put_probe`` were called (the heartbeat
  thread's ``hb`` aside): a batched one waits in ``batch`` only while the flusher is queued
  (``flush_idle`` false), and every other one is written after the batches.
- Every message but the probes (``hb``, ``dq``, ``dr``, ``fence``, ``fenced``) goes out through
  ``send``: counted (``Rounds.sent``) and behind the fence; each is handled, and counted
  (``Rounds.handled``), by the dispatcher in the order its link delivered it.
- A link silent for ``CSP_MP_HEARTBEAT_S`` (3 s by default) or closed without ``bye`` makes its
  node lost: every goroutine waiting on a reply from it gets ``ProcessLost`` naming it.
"""

from __future__ import annotations

import io
import pickle
import socket
import threading
from collections import deque
from typing import Any

from .._hub import current_hub
from .._hub import waits as W
from .._proc import proc
from .credits import Credits
from .homes import Homes
from .link import BIG, HDR, Link, Mesh, frame, lost_error
from .netpoll import Poller
from .offers import Offers
from .refs import Refs
from .rounds import Rounds
from .ship import Shipping
from .views import Views
from .wire import Kinds, Pickler

#: messages of the heartbeat, the deadlock probe and the fence: not the program's traffic
_PROBES = frozenset(("hb", "dq", "dr", "fence", "fenced"))
#: messages batched (module doc: their senders yield soon after); a batch this long is
#: written at once
_BATCHED = frozenset(("put", "done", "req", "rep"))
BATCH_MAX = 128


class Net:
    """This node's links and the objects and requests that travel on them (P0 only)."""

    def __init__(self, me: int, n: int, procs: list[int]) -> None:
        self.me = me
        self.n = n
        self.procs = procs
        self.hub = current_hub()
        self.addrs: list[Any] = [None] * n
        #: lost node -> why
        self.lost: dict[int, str] = {}
        self.ready_nodes: set[int] = set()
        self.all_ready = threading.Event()
        self.stopped = threading.Event()
        self.stopping = False
        #: (link, frames or why it ended), from the threads to the dispatcher
        self.inbox: deque = deque()
        self.disp_g: Any = None
        self.disp_idle = False
        #: this node's goroutines that are the runtime's, not the program's: the dispatcher,
        #: the keeper, the forwarder and counter when they run, a node runtime's main; and the
        #: goroutines standing in for goroutines of other nodes or Ps (``serving``)
        self.infra = 0 if me == 0 else 1
        self.serving = 0
        #: the blocking calls the runtime's own goroutines hold here (``Rounds.quiet``)
        self.blocking_infra = 0
        self.poller = Poller(self._deliver, self._post, self.stopped)
        self.mesh = Mesh(self._post, self.poller, self.stopped, self.lost,
                         self._beat if me == 0 else None)
        self.links: dict[int, Link] = self.mesh.links
        self.refs = Refs(self)
        self.homes = Homes(self)
        self.credits = Credits(self)
        self.offers = Offers(self)
        self.rounds = Rounds(self)
        self.views = Views(self)
        self.ship = Shipping(self)
        #: a value that came from another node, about to be sent into a channel homed here:
        #: the channel's send check (``homes.travel_check``) lets it pass without pickling it
        #: again; set just before that send, consumed by the check
        self.wired: Any = None
        self.sent = self.rounds.sent
        self.handled = self.rounds.handled
        self.kinds = Kinds()
        self.pbuf = io.BytesIO()
        self.pickler = Pickler(self.pbuf, self.homes, self.kinds)
        #: frames batched for each node, in order (module doc); the flusher goroutine that
        #: writes them, and whether it is parked
        self.batch: dict[int, list[bytes]] = {}
        self.flush_g: Any = None
        self.flush_idle = False

    # ------------------------------------------------------------------ start and stop

    def start(self, listener: socket.socket) -> None:
        """Start the dispatcher and the threads; accept links on ``listener`` (from P0's
        main goroutine)."""
        proc.cluster = self
        from .remote import select_remote

        proc.select_remote = select_remote
        self.addrs[self.me] = listener.getsockname()[:2]
        hub = self.hub
        hub.spawn_local(self._dispatch_loop, (), {})
        hub.spawn_local(self._flush_loop, (), {})
        self.infra += 3  # the dispatcher, the flusher and the keeper below
        # a goroutine always in a blocking call: other nodes can wake this node's goroutines,
        # so this node's checkdead never reports a deadlock; node 0's probe does (rounds.py)
        self.blocking_infra += 1
        hub.spawn_local(_keep_alive, (self.stopped,), {})
        if hub.broker is None:  # the hub waits for frames itself, and reads them
            self.poller.attach(hub)
        else:  # it waits on its doorbell, which only Ps ring: a thread reads
            threading.Thread(target=self.poller.serve, name="csp_mp-net-poller",
                             daemon=True).start()
        self.mesh.start(listener)
        if self.me == 0 and self.n > 1:
            self.ship.start_balancer()

    def connect(self, node: int, addr: Any) -> None:
        """Open the link to ``node`` and say who this node is."""
        self.mesh.connect(node, addr)
        self.send(node, ("hello", self.me, self.addrs[self.me]))

    def shutdown(self) -> None:
        """The run is over: tell every node, close every link (node 0)."""
        self.stopping = True
        for node in list(self.links):
            self.send(node, ("stop",))
        self.close()

    def close(self, bye: bool = True) -> None:
        """Close every link after writing what is queued; stop the threads. Without ``bye``
        (this node's run failed) the other nodes take this node for lost."""
        self.stopping = True
        self.stopped.set()
        self.flush()
        self.mesh.close(bye)
        if proc.cluster is self:
            proc.cluster = None

    # ------------------------------------------------------------------ runtime-wide views

    def num_goroutine(self) -> int:
        """(a goroutine on P0) The program's live goroutines on every node."""
        return self.views.num_goroutine()

    def stack(self) -> str:
        """(a goroutine on P0) The program's goroutines on every node, each naming its node."""
        return self.views.stack()

    def metrics(self) -> dict[str, Any]:
        """(a goroutine on P0) Every node's counters added up, and each node's own."""
        return self.views.metrics()

    # ------------------------------------------------------------------ from the threads

    def _deliver(self, link: Link, item: Any) -> None:
        """(hub thread) Hand frames, or why a link ended, to the dispatcher."""
        if not self.stopped.is_set():
            self.inbox.append((link, item))
            self._kick()

    def _post(self, link: Link, item: Any) -> None:
        """(a thread) Hand frames, or why a link ended, to the dispatcher."""
        if self.stopped.is_set():
            return
        self.inbox.append((link, item))
        try:
            self.hub.post(self._kick)
        except Exception:  # the runtime stopped meanwhile
            pass

    def _beat(self) -> None:
        """(node 0, the heartbeat thread) Have the hub start a deadlock round."""
        if (self.n == 1 or self.all_ready.is_set()) and not self.stopped.is_set():
            try:
                self.hub.post(self.rounds.probe)
            except Exception:  # the runtime stopped meanwhile
                pass

    # ------------------------------------------------------------------ the dispatcher

    def _kick(self) -> None:
        """(hub thread) Wake the dispatcher for what the threads queued."""
        if self.disp_idle:
            self.disp_idle = False
            self._ready_first(self.disp_g)  # a remote partner waits for this turn

    def _dispatch_loop(self) -> None:
        hub = self.hub
        self.disp_g = hub.current
        inbox = self.inbox
        loads = pickle.loads
        while True:
            while inbox:
                link, item = inbox.popleft()
                if type(item) is str:
                    self._link_ended(link, item)
                    continue
                for data in item:
                    self._handle(link, loads(data))
            if self.refs.dying:
                self.refs.sweep()
            self.disp_idle = True
            hub.park(W.BLOCKING_CALL)  # woken by _kick; never a deadlock

    def _handle(self, link: Link, msg: tuple) -> None:
        kind = msg[0]
        if kind in _PROBES:
            if kind == "dq":
                self.rounds.ask(link.node, msg[1])
            elif kind == "dr":
                self.rounds.answer(link.node, msg[1], msg[2])
            elif kind == "fence":
                self.credits.fence(link.node, msg[1])
            elif kind == "fenced":
                self.credits.confirmed(link.node, msg[1])
            return
        self.handled[msg[1] if kind == "hello" else link.node] += 1
        if kind == "put":
            self.credits.land(link.node, msg[1], msg[2])
        elif kind == "credit":
            self.credits.add(link.node, msg[1], msg[2])
        elif kind == "recall":
            self.credits.give_back(link.node, msg[1])
        elif kind == "unused":
            self.credits.unused(link.node, msg[1], msg[2])
        elif kind == "putfail":
            self.credits.revoke(link.node, msg[1])
            exc = msg[2]
            exc.add_note(f"(a send into a channel of node {link.node}, on a credit, found it "
                         "closed)")
            raise exc
        elif kind == "rep":
            self.homes.answered(msg[1], msg[2], msg[3])
        elif kind == "req":
            self.homes.request(link.node, msg[1], msg[2], msg[3], msg[4])
        elif kind == "go":
            self.ship.arrived(msg[1], True)
        elif kind == "go1":
            self.ship.arrived(msg[1], False)
        elif kind == "done":
            self.ship.ended(link.node, msg[1], msg[2])
        elif kind == "hello":
            link.node = msg[1]
            self.links[msg[1]] = link
            self.addrs[msg[1]] = msg[2]
            if self.me == 0 and len(self.links) == self.n - 1:
                for node in self.links:
                    self.send(node, ("table", self.addrs))
            self._maybe_ready()
        elif kind == "table":
            self.addrs = msg[1]
            for node in range(1, self.me):
                self.connect(node, self.addrs[node])
            self._maybe_ready()
        elif kind == "ready":
            self.ready_nodes.add(msg[1])
            if len(self.ready_nodes) == self.n - 1:
                self.all_ready.set()
        elif kind == "stop":
            self.stopping = True
            self.stopped.set()
        elif kind == "bye":
            link.bye = True
        elif kind == "offer":
            self.offers.add(link.node, msg[1], msg[2:])
        elif kind == "unoffer":
            self.offers.remove(link.node, msg[1], msg[2])
        elif kind == "poke":
            self.offers.poke(msg[1])
        elif kind == "release":
            self.refs.release(link.node, msg[1], msg[2], msg[3])
        elif kind == "lend":
            self.refs.lend(msg[1], msg[2])
        elif kind == "panic":
            exc = msg[1]
            try:
                exc.add_note(f"(raised on node {link.node})\n{msg[2]}")
            except Exception:
                pass
            self.stopping = True
            raise exc

    def _maybe_ready(self) -> None:
        if self.me != 0 and len(self.links) == self.n - 1 and not self.ready_nodes:
            self.ready_nodes.add(self.me)
            self.send(0, ("ready", self.me))

    def _link_ended(self, link: Link, why: str) -> None:
        if self.stopping or link.bye or link.node < 0:
            return
        node = link.node
        if node in self.lost:
            return
        self.lost[node] = why
        err = lost_error(node, why)
        self.homes.fail(node, err)
        self.refs.node_lost(node)
        self.offers.node_lost(node)
        self.credits.node_lost(node)
        if node == 0:  # the program's node is gone: this node's run ends
            self.stopping = True
            self.stopped.set()
            raise err

    # ------------------------------------------------------------------ sending

    def dumps(self, msg: Any) -> bytes:
        """``msg`` pickled for another node (hub thread: one pickler, reused)."""
        f, p = self.pbuf, self.pickler
        f.seek(0)
        f.truncate()
        p.clear_memo()
        self.refs.start()
        try:
            p.dump(msg)
        except BaseException:
            self.pickler = Pickler(f, self.homes, self.kinds)  # one that failed is not reused
            self.refs.unsent()
            raise
        return f.getvalue()

    def send(self, node: int, msg: Any) -> None:
        """Queue ``msg`` for ``node`` (TypeError if it cannot travel), after the puts this
        node sent to other nodes have landed (the fence, ``credits.py``)."""
        data = self.dumps(msg)
        if node not in self.links:
            self.refs.unsent()
            why = self.lost.get(node, "no link to it")
            raise lost_error(node, why)
        self.sent[node] += 1
        credits = self.credits
        unfenced = credits.unfenced
        kind = msg[0]
        if credits.held or (unfenced and (len(unfenced) > 1 or node not in unfenced)):
            credits.hold(node, data, kind == "put", kind in _BATCHED)
        else:
            self.write(node, data, kind == "put", kind in _BATCHED)
        if self.refs.own or self.refs.lent:
            self.refs.sent(node)

    def write(self, node: int, data: bytes, is_put: bool, batched: bool) -> None:
        """Write one message's frame on the link to ``node`` (its turn has come): into the
        node's batch if ``batched`` (and not ``BIG``), else at once after every batch."""
        link = self.links.get(node)
        if link is None or node in self.lost:
            return
        if is_put:
            self.credits.wrote_put(node)
        if batched and len(data) < BIG:
            b = self.batch.get(node)
            if b is None:
                b = self.batch[node] = []
                if self.flush_idle:  # the flusher writes it at its turn
                    self.arm()
            b.append(HDR.pack(len(data)) + data)
            if len(b) >= BATCH_MAX:
                self.flush()
            return
        if self.batch:
            self.flush()
        if len(data) < BIG:
            link.put(HDR.pack(len(data)) + data)
            return
        link.put(HDR.pack(len(data)))
        link.put(data)

    def put_probe(self, node: int, msg: tuple) -> None:
        """Write a probe (module doc) to ``node`` at once, after every batch: not counted,
        not fenced."""
        if self.batch:
            self.flush()
        link = self.links.get(node)
        if link is not None:
            link.put(frame(pickle.dumps(msg)))

    def flush(self) -> None:
        """Write every batch, each in one write (hub thread, or once the run is over)."""
        ship = self.ship
        if ship.unsent and self.me != 0 and 0 in self.links and 0 not in self.lost:
            self.send(0, ("done", *ship.take_unsent()))
        batch = self.batch
        if not batch:
            return
        self.batch = {}
        links, lost = self.links, self.lost
        for node, frames in batch.items():
            link = links.get(node)
            if link is not None and node not in lost:
                link.put(b"".join(frames) if len(frames) > 1 else frames[0])

    def arm(self) -> None:
        """Have the flusher run once the running goroutine yields (something will be batched
        by then): ahead of the goroutines already waiting, as a goroutine running for a whole
        time slice each may be among them."""
        if self.flush_idle:
            self.flush_idle = False
            self._ready_first(self.flush_g)

    def _ready_first(self, g: Any) -> None:
        """Make ``g``, one of this part's parked goroutines, run ahead of the goroutines already
        waiting in the run queue (``runnext`` still goes first)."""
        hub = self.hub
        hub.ready(g, None, next_=False)
        runq = hub.runq
        runq.appendleft(runq.pop())

    def _flush_loop(self) -> None:
        """(the flusher goroutine) Write the batches whenever woken (``arm``)."""
        hub = self.hub
        self.flush_g = hub.current
        while True:
            self.flush()
            self.flush_idle = True
            hub.park(W.BLOCKING_CALL)  # readied by write or arm; never a deadlock


def _keep_alive(stopped: threading.Event) -> None:
    from .._run import blocking

    blocking(stopped.wait)
