"""The objects homed on this node that other nodes use, and the requests between nodes.

An object homed here gets an id the first time it travels (``export``) and stays exported
while another node holds a handle on it (``refs.py`` counts them; ``unexport``); another node
names it by ``(home, id)`` and holds a handle on it (``resolve``). Every operation on a
handle is a request to the home (``call``): ``("req", rid, oid, op, arg)``, answered by
``("rep", rid, ok, value or exception)``. The home carries it out on the dispatcher when it
cannot block (``perform``); else a goroutine there does, parked as the remote goroutine's
stand-in (``_serve``), counted in ``net.serving``. Object id 0 names the node
itself (``views.py``'s node operations, and an offer's ``claim``, ``offers.py``).

Requests leave from P0, which holds the links: a goroutine of another P of this node sends its
request to P0's outbox channel with a reply channel of its own; a goroutine on P0 makes the call
for it (``_forward``).

A send into a buffered channel of another node (``sendb``) travels on credits (``credits.py``)
when it can, as a ``put`` with no answer; while one goroutine's blocking send asks the home for
credits, the other goroutines sending there wait for its answer rather than ask too.

Invariants:
- A request is carried out at its home exactly once, and its requester gets one reply; a
  requester waiting on a node that is lost gets ``ProcessLost`` instead (``fail``), once.
- ``pending`` holds a parked goroutine for every request sent and not answered, with its home.
- A blocking ``sendb`` of a node whose puts wait for room here waits behind them (``pushq``).
"""

from __future__ import annotations

import functools
import itertools
import weakref
from typing import Any

from .._chan import Chan, default, select
from .._chan.local import LocalState
from .._errors import ProcessLost
from .._hub import waits as W
from .exported import ExportedState
from .link import lost_error
from .remote import RemoteChan, make_obj

#: operations that never block: carried out on the dispatcher
_INLINE = frozenset(("trysend", "tryrecv", "close", "len", "closed", "stats"))


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


#: values that always travel: no pickling to find out
_PLAIN = frozenset((int, float, str, bytes, bool, type(None)))


def travel_check(net: Any, inner: Any) -> Any:
    """The send check of a channel of this node that other nodes hold: after the typed
    channel's own check (``inner``), a value that cannot be pickled for another node raises
    ``TypeError`` naming its type, and the channel is unchanged (SPEC: "A value that cannot be
    serialized raises TypeError at send")."""

    def check(v: Any) -> None:
        if inner is not None:
            inner(v)
        if type(v) in _PLAIN:
            return
        if v is net.wired:  # it came from another node: it travels (``wired``)
            net.wired = None
            return
        try:
            net.dumps(v)
        except Exception as exc:
            raise TypeError(f"cannot send a value of type {type(v).__qualname__} to another "
                            f"node: {exc}") from None
        finally:
            net.refs.unsent()  # only checked: what it exported meanwhile is not held

    check.travels = True  # type: ignore[attr-defined]
    return check


def send_arrived(net: Any, ch: Any, v: Any) -> bool:
    """Send ``v``, a value that came from another node, into ``ch``, a channel homed here, if
    that completes without blocking (``ClosedChannelError`` on a closed one). A channel of this
    P's own that takes any value does what select's first pass does for one send case; else
    select itself, with ``v`` marked as arrived (``net.wired``: the send check lets it pass)."""
    st = ch._st
    if ch._type is None and not st.shared:
        done, w = st.try_send(v)
        if done and w is not None:
            net.hub.ready(w.g, (v, True))
        return done
    net.wired = v
    try:
        return select((ch.send, v), default)[0] == 0
    finally:
        net.wired = None


def _cannot_travel(v: Any, home: int, exc: BaseException) -> BaseException:
    """What a send of ``v`` into a channel of node ``home`` raises when ``v`` cannot be
    pickled (``exc``: why); a lost node's error as it is."""
    if isinstance(exc, ProcessLost):
        return exc
    return TypeError(f"cannot send a value of type {type(v).__qualname__} to node {home}: "
                     f"{exc}")


def _reason(op: str) -> str:
    return W.CHAN_SEND if op in ("send", "sendb") else W.CHAN_RECV


