"""A node's network part: the TCP links to every other node, the objects homed here that other
nodes use, the requests between nodes, and (on node 0) goroutines shipped to idle nodes.

One ``Net`` per node, on the node's P0, reached as ``proc.cluster``. Threads only move bytes:
one reader and one writer per link, one accepting links, one sending heartbeats and watching
for silent links. Everything else runs on P0's hub: the reader threads hand whole frames to the
dispatcher goroutine (``hub.post``), which unpickles and carries out each message.

Wire: every frame is a 4-byte big-endian length and a pickle (protocol 5, cloudpickle for
functions); a channel inside it travels as ``("c", home node, id, cap)`` (``persistent_id``), and
arrives as the channel itself on its home, as a ``RemoteChan`` elsewhere. Messages:

- ``("hello", node, addr)`` a new link says whose it is; ``("table", addrs)`` node 0 tells every
  node where the others listen; ``("ready", node)`` a node has a link to every other one;
- ``("req", rid, oid, op, arg)`` an operation on an object homed at the receiver, answered by
  ``("rep", rid, ok, value or exception)``; blocking ones are carried out by a goroutine at the
  home, parked there as the remote goroutine's stand-in;
- ``("put", oid, value)`` a send into buffered channel ``oid`` on a credit (a buffer slot the
  home reserved for the sender's node), no answer; ``("credit", oid, k)`` the home reserves k
  more slots of channel ``oid`` for the receiver; ``("putfail", oid, exc)`` a put found the
  channel closed (a send on a closed channel: the sender's run panics); ``("fence", k)`` the
  sender waits until its first k puts to the receiver have landed, answered by
  ``("fenced", k)``;
- ``("go", [(fn, args, kwargs), ...])`` goroutines to start here, ``("done", k)`` k of them ended;
- ``("offer", oid, token, case, is_send, value)`` / ``("unoffer", oid, token)`` a select of
  the sender offers a case on channel ``oid`` here, or takes its offers back; a try finding no
  partner claims an offer's token at its node (node operation ``claim``, object id 0): the
  claim is a send on the token's unbuffered channel, which commits only while the select waits
  on it (``remote.select_remote``);
- ``("hb",)`` heartbeat, ``("panic", exc, text)`` a node's run ended in a panic,
  ``("stop",)`` the run is over, ``("bye",)`` the sender closes the link on purpose;
- ``("dq", round)`` node 0 asks whether the node's program is durably blocked, answered by
  ``("dr", round, state)`` (``Net.quiet``); neither counts as the program's traffic.

Deadlock detection across nodes: every node keeps one goroutine in a blocking call (a message
from another node may wake its goroutines, so its own checkdead never reports a deadlock), and
counts the messages it sends to and handles from each node (``hb``, ``dq``, ``dr`` aside).
Node 0 asks every node at each heartbeat; a node answers with its counters and its Ps' epochs
when every program goroutine there is durably blocked and nothing is queued (Go's checkdead, on
its Ps), else None. Node 0 declares a deadlock when every node, itself included, says so in two
rounds in a row with nothing changed, and every message sent has been handled: counters frozen
from the last answer of the first round to the first of the second make one consistent cut of
the cluster, at which nothing runs, nothing can wake and nothing is in flight.

Send credits: a send into another node's buffered channel (op ``sendb``) asks its home for
credits with its first, blocking, request; the answer carries the slots granted (at most the
room in the buffer not reserved for another node, and at most ``credit_window``). While a node
holds credits for a channel its sends are ``put`` messages and return at once; the home lands
them in the order they came (a put finding the buffer full, its room taken by a sender of the
home, waits there in a queue of its sender's node, ahead of that node's later sends), and
tops the credits up as puts land while there is room, in batches of at least half a window.
A node out of credits sends the blocking way, which waits at the home for room.

A put returns before its value lands, so it is fenced: while puts of this node to a home have
not been confirmed landed (``unfenced``), a message to any other node is held back, with every
later message (``held``), until a ``fence`` round trip to that home confirms them. Whatever
another node learns from this one thus comes after the values this node sent (a close caused
that way finds them in the buffer); a stream to one home pays nothing.

Invariants:
- Every operation on a remote object commits at its home, once: a request is carried out
  exactly once, and its requester gets one reply, or ``ProcessLost`` if the home is lost first.
- A node's sends into one remote channel land in the order its goroutines made them (puts and
  blocking sends alike), each once.
- A link silent for ``CSP_MP_HEARTBEAT_S`` (3 s by default) or closed without ``bye`` makes its
  node lost: every goroutine waiting on a reply from it gets ``ProcessLost`` naming it.
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
import socket
import struct
import threading
import time
import weakref
from collections import ChainMap, deque
from typing import Any

from .. import _context
from .._chan import Chan, default, select
from .._errors import ClosedChannelError, DeadlockError, ProcessLost
from .._hub import Outcome, current_hub
from .._hub import waits as W
from .._mp import ctx as C
from .._proc import proc
from .._shm import cloud
from .remote import (
    RemoteChan,
    home_kind,
    homed_classes,
    make_obj,
    proxy_class,
    reduce_context,
)

HDR = struct.Struct("!I")
#: frames this large are sent apart from the small ones queued with them
BIG = 1 << 20


def heartbeat_timeout() -> float:
    """Seconds of silence after which a node counts as lost (``CSP_MP_HEARTBEAT_S``)."""
    try:
        return max(0.2, float(os.environ.get("CSP_MP_HEARTBEAT_S", "3") or 3))
    except ValueError:
        return 3.0


class Link:
    """One TCP link to another node, the frames queued for it and when it last spoke.

    ``put`` writes at once when nothing is queued and the writer thread is not writing (no
    thread hand-off on the common path); else it queues, and the writer thread sends whatever
    is queued in one write. Either way frames leave in the order they were put.
    """

    __slots__ = ("node", "sock", "out", "cond", "writing", "last_rx", "bye", "writer")

    def __init__(self, sock: socket.socket, node: int = -1) -> None:
        self.node = node
        self.sock = sock
        self.out: deque = deque()
        self.cond = threading.Condition(threading.Lock())
        self.writing = False
        self.last_rx = time.monotonic()
        self.bye = False  # the peer said it closes on purpose
        self.writer: threading.Thread | None = None

    def put(self, data: Any) -> None:
        """Send ``data`` (bytes, or None to end the writer) after what is queued."""
        with self.cond:
            if data is not None and not self.out and not self.writing:
                try:
                    n = self.sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return  # the link is gone: its reader reports it
                if n == len(data):
                    return
                data = memoryview(data)[n:]
            self.out.append(data)
            self.cond.notify()

    def write_loop(self) -> None:
        """(the writer thread) Send what is queued, in one write, until told to end."""
        out, cond, sock = self.out, self.cond, self.sock
        while True:
            with cond:
                while not out:
                    cond.wait()
                batch = list(out)
                out.clear()
                self.writing = True
            end = batch[-1] is None
            if end:
                batch.pop()
            try:
                small: list[Any] = []
                for b in batch:
                    if len(b) >= BIG:
                        if small:
                            sock.sendall(b"".join(small))
                            small = []
                        sock.sendall(b)
                    else:
                        small.append(b)
                if small:
                    sock.sendall(b"".join(small) if len(small) > 1 else small[0])
            except OSError:
                return  # the reader sees the link end
            finally:
                with cond:
                    self.writing = False
            if end:
                return


_UNSEEN = -1  # Net.kinds: a type not looked at yet


class _Pickler(cloud._Pickler):
    dispatch_table = ChainMap({_context._CancelCtx: reduce_context},
                              cloud._Pickler.dispatch_table)

    def __init__(self, f: Any, net: Net) -> None:
        super().__init__(f, protocol=5)
        self.net = net

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t is Chan:
            return ("c", self.net.me, self.net.export(obj), obj._st.cap)
        if t is RemoteChan:
            return ("c", obj._home, obj._oid, obj._st.cap)
        kinds = self.net.kinds
        kind = kinds.get(t, _UNSEEN)
        if kind == _UNSEEN:  # once per type: a handle (first), an object homed here, neither
            kind = kinds[t] = (None if t in self.net.proxy_types
                               else home_kind(t, self.net.homed))
        if kind is not None:
            return ("o", self.net.me, self.net.export(obj), kind)
        if t in self.net.proxy_types:
            return ("o", obj._home, obj._oid, obj._kind)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: Any, net: Net) -> None:
        super().__init__(io.BytesIO(data))
        self.net = net

    def persistent_load(self, pid: Any) -> Any:
        what, home, oid, extra = pid
        if what == "c":
            return self.net.resolve(home, oid, extra)
        return self.net.resolve_obj(home, oid, extra)


def perform(obj: Any, op: str, arg: Any) -> Any:
    """Carry out ``op`` on ``obj``, an object homed here, for a goroutine of any node."""
    if op in ("send", "sendb"):
        obj.send(arg)
        return None
    if op == "recv":
        return obj.recv_ok()
    if op == "trysend":
        return select((obj.send, arg[0]), default)[0] == 0
    if op == "tryrecv":
        i, got = select(obj.recv_ok, default)
        return (True, got) if i == 0 else (False, None)
    if op == "close":
        obj.close()
        return None
    if op == "len":
        return len(obj)
    if op == "closed":
        return obj.closed
    if op == "stats":
        return tuple(obj.stats())
    if op == "call":
        name, args, kwargs = arg
        return getattr(obj, name)(*args, **kwargs)
    raise ValueError(f"unknown remote operation {op!r}")


def _reason(op: str) -> str:
    return W.CHAN_SEND if op == "send" else W.CHAN_RECV



#: messages of the heartbeat and the deadlock probe: not counted as the program's traffic
_PROBES = frozenset(("hb", "dq", "dr", "fence", "fenced"))
_INLINE = frozenset(("trysend", "tryrecv", "close", "len", "closed", "stats"))


def _lost_error(node: int, why: str) -> ProcessLost:
    exc = ProcessLost(f"node {node} was lost ({why})")
    exc.node = node  # type: ignore[attr-defined]
    return exc


class Net:
    """This node's links and the objects and requests that travel on them (P0 only)."""

    def __init__(self, me: int, n: int, procs: list[int]) -> None:
        self.me = me
        self.n = n
        self.procs = procs
        self.hub = current_hub()
        self.links: dict[int, Link] = {}
        self.addrs: list[Any] = [None] * n
        self.exports: dict[int, Any] = {}
        self.export_ids: dict[int, int] = {}
        self.oids = itertools.count(1)
        self.proxies: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.pending: dict[int, tuple[Any, int]] = {}
        self.rids = itertools.count(1)
        self.inbox: deque = deque()
        self.disp_g: Any = None
        self.disp_idle = False
        self.lost: dict[int, str] = {}
        self.ready_nodes: set[int] = set()
        self.all_ready = threading.Event()
        self.stopped = threading.Event()
        self.stopping = False
        self.outbox: Chan | None = None
        self.done: Chan | None = None
        self.outstanding = [0] * n
        self.homed = {t: k for k, t in enumerate(homed_classes())}
        #: type -> the kind its objects are homed as, None for any other type (persistent_id)
        self.kinds: dict[type, int | None] = {}
        self.proxy_types = frozenset(proxy_class(k) for k in self.homed.values())
        self.timeout = heartbeat_timeout()
        self.listener: socket.socket | None = None
        self.error: BaseException | None = None
        #: this node's goroutines that are the runtime's, not the program's: the dispatcher,
        #: the keeper, the forwarder and counter when they run, a node runtime's main; and the
        #: goroutines standing in for goroutines of other nodes or Ps (``_serve``, ``_forward``)
        self.infra = 0 if me == 0 else 1
        self.serving = 0
        #: select tokens of this node's selects that offered cases (``select_remote``): id ->
        #: the unbuffered channel the select waits on; and the cases other nodes' selects
        #: offer on channels homed here: oid -> [(node, token id, case, is_send, value)]
        self.tokens: dict[Any, Chan] = {}
        self.offers: dict[int, list[tuple]] = {}
        self.pbuf = io.BytesIO()
        self.pickler = _Pickler(self.pbuf, self)
        #: messages sent to and handled from each node (the deadlock probe's ``hb``, ``dq`` and
        #: ``dr`` aside), and the blocking calls the runtime's own goroutines hold here
        self.sent = [0] * n
        self.handled = [0] * n
        self.blocking_infra = 0
        #: (node 0) the probe's round, the answers to it and the last round's states (all quiet)
        #: send credits (module doc): the slots this node holds in other nodes' channels,
        #: (home, oid) -> k; the slots reserved here for other nodes, (oid, node) -> k, and in
        #: all per channel, oid -> k; puts waiting here for room, (oid, node) -> deque of
        #: (value, request id or 0)
        self.credit: dict[tuple[int, int], int] = {}
        self.reserved: dict[tuple[int, int], int] = {}
        self.reserved_all: dict[int, int] = {}
        self.pushq: dict[tuple[int, int], deque] = {}
        #: the fence (module doc): puts written to each node, how many of them each confirmed
        #: landed and how many a fence asked about; the homes with puts not confirmed; the
        #: messages held back meanwhile, (node, frame, is a put), in order; (home side) the
        #: fence each node waits for while its puts wait for room, node -> k
        self.puts = [0] * n
        self.fenced = [0] * n
        self.fence_asked = [0] * n
        self.unfenced: set[int] = set()
        self.held: deque = deque()
        self.fence_wait: dict[int, int] = {}
        self.probe_round = 0
        self.probe_states: dict[int, Any] = {}
        self.last_quiet: tuple | None = None
        self.deadlocked = False

    # ------------------------------------------------------------------ start and stop

    def start(self, listener: socket.socket) -> None:
        """Start the dispatcher and the threads; accept links on ``listener`` (from P0's
        main goroutine)."""
        proc.cluster = self
        from .remote import select_remote

        proc.select_remote = select_remote
        self.listener = listener
        self.addrs[self.me] = listener.getsockname()[:2]
        hub = self.hub
        hub.spawn_local(self._dispatch_loop, (), {})
        self.infra += 2  # the dispatcher and the keeper below
        # a goroutine always in a blocking call: other nodes can wake this node's goroutines,
        # so this node's checkdead never reports a deadlock; node 0's probe does (module doc)
        self.blocking_infra += 1
        hub.spawn_local(_keep_alive, (self.stopped,), {})
        _thread(self._accept_loop, "accept")
        _thread(self._beat_loop, "heartbeat")
        if self.me == 0 and self.n > 1:
            from .ship import balance

            _thread(balance, "balance", self)

    def connect(self, node: int, addr: Any) -> None:
        """Open the link to ``node`` and say who this node is."""
        sock = socket.create_connection(tuple(addr), timeout=30)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = Link(sock, node)
        self._add_link(link)
        self.send(node, ("hello", self.me, self.addrs[self.me]))

    def _add_link(self, link: Link) -> None:
        if link.node >= 0:
            self.links[link.node] = link
        link.writer = _thread(link.write_loop, "writer")
        _thread(self._read_loop, "reader", link)

    def shutdown(self) -> None:
        """The run is over: tell every node, close every link (node 0)."""
        self.stopping = True
        for node in list(self.links):
            self.send(node, ("stop",))
        self.close()

    def close(self) -> None:
        """Close every link after writing what is queued; stop the threads."""
        self.stopping = True
        self.stopped.set()
        for link in list(self.links.values()):
            try:
                link.put(_frame(pickle.dumps(("bye",))))
            except Exception:
                pass
            link.put(None)
        for link in list(self.links.values()):
            if link.writer is not None:
                link.writer.join(5.0)
            _close(link.sock)
        if self.listener is not None:
            _close(self.listener)
        if proc.cluster is self:
            proc.cluster = None

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        lst = self.listener
        assert lst is not None
        while not self.stopping:
            try:
                sock, _ = lst.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._add_link(Link(sock))

    def _read_loop(self, link: Link) -> None:
        sock = link.sock
        buf = bytearray()
        why = "its link closed"
        try:
            while True:
                chunk = sock.recv(1 << 18)
                if not chunk:
                    break
                link.last_rx = time.monotonic()
                buf += chunk
                frames: list[Any] = []
                pos = 0
                end = len(buf)
                while end - pos >= 4:
                    size = HDR.unpack_from(buf, pos)[0]
                    if end - pos - 4 < size:
                        if size >= BIG and pos == 0:
                            frames.append(self._read_big(link, buf, size))
                            buf = bytearray()
                            pos = end = 0
                        break
                    frames.append(bytes(buf[pos + 4:pos + 4 + size]))
                    pos += 4 + size
                if pos:
                    del buf[:pos]
                if frames:
                    self._post(link, frames)
        except OSError as exc:
            why = f"its link failed: {exc}"
        except EOFError:
            pass
        self._post(link, why)

    def _post(self, link: Link, item: Any) -> None:
        """(a thread) Hand frames, or why a link ended, to the dispatcher."""
        if self.stopped.is_set():
            return
        self.inbox.append((link, item))
        try:
            self.hub.post(self._kick)
        except Exception:  # the runtime stopped meanwhile
            pass

    def _post_call(self, fn: Any) -> None:
        """(a thread) Have the hub call ``fn`` at its next pass."""
        if self.stopped.is_set():
            return
        try:
            self.hub.post(fn)
        except Exception:  # the runtime stopped meanwhile
            pass

    @staticmethod
    def _read_big(link: Link, buf: bytearray, size: int) -> bytearray:
        """The rest of a large frame, read straight into its own buffer."""
        out = bytearray(size)
        have = len(buf) - 4
        out[:have] = buf[4:]
        view = memoryview(out)
        while have < size:
            k = link.sock.recv_into(view[have:])
            if not k:
                raise EOFError
            have += k
        link.last_rx = time.monotonic()
        return out

    def _beat_loop(self) -> None:
        beat = _frame(pickle.dumps(("hb",)))
        period = min(0.5, self.timeout / 4)
        while not self.stopped.wait(period):
            if self.me == 0 and (self.n == 1 or self.all_ready.is_set()):
                self._post_call(self._probe)
            now = time.monotonic()
            for link in list(self.links.values()):
                link.put(beat)
                if now - link.last_rx > self.timeout and link.node not in self.lost:
                    self._post(link, f"silent for more than {self.timeout:g} s")

    # ------------------------------------------------------------------ the hub side

    def _kick(self) -> None:
        """(hub thread) Wake the dispatcher for what the threads queued."""
        if self.disp_idle:
            self.disp_idle = False
            hub = self.hub
            hub.ready(self.disp_g, None, next_=False)
            # ahead of the goroutines already waiting: a remote partner waits for this turn
            runq = hub.runq
            runq.appendleft(runq.pop())

    def _dispatch_loop(self) -> None:
        hub = self.hub
        self.disp_g = hub.current
        inbox = self.inbox
        while True:
            while inbox:
                link, item = inbox.popleft()
                if type(item) is str:
                    self._link_ended(link, item)
                    continue
                for data in item:
                    self._handle(link, _Unpickler(data, self).load())
            self.disp_idle = True
            hub.park(W.BLOCKING_CALL)  # woken by _kick; never a deadlock

    def _handle(self, link: Link, msg: tuple) -> None:
        kind = msg[0]
        if kind in _PROBES:
            if kind == "dq":
                self._put_probe(link.node, ("dr", msg[1], self.quiet()))
            elif kind == "dr":
                self._probe_reply(link.node, msg[1], msg[2])
            elif kind == "fence":
                if any(key[1] == link.node for key in self.pushq):
                    self.fence_wait[link.node] = msg[1]  # answered once they landed (_push)
                else:
                    self._put_probe(link.node, ("fenced", msg[1]))
            elif kind == "fenced":
                self._fenced(link.node, msg[1])
            return
        self.handled[msg[1] if kind == "hello" else link.node] += 1
        if kind == "put":
            self._put(link.node, msg[1], msg[2])
        elif kind == "credit":
            key = (link.node, msg[1])
            self.credit[key] = self.credit.get(key, 0) + msg[2]
        elif kind == "putfail":
            self.credit.pop((link.node, msg[1]), None)
            exc = msg[2]
            exc.add_note(f"(a send into a channel of node {link.node}, on a credit, found it "
                         "closed)")
            raise exc
        elif kind == "rep":
            got = self.pending.pop(msg[1], None)
            if got is not None:
                self.hub.ready(got[0], (msg[2], msg[3]), next_=False)
        elif kind == "req":
            self._request(link.node, msg[1], msg[2], msg[3], msg[4])
        elif kind == "go":
            from .ship import start_shipped

            start_shipped(self, msg[1], True)
        elif kind == "go1":
            from .ship import start_shipped

            start_shipped(self, msg[1], False)
        elif kind == "done":
            self.outstanding[link.node] -= msg[1]
            from .ship import ship_round

            ship_round(self)
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
            self.offers.setdefault(msg[1], []).append((link.node, *msg[2:]))
        elif kind == "unoffer":
            kept = [o for o in self.offers.get(msg[1], ()) if o[:2] != (link.node, msg[2])]
            if kept:
                self.offers[msg[1]] = kept
            else:
                self.offers.pop(msg[1], None)
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
        err = _lost_error(node, why)
        for rid, (g, home) in list(self.pending.items()):
            if home == node:
                del self.pending[rid]
                self.hub.ready(g, (False, err), next_=False)
        for oid, offers in list(self.offers.items()):  # its selects are gone with it
            self.offers[oid] = [o for o in offers if o[0] != node]
        for oid, k in list(self.reserved):  # its credits too
            if k == node:
                self.reserved_all[oid] -= self.reserved.pop((oid, k))
        if node in self.unfenced:  # its puts are lost with it (ProcessLost says so)
            self.unfenced.discard(node)
            self._flush_held()
        if node == 0:  # the program's node is gone: this node's run ends
            self.stopping = True
            self.stopped.set()
            raise err

    # ------------------------------------------------------------------ requests

    def _request(self, node: int, rid: int, oid: int, op: str, arg: Any) -> None:
        obj: Any = self.exports.get(oid) if oid else self  # 0: the node itself (_node_op)
        if obj is None:
            self.reply(node, rid, False, RuntimeError(f"node {self.me} has no object {oid}"))
            return
        try:
            if obj is self:
                if op == "claim":
                    self.reply(node, rid, True, self._claim(*arg))
                    return
            elif op in _INLINE:
                got = perform(obj, op, arg)
                if op in ("trysend", "tryrecv") and not (got if op == "trysend" else got[0]) \
                        and self.offers.get(oid):
                    self.serving += 1  # another node's select may offer the other side
                    self.hub.spawn_local(self._match, (node, rid, oid, op, arg), {})
                    return
                self.reply(node, rid, True, got)
                return
            if op == "sendb" and (oid, node) in self.pushq:  # behind that node's puts
                self.pushq[oid, node].append((arg, rid))
                return
            if op in ("send", "sendb"):
                if select((obj.send, arg), default)[0] == 0:
                    self.reply(node, rid, True,
                               self._grant(node, oid, obj, True) if op == "sendb" else None)
                    return
            elif op == "recv":
                i, got = select(obj.recv_ok, default)
                if i == 0:
                    self.reply(node, rid, True, got)
                    return
        except Exception as exc:
            self.reply(node, rid, False, exc)
            return
        self.serving += 1
        self.hub.spawn_local(self._serve, (node, rid, obj, op, arg), {})

    def _serve(self, node: int, rid: int, obj: Any, op: str, arg: Any) -> None:
        """(a goroutine) Carry out a blocking operation for a goroutine of ``node``."""
        try:
            got = perform(obj, op, arg) if obj is not self else self._node_op(op)
            if op == "sendb":
                got = self._grant(node, self.export_ids[id(obj)], obj, True)
        except Exception as exc:
            self.reply(node, rid, False, exc)
            return
        finally:
            self.serving -= 1
        self.reply(node, rid, True, got)

    def reply(self, node: int, rid: int, ok: bool, value: Any) -> None:
        if node in self.lost:
            return
        try:
            self.send(node, ("rep", rid, ok, value))
        except Exception as exc:  # the value cannot travel: the requester learns why
            self.send(node, ("rep", rid, False, TypeError(f"cannot send the result: {exc}")))

    def call(self, home: int, oid: int, op: str, arg: Any) -> Any:
        """(a goroutine on P0) ``op`` on object ``oid`` of node ``home``; its result."""
        if home == self.me:
            return perform(self.exports[oid], op, arg)
        why = self.lost.get(home)
        if why is not None:
            raise _lost_error(home, why)
        if op == "sendb":
            key = (home, oid)
            k = self.credit.get(key, 0)
            if k > 0:
                self.credit[key] = k - 1
                self.send(home, ("put", oid, arg))
                return None
        hub = self.hub
        rid = next(self.rids)
        self.send(home, ("req", rid, oid, op, arg))
        self.pending[rid] = (hub.current, home)
        ok, value = hub.park(_reason(op))
        if ok:
            if op == "sendb":  # the slots granted with it
                self.credit[home, oid] = self.credit.get((home, oid), 0) + value
                return None
            return value
        raise value

    # ------------------------------------------------------------------ send credits

    def credit_window(self, cap: int) -> int:
        """The most slots of a channel of capacity ``cap`` one node may hold."""
        return max(1, cap // max(1, self.n - 1))

    def _grant(self, node: int, oid: int, ch: Any, now: bool) -> int:
        """(hub thread) Reserve slots of channel ``oid`` for ``node``: as many as its window
        lacks, within the room not reserved already; ``now``: for the answer to a blocking
        send (else only a batch of at least half a window is worth a message). How many."""
        key = (oid, node)
        held = self.reserved.get(key, 0)
        window = self.credit_window(ch.cap)
        if not now and held * 2 > window:
            return 0
        total = self.reserved_all.get(oid, 0)
        k = min(window - held, ch.cap - len(ch) - total)
        if k <= 0 or (not now and k * 2 < window):
            return 0
        self.reserved[key] = held + k
        self.reserved_all[oid] = total + k
        return k

    def _landed(self, node: int, oid: int) -> None:
        """A put of ``node`` into channel ``oid`` used its slot."""
        key = (oid, node)
        held = self.reserved.get(key, 0)
        if held > 0:
            self.reserved[key] = held - 1
            self.reserved_all[oid] -= 1

    def _put(self, node: int, oid: int, value: Any) -> None:
        """(dispatcher) A send of ``node`` on a credit: into the buffer now, else behind that
        node's earlier puts, by a goroutine standing in for its sender."""
        ch = self.exports[oid]
        self._landed(node, oid)
        key = (oid, node)
        q = self.pushq.get(key)
        if q is None:
            try:
                if select((ch.send, value), default)[0] == 0:
                    k = self._grant(node, oid, ch, False)
                    if k:
                        self.send(node, ("credit", oid, k))
                    return
            except ClosedChannelError as exc:
                self._put_failed(node, oid, exc)
                return
            q = self.pushq[key] = deque()
            self.serving += 1
            self.hub.spawn_local(self._push, (node, oid, ch, q), {})
        q.append((value, 0))

    def _push(self, node: int, oid: int, ch: Any, q: deque) -> None:
        """(a goroutine) Land ``node``'s queued sends into channel ``oid`` in order, waiting
        for room like the senders it stands in for."""
        try:
            while q:
                value, rid = q[0]
                try:
                    ch.send(value)
                except ClosedChannelError as exc:
                    q.popleft()
                    if rid:
                        self.reply(node, rid, False, exc)
                    else:
                        self._put_failed(node, oid, exc)
                    continue
                q.popleft()
                if rid:
                    self.reply(node, rid, True, self._grant(node, oid, ch, True))
        finally:
            del self.pushq[oid, node]
            self.serving -= 1
            k = self.fence_wait.get(node)
            if k is not None and not any(key[1] == node for key in self.pushq):
                del self.fence_wait[node]
                self._put_probe(node, ("fenced", k))

    def _put_failed(self, node: int, oid: int, exc: BaseException) -> None:
        """A put found channel ``oid`` closed: its sender's node panics, as a send would."""
        key = (oid, node)
        self.reserved_all[oid] = self.reserved_all.get(oid, 0) - self.reserved.pop(key, 0)
        if node not in self.lost:
            self.send(node, ("putfail", oid, exc))

    # ------------------------------------------------------------------ select meets select

    def offer_cases(self, tid: Any, token: Chan, cases: list[tuple]) -> None:
        """Register a select's token and offer its cases ``(home, oid, case, is_send, value)``
        at their homes (no answer)."""
        self.tokens[tid] = token
        for home, oid, case, is_send, value in cases:
            if home not in self.lost:
                self.send(home, ("offer", oid, tid, case, is_send, value))

    def withdraw(self, tid: Any, homes: list[tuple[int, int]]) -> None:
        """A select is over: forget its token, take its offers on ``(home, oid)`` back."""
        self.tokens.pop(tid, None)
        for home, oid in homes:
            if home not in self.lost:
                self.send(home, ("unoffer", oid, tid))

    def _claim(self, tid: Any, case: int, payload: Any) -> str:
        """(dispatcher) A home asks to complete case ``case`` of token ``tid``'s select: ``ok``
        (the select waited on its token and returns that case), ``busy`` (it is not waiting
        there now: trying its cases, or taking another one) or ``gone`` (it is over)."""
        token = self.tokens.get(tid)
        if token is None:
            return "gone"
        if select((token.send, (case, payload)), default)[0] == 0:
            return "ok"
        return "busy"

    def _match(self, node: int, rid: int, oid: int, op: str, arg: Any) -> None:
        """(a goroutine) A try from ``node`` found no partner on channel ``oid``: complete it
        with a select's offer of the other side, if that select's node lets it claim it."""
        mine = arg[1] if op == "trysend" else arg
        want_send = op == "tryrecv"
        got: Any = False if op == "trysend" else (False, None)
        try:
            for off in list(self.offers.get(oid, ())):
                tnode, tid, case, is_send, value = off
                if is_send != want_send or (tnode, tid) == mine:
                    continue
                payload = None if is_send else (arg[0], True)
                try:
                    status = self.call(tnode, 0, "claim", (tid, case, payload))
                except ProcessLost:
                    status = "gone"
                if status == "busy":
                    continue
                offers = self.offers.get(oid)
                if offers is not None and off in offers:
                    offers.remove(off)
                if status == "ok":
                    got = (True, (value, True)) if want_send else True
                    break
        finally:
            self.serving -= 1
        self.reply(node, rid, True, got)

    # ------------------------------------------------------------------ deadlock across nodes

    def quiet(self) -> tuple | None:
        """(hub thread) None unless every program goroutine on this node is durably blocked
        and nothing is queued here; else what must not change for that to last: the messages
        sent to and handled from each node, and each P's epoch and wake-up counts."""
        hub = self.hub
        if (hub.runq or hub.runnext is not None or hub.fresh
                or hub.pending_blocking != self.blocking_infra
                or hub.timers.next_delay() is not None):
            return None
        ps: list[tuple[int, int, int]] = []
        broker: Any = hub.broker
        if broker is not None:
            if broker.work_waiting():
                return None
            ctx = broker.ctx
            for q in range(ctx.nprocs):
                if q != ctx.p and (ctx.pload(q, C.P_STATUS) not in (C.STUCK, C.EXITED)
                                   or len(ctx.runq[q]) or len(ctx.inbox[q])):
                    return None
                # this P's epoch moves with every message handled here: its counts stand in
                ps.append((ctx.pload(q, C.P_EPOCH) if q != ctx.p else 0,
                           ctx.pload(q, C.P_SENT), ctx.pload(q, C.P_HANDLED)))
            if sum(p[1] for p in ps) != sum(p[2] for p in ps):
                return None  # a wake-up between this node's Ps is in flight
        return tuple(self.sent), tuple(self.handled), tuple(ps)

    def _put_probe(self, node: int, msg: tuple) -> None:
        link = self.links.get(node)
        if link is not None:
            link.put(_frame(pickle.dumps(msg)))

    def _probe(self) -> None:
        """(node 0, hub thread, each heartbeat) Ask every node whether it is durably blocked."""
        if self.stopping or self.deadlocked:
            return
        self.probe_round += 1
        self.probe_states = {}
        nodes = [k for k in range(1, self.n) if k not in self.lost]
        for k in nodes:
            self._put_probe(k, ("dq", self.probe_round))
        if not nodes:
            self._probe_reply(0, self.probe_round, None)

    def _probe_reply(self, node: int, rnd: int, state: tuple | None) -> None:
        """(node 0, hub thread) A node's answer to round ``rnd``; the verdict once all are in."""
        if rnd != self.probe_round or self.deadlocked:
            return  # an answer to a round given up
        if node:
            self.probe_states[node] = state
        live = [k for k in range(1, self.n) if k not in self.lost]
        if any(k not in self.probe_states for k in live):
            return
        states = {0: self.quiet(), **{k: self.probe_states[k] for k in live}}
        snap = tuple(sorted(states.items()))
        if (any(st is None for st in states.values())
                or any(states[i][0][j] != states[j][1][i]
                       for i in states for j in states if i != j)):
            self.last_quiet = None
            return
        if snap != self.last_quiet:
            self.last_quiet = snap
            return
        self.deadlocked = True
        self.hub.spawn_local(self._declare_deadlock, (), {})

    def _declare_deadlock(self) -> None:
        """(a goroutine on node 0) End the run with a DeadlockError whose stack covers every
        node."""
        hub = self.hub
        try:
            text = self.stack()
        except ProcessLost:  # a node went away meanwhile: its loss is what the program sees
            self.deadlocked = False
            return

        def end() -> None:
            if hub.outcome is None:
                hub.outcome = Outcome("deadlock", error=DeadlockError(stack=text))

        hub.post(end)

    # ------------------------------------------------------------------ runtime-wide views

    def _node_op(self, op: str) -> Any:
        """(a goroutine) What this node says of itself: its program's goroutines, counted
        (``ngo``) or dumped (``stack``)."""
        from .. import _mp

        hub = self.hub
        if op == "ngo":
            return _mp.num_goroutine(hub) - self.infra - self.serving
        if op == "stack":
            return _node_dump(_mp.stack(hub), self.me)
        if op == "metrics":
            got = dict(_mp.metrics(hub))
            got["goroutines"] = self._node_op("ngo")
            return got
        raise ValueError(f"unknown node operation {op!r}")

    def metrics(self) -> dict[str, Any]:
        """(a goroutine on P0) Every node's counters added up (lists joined in node order),
        and each node's own under ``nodes``."""
        per = [self.call(k, 0, "metrics", None) if k != self.me else self._node_op("metrics")
               for k in range(self.n) if k not in self.lost]
        out: dict[str, Any] = {}
        for m in per:
            for key, v in m.items():
                have = out.get(key)
                if have is None:
                    out[key] = dict(v) if isinstance(v, dict) else (
                        list(v) if isinstance(v, list) else v)
                elif isinstance(v, dict):
                    for kind, x in v.items():
                        have[kind] = have.get(kind, 0) + x
                elif isinstance(v, list):
                    have.extend(v)
                elif isinstance(v, int | float) and not isinstance(v, bool):
                    out[key] = have + v
        out["nodes"] = per
        return out

    def num_goroutine(self) -> int:
        """(a goroutine on P0) The program's live goroutines on every node."""
        return sum(self.call(k, 0, "ngo", None) if k != self.me else self._node_op("ngo")
                   for k in range(self.n) if k not in self.lost)

    def stack(self) -> str:
        """(a goroutine on P0) The program's goroutines on every node, each naming its node."""
        parts = [self.call(k, 0, "stack", None) if k != self.me else self._node_op("stack")
                 for k in range(self.n) if k not in self.lost]
        return "\n\n".join(p for p in parts if p)

    # ------------------------------------------------------------------ objects

    def export(self, obj: Any) -> int:
        """The id other nodes name ``obj`` by (it stays alive here until the run ends)."""
        oid = self.export_ids.get(id(obj))
        if oid is None:
            oid = next(self.oids)
            self.exports[oid] = obj
            self.export_ids[id(obj)] = oid
        return oid

    def resolve(self, home: int, oid: int, cap: int) -> Any:
        """The object ``(home, oid)`` names, here: itself on its home, else a handle."""
        if home == self.me:
            return self.exports[oid]
        key = (home, oid)
        ch = self.proxies.get(key)
        if ch is None:
            ch = self.proxies[key] = RemoteChan.make(home, oid, cap, self, None)
        return ch

    def resolve_obj(self, home: int, oid: int, kind: int) -> Any:
        """The sync object or atomic ``(home, oid)`` names, here."""
        if home == self.me:
            return self.exports[oid]
        key = (home, oid)
        obj = self.proxies.get(key)
        if obj is None:
            obj = self.proxies[key] = make_obj(home, oid, kind, self, None)
        return obj

    def outbox_chan(self) -> Chan:
        """The channel other Ps of this node send their remote operations to."""
        if self.outbox is None:
            self.outbox = Chan(256)
            self.hub.spawn_local(self._forward_loop, (self.outbox,), {})
            self.infra += 1
        return self.outbox

    def _forward_loop(self, outbox: Chan) -> None:
        spawn = self.hub.spawn_local
        for item in outbox:
            if item[0] < 0:  # a select of another P offers its cases, or is over
                op, arg = item[2], item[3]
                if op == "offer":
                    self.offer_cases(*arg)
                else:
                    self.withdraw(*arg)
                continue
            self.serving += 1
            spawn(self._forward, item, {})

    def _forward(self, home: int, oid: int, op: str, arg: Any, reply: Chan) -> None:
        try:
            got = (True, self.call(home, oid, op, arg))
        except Exception as exc:
            got = (False, exc)
        finally:
            self.serving -= 1
        reply.send(got)

    # ------------------------------------------------------------------ sending

    def dumps(self, msg: Any) -> bytes:
        """``msg`` pickled for another node (hub thread: one pickler, reused)."""
        f, p = self.pbuf, self.pickler
        f.seek(0)
        f.truncate()
        p.clear_memo()
        try:
            p.dump(msg)
        except BaseException:
            self.pickler = _Pickler(f, self)  # a pickler that failed midway is not reused
            raise
        return f.getvalue()

    def send(self, node: int, msg: Any) -> None:
        """Queue ``msg`` for ``node`` (TypeError if it cannot travel), after the puts this
        node sent to other nodes have landed (the fence, module doc)."""
        data = self.dumps(msg)
        if node not in self.links:
            why = self.lost.get(node, "no link to it")
            raise _lost_error(node, why)
        self.sent[node] += 1
        unfenced = self.unfenced
        if self.held or (unfenced and (len(unfenced) > 1 or node not in unfenced)):
            self.held.append((node, data, msg[0] == "put"))
            self._flush_held()
            return
        self._write(node, data, msg[0] == "put")

    def _write(self, node: int, data: bytes, is_put: bool) -> None:
        link = self.links.get(node)
        if link is None or node in self.lost:
            return
        if len(data) >= BIG:
            link.put(HDR.pack(len(data)))
            link.put(data)
        else:
            link.put(HDR.pack(len(data)) + data)
        if is_put:
            self.puts[node] += 1
            self.unfenced.add(node)

    def _flush_held(self) -> None:
        """Write the held messages whose turn has come: each once no put to another node
        is unconfirmed; ask those nodes for a fence otherwise."""
        held = self.held
        while held:
            node = held[0][0]
            need = [h for h in self.unfenced if h != node]
            if need:
                for h in need:
                    if self.fence_asked[h] < self.puts[h]:
                        self.fence_asked[h] = self.puts[h]
                        self._put_probe(h, ("fence", self.puts[h]))
                return
            node, data, is_put = held.popleft()
            self._write(node, data, is_put)

    def _fenced(self, home: int, k: int) -> None:
        """``home`` confirms this node's first ``k`` puts to it landed."""
        self.fenced[home] = max(self.fenced[home], k)
        if self.fenced[home] >= self.puts[home]:
            self.unfenced.discard(home)
            self._flush_held()


def _node_dump(text: str, node: int) -> str:
    """A node's goroutine dump: each goroutine names the node, the runtime's own are left
    out (see ``Net.infra``)."""
    out = []
    for block in text.split("\n\n"):
        head, _, rest = block.partition("\n")
        name = head.rpartition(": ")[2]
        if name.startswith("csp_mp._cluster.") and not name.startswith("csp_mp._cluster.ship"):
            continue
        if name == "main" and node != 0:
            continue  # the node runtime's own main goroutine
        head = head.replace("] on P", f"] on node {node} P", 1)
        out.append(head + ("\n" + rest if rest else ""))
    return "\n\n".join(b for b in out if b.strip())


def _frame(data: bytes) -> bytes:
    return HDR.pack(len(data)) + data


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _thread(fn: Any, name: str, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, name=f"csp_mp-net-{name}", daemon=True)
    t.start()
    return t


def _keep_alive(stopped: threading.Event) -> None:
    from .._run import blocking

    blocking(stopped.wait)