class Homes:
    """The objects homed here, the handles on other nodes' objects, and the requests that
    carry out operations at homes (P0's hub only). ``net``: the node's ``Net``."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.me: int = net.me
        self.hub = net.hub
        self.exports: dict[int, Any] = {}
        self.export_ids: dict[int, int] = {}
        self.oids = itertools.count(1)
        self.proxies: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        #: request id -> (the goroutine waiting on its reply, the node it went to)
        self.pending: dict[int, tuple[Any, int]] = {}
        self.rids = itertools.count(1)
        #: blocking sends asking for credits: request id -> (home, oid)
        self.asks: dict[int, tuple[int, int]] = {}
        self.outbox: Chan | None = None

    # ------------------------------------------------------------------ objects

    def export(self, obj: Any) -> int:
        """The id other nodes name ``obj`` by (exported while they hold it, ``refs.py``). A
        channel of this P's own from now on checks at send that a value can travel
        (``travel_check``), as a channel shared between Ps does, and, buffered, counts the
        slots reserved for other nodes as taken (``exported.py``)."""
        refs = self.net.refs
        oid = self.export_ids.get(id(obj))
        if oid is None:
            oid = next(self.oids)
            self.exports[oid] = obj
            self.export_ids[id(obj)] = oid
            refs.exported(oid)
            st = getattr(obj, "_st", None)
            if isinstance(obj, Chan) and isinstance(st, LocalState):
                if not getattr(obj._check, "travels", False):
                    obj._check = travel_check(self.net, obj._check)
                recall = functools.partial(self.net.credits.recall, oid)
                if isinstance(st, ExportedState):  # exported before, under another id
                    st.recall = recall
                elif st.cap:  # its buffer's slots may be reserved for senders elsewhere
                    obj._st = ExportedState.exported(st, recall)
        refs.own.append(oid)
        return oid

    def unexport(self, oid: int) -> None:
        """No other node holds object ``oid`` any more (``refs.py``): forget its id."""
        self.net.credits.forget(oid)
        obj = self.exports.pop(oid, None)
        if obj is not None:
            self.export_ids.pop(id(obj), None)

    def resolve(self, home: int, oid: int, cap: int, counted: bool = True) -> Any:
        """The channel ``(home, oid)`` names, here: itself on its home, else a handle.
        ``counted``: it arrived over a link (not from another P of this node), and counts
        for the handle's release (``refs.py``)."""
        return self._resolve(home, oid, counted, RemoteChan.make, cap)

    def resolve_obj(self, home: int, oid: int, kind: int, counted: bool = True) -> Any:
        """The sync object or atomic ``(home, oid)`` names, here (``counted``: as in
        ``resolve``)."""
        return self._resolve(home, oid, counted, make_obj, kind)

    def _resolve(self, home: int, oid: int, counted: bool, make: Any, extra: int) -> Any:
        """The object ``(home, oid)``: itself on its home, else this node's handle on it,
        ``make(home, oid, extra, self, None)`` the first time."""
        if home == self.me:
            return self._own(oid)
        key = (home, oid)
        handle = self.proxies.get(key)
        new = handle is None
        if handle is None:
            handle = self.proxies[key] = make(home, oid, extra, self, None)
        if counted:
            self.net.refs.arrived(key, handle, new)
        return handle

    def _own(self, oid: int) -> Any:
        obj = self.exports.get(oid)
        if obj is None:
            raise RuntimeError(f"node {self.me} has no object {oid} (any more)")
        return obj

    def pin(self, key: tuple[int, int]) -> None:
        """The handle on ``key`` goes to another P of this node (``refs.py``)."""
        self.net.refs.pin(key)

    # ------------------------------------------------------------------ the requester's side

    def call(self, home: int, oid: int, op: str, arg: Any, reason: str | None = None) -> Any:
        """(a goroutine on P0) ``op`` on object ``oid`` of node ``home``; its result. While it
        waits, the goroutine shows ``reason`` (default: the channel operation's)."""
        if home == self.me:
            return perform(self.exports[oid], op, arg)
        net = self.net
        why = net.lost.get(home)
        if why is not None:
            raise lost_error(home, why)
        hub = self.hub
        if op == "sendb":
            credits = net.credits
            key = (home, oid)
            while True:
                if credits.take(home, oid):
                    try:
                        net.send(home, ("put", oid, arg))
                    except Exception as exc:
                        credits.add(home, oid, 1)  # the slot stays this node's
                        raise _cannot_travel(arg, home, exc) from None
                    return None
                asking = credits.asking.get(key)
                if asking is None:
                    break
                # another goroutine's blocking send asks for slots: its answer brings them
                asking.append(hub.current)
                hub.park(W.CHAN_SEND)
                why = net.lost.get(home)
                if why is not None:
                    raise lost_error(home, why)
            credits.asking[key] = []
        rid = next(self.rids)
        if op == "sendb":
            self.asks[rid] = key
        try:
            try:
                net.send(home, ("req", rid, oid, op, arg))
            except Exception as exc:
                if op not in ("send", "sendb"):
                    raise
                raise _cannot_travel(arg, home, exc) from None
            self.pending[rid] = (hub.current, home)
            ok, value = hub.park(reason or _reason(op))
        finally:
            if op == "sendb" and self.asks.pop(rid, None) is not None:
                for g in credits.asking.pop(key, ()):  # not answered: they ask themselves
                    hub.ready(g, None, next_=False)
        if ok:
            return None if op == "sendb" else value
        raise value

    def answered(self, rid: int, ok: bool, value: Any) -> None:
        """(dispatcher) The reply to request ``rid``: its goroutine resumes."""
        got = self.pending.pop(rid, None)
        if got is not None:
            self.hub.ready(got[0], (ok, value), next_=False)
        key = self.asks.pop(rid, None)
        if key is not None:  # a blocking send's answer: the slots granted with it, for all
            credits = self.net.credits
            if ok:
                credits.add(key[0], key[1], value)
            for g in credits.asking.pop(key, ()):
                self.hub.ready(g, None, next_=False)

    def fail(self, node: int, err: BaseException) -> None:
        """Node ``node`` is lost: every goroutine waiting on a reply from it gets ``err``."""
        for rid, (g, home) in list(self.pending.items()):
            if home == node:
                del self.pending[rid]
                self.hub.ready(g, (False, err), next_=False)

    def outbox_chan(self) -> Chan:
        """The channel other Ps of this node send their remote operations to."""
        if self.outbox is None:
            self.outbox = Chan(256)
            self.hub.spawn_local(self._forward_loop, (self.outbox,), {})
            self.net.infra += 1
        return self.outbox

    def _forward_loop(self, outbox: Chan) -> None:
        spawn = self.hub.spawn_local
        net = self.net
        for item in outbox:
            if item[0] < 0:  # a select of another P offers its cases, or is over
                op, arg = item[2], item[3]
                if op == "offer":
                    net.offers.offer(*arg)
                else:
                    net.offers.withdraw(*arg)
                continue
            net.serving += 1
            spawn(self._forward, item, {})

    def _forward(self, home: int, oid: int, op: str, arg: Any, reply: Chan) -> None:
        try:
            got = (True, self.call(home, oid, op, arg))
        except Exception as exc:
            got = (False, exc)
        finally:
            self.net.serving -= 1
        reply.send(got)

    # ------------------------------------------------------------------ the home's side

    def request(self, node: int, rid: int, oid: int, op: str, arg: Any) -> None:
        """(dispatcher) Carry out request ``rid`` of ``node``: now if it cannot block, else
        in a goroutine standing in for its requester."""
        net = self.net
        obj: Any = self.exports.get(oid) if oid else net  # 0: the node itself
        if obj is None:
            self.reply(node, rid, False, RuntimeError(f"node {self.me} has no object {oid}"))
            return
        try:
            if obj is net:
                if op == "claim":
                    self.reply(node, rid, True, net.offers.claim(*arg))
                    return
            elif op in _INLINE:
                offers = net.offers
                if op in ("trysend", "tryrecv"):
                    me = arg[1] if op == "trysend" else arg
                    if me is not None:  # a blocking select tries again: a later change pokes
                        offers.tried(me[0], me[1], oid)
                if op == "trysend":
                    net.wired = arg[0]
                got = perform(obj, op, arg)
                net.wired = None
                if op in ("trysend", "tryrecv") and not (got if op == "trysend" else got[0]) \
                        and offers.offers.get(oid):
                    net.serving += 1  # another node's select may offer the other side
                    self.hub.spawn_local(offers.match, (node, rid, oid, op, arg), {})
                    return
                self.reply(node, rid, True, got)
                if offers.offers.get(oid):
                    offers.check(oid)
                return
            credits = net.credits
            if op == "sendb" and (oid, node) in credits.pushq:  # behind that node's puts
                credits.pushq[oid, node].append((arg, rid))
                return
            if op in ("send", "sendb"):
                if send_arrived(net, obj, arg):
                    self.reply(node, rid, True,
                               credits.grant(node, oid, obj, True) if op == "sendb" else None)
                    return
            elif op == "recv":
                i, got = select(obj.recv_ok, default)
                if i == 0:
                    self.reply(node, rid, True, got)
                    return
        except Exception as exc:
            self.reply(node, rid, False, exc)
            return
        net.serving += 1
        hub = self.hub
        hub.spawn_local(self._serve, (node, rid, obj, op, arg), {})
        if oid and net.offers.offers.get(oid):  # once the stand-in parked: a select's case
            hub.spawn_local(net.offers.check, (oid,), {})  # may complete with it now

    def _serve(self, node: int, rid: int, obj: Any, op: str, arg: Any) -> None:
        """(a goroutine) Carry out a blocking operation for a goroutine of ``node``."""
        net = self.net
        try:
            if op in ("send", "sendb"):
                net.wired = arg
            got = perform(obj, op, arg) if obj is not net else net.views.node_op(op)
            net.wired = None
            if op == "sendb":
                oid = self.export_ids.get(id(obj))
                got = net.credits.grant(node, oid, obj, True) if oid is not None else 0
        except Exception as exc:
            self.reply(node, rid, False, exc)
            return
        finally:
            net.serving -= 1
        self.reply(node, rid, True, got)

    def reply(self, node: int, rid: int, ok: bool, value: Any) -> None:
        """Answer request ``rid`` of ``node`` (unless that node is lost)."""
        net = self.net
        if node in net.lost:
            return
        try:
            net.send(node, ("rep", rid, ok, value))
        except Exception as exc:  # the value cannot travel: the requester learns why
            net.send(node, ("rep", rid, False, TypeError(f"cannot send the result: {exc}")))
