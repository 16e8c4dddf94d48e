"""Channels, sync objects and atomics homed on another node, and ``select`` over such
channels.

A ``RemoteChan`` is a ``Chan`` whose every operation is a request to its home node, carried
out there (``homes.perform``). On the node's P0 the request goes out on the node's links
(``Homes.call``); on its other Ps it goes to P0 through the node's outbox channel, with a reply
channel of its own.

A ``Mutex``, ``RWMutex``, ``WaitGroup``, ``Int64``, ``Bool`` or ``Sema`` of another node is an
instance of a subclass made here (``proxy_class``) whose every method is carried out at the home
by a goroutine there, in the calling goroutine's stead (``homes.perform``, op ``call``). An object
of a subclass of one of them (an atomic or a semaphore already shared between the Ps of its
node) is homed as its base (``wire.Kinds``). Objects built of these (``Once``, ``Cond``, contexts)
travel as their parts: each part keeps its home. A context's deadline travels as the time left
(``reduce_context``), as gRPC sends a deadline, since nodes' monotonic clocks differ.

``select`` with a case on a remote channel (``select_remote``) tries every case once, in random
order, each one committing at its home or not at all (a ``try`` request: one home at a time, so
at most one case commits). A select whose only case is remote is the plain blocking operation.

While no case can complete, a blocking select offers its remote cases at their homes under a
token (an unbuffered channel registered with its node's P0, directly on P0, through the node's
outbox on another P) and waits on the token, a poke channel and its local cases, with no
timer. A home pokes the select once one of its cases there could complete (``offers.py``), and
the select tries its cases again. Select meets select: two selects waiting on one unbuffered
channel homed on a third node each only try, so neither would find the other parked there; the
home pokes the one first in token order, whose try takes the other's offer if it can claim its
token: the token's node sends the case (and the value of a receive case) on the token's channel
without blocking, which commits only while the select waits there, not while it tries its cases
or once a local case took it; so a select completes exactly one case. The select withdraws its
token and offers when it returns.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from .._chan import Chan, select
from .._chan.chan import _RECV, _SEND
from .._hub import waits as W
from .._proc import proc


class RemoteState:
    """What a ``Chan`` keeps of a channel homed on another node (``select`` reads ``shared``:
    a select with such a case goes to ``select_remote``)."""

    __slots__ = ("cap",)
    shared = True

    def __init__(self, cap: int) -> None:
        self.cap = cap


class RemoteChan(Chan):
    """A handle on a channel homed on another node (``_net``: the node's ``Homes`` on its
    P0, which makes the requests; else None, and ``_outbox`` leads to P0)."""

    __slots__ = ("_home", "_oid", "_net", "_outbox")
    _home: int
    _oid: int
    _net: Any
    _outbox: Chan | None

    @classmethod
    def make(cls, home: int, oid: int, cap: int, net: Any, outbox: Chan | None) -> RemoteChan:
        ch = cls.__new__(cls)
        ch._st = RemoteState(cap)  # type: ignore[assignment]
        ch._type = None
        ch._check = None
        ch._home = home
        ch._oid = oid
        ch._net = net
        ch._outbox = outbox
        return ch

    def _call(self, op: str, arg: Any = None) -> Any:
        net = self._net
        if net is not None:
            return net.call(self._home, self._oid, op, arg)
        return _through_p0(self._outbox, self._home, self._oid, op, arg,
                           W.CHAN_SEND if op in ("send", "sendb") else W.CHAN_RECV)

    def send(self, v: Any) -> None:
        self._call("sendb" if self._st.cap else "send", v)  # sendb: on credits (credits.py)

    def recv_ok(self) -> tuple[Any, bool]:
        return self._call("recv")

    def recv(self) -> Any:
        return self._call("recv")[0]

    def close(self) -> None:
        self._call("close")

    def __len__(self) -> int:
        return self._call("len")

    @property
    def closed(self) -> bool:
        return bool(self._call("closed"))

    def stats(self) -> Any:
        from .._chan.chan import ChanStats

        return ChanStats(*self._call("stats"))

    @property
    def home(self) -> int:
        """The node this channel lives on."""
        return self._home

    def __repr__(self) -> str:
        return f"<csp_mp.Chan cap={self.cap} on node {self._home} at {id(self):#x}>"

    def __reduce__(self) -> tuple:
        net = self._net
        outbox = self._outbox
        if net is not None:  # to another P of this node: it cannot tell when it drops it
            net.pin((self._home, self._oid))
            outbox = net.outbox_chan()
        return (_rebuild, (self._home, self._oid, self._st.cap, outbox))


def _call(self: Any, op: str, arg: Any = None, reason: str | None = None) -> Any:
    """An operation on a handle's object, carried out at its home: on P0 by the node's links,
    elsewhere through P0 (the node's outbox). ``reason``: what the goroutine waits for."""
    net = self._net
    if net is not None:
        return net.call(self._home, self._oid, op, arg, reason)
    return _through_p0(self._outbox, self._home, self._oid, op, arg, reason or W.CHAN_RECV)


def _through_p0(outbox: Any, home: int, oid: int, op: str, arg: Any, reason: str) -> Any:
    """(a goroutine on a P other than its node's P0) ``op`` on object ``oid`` of node
    ``home``, sent to P0 through the node's outbox; while it waits for the reply, the goroutine
    shows ``reason`` (what it waits for at the home), as on P0."""
    from .._hub import current_hub

    reply: Chan = Chan(1)
    g = current_hub().current  # None outside a goroutine: the receive says why it cannot wait
    if g is not None:
        g.wait_as = reason
    try:
        outbox.send((home, oid, op, arg, reply))
        ok, value = reply.recv()  # type: ignore[misc]
    finally:
        if g is not None:
            g.wait_as = ""
    if ok:
        return value
    raise value


def homed_classes() -> tuple[type, ...]:
    """The classes besides ``Chan`` whose objects other nodes use as handles (the index of a
    class here names it on the wire)."""
    from .. import _atomic
    from .._sync import primitives as S
    from .._sync.sema import Sema

    return (S.Mutex, S.RWMutex, S.WaitGroup, _atomic.Int64, _atomic.Bool, Sema)


def reduce_context(ctx: Any) -> tuple:
    """A cancellable context as it travels to another node: its parts, and its deadline as the
    seconds left (``_context_arrived`` makes it a deadline of the receiving node's clock)."""
    parent, done, code, deadline = ctx.__getstate__()
    left = None if deadline is None else deadline - time.monotonic()
    return (_context_arrived, (type(ctx), parent, done, code, left))


def _context_arrived(cls: Any, parent: Any, done: Chan, code: Any, left: float | None) -> Any:
    ctx = cls.__new__(cls)
    ctx.__setstate__((parent, done, code, None if left is None else time.monotonic() + left))
    return ctx


#: what a goroutine waiting on a method of another node's object waits for, as on one machine
_WAITS = ((("Mutex", "lock"), W.MUTEX_LOCK), (("Mutex", "__enter__"), W.MUTEX_LOCK),
          (("RWMutex", "lock"), W.RWMUTEX_LOCK), (("RWMutex", "__enter__"), W.RWMUTEX_LOCK),
          (("RWMutex", "rlock"), W.RWMUTEX_RLOCK), (("WaitGroup", "wait"), W.WAITGROUP_WAIT),
          (("Sema", "acquire"), W.SEMACQUIRE))


def _forwarder(base: str, name: str) -> Any:
    waits = dict(_WAITS).get((base, name))

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        reason = args[0] if name == "acquire" and args else waits  # Cond.wait names its own
        return self._call("call", (name, args, kwargs), reason)

    method.__name__ = name
    return method


def _exit(self: Any, *exc: object) -> None:
    self._call("call", ("__exit__", (None, None, None), {}))  # the exception stays here


def _wg_go(self: Any, fn: Any, *args: Any, **kwargs: Any) -> None:
    from .._run import go

    self.add(1)
    go(_wg_body, self, fn, args, kwargs)


def _wg_body(wg: Any, fn: Any, args: tuple, kwargs: dict) -> None:
    try:
        fn(*args, **kwargs)
    finally:
        wg.done()


def _obj_reduce(self: Any) -> tuple:
    net = self._net
    outbox = self._outbox
    if net is not None:  # to another P of this node: it cannot tell when it drops it
        net.pin((self._home, self._oid))
        outbox = net.outbox_chan()
    return (_rebuild_obj, (self._home, self._oid, self._kind, outbox))


def _obj_repr(self: Any) -> str:
    return f"<csp_mp.{type(self).__bases__[0].__name__} on node {self._home} at {id(self):#x}>"


@functools.cache
def proxy_class(kind: int) -> type:
    """The handle class for ``homed_classes()[kind]`` (made once per process)."""
    base = homed_classes()[kind]
    slots: tuple[str, ...] = ("_home", "_oid", "_net", "_outbox", "_kind")
    if not hasattr(base, "__weakref__"):
        slots += ("__weakref__",)  # the node's cache of handles holds them weakly
    ns: dict[str, Any] = {"__slots__": slots,
                          "_call": _call, "__reduce__": _obj_reduce, "__repr__": _obj_repr,
                          "__module__": __name__}
    for name, value in vars(base).items():
        if callable(value) and (not name.startswith("_") or name == "__enter__"):
            ns[name] = _forwarder(base.__name__, name)
    if "__exit__" in vars(base):
        ns["__exit__"] = _exit
    if base.__name__ == "WaitGroup":
        ns["go"] = _wg_go
    return type(f"Remote{base.__name__}", (base,), ns)


def make_obj(home: int, oid: int, kind: int, net: Any, outbox: Chan | None) -> Any:
    """A handle on object ``oid`` of node ``home``, of kind ``kind``."""
    cls = proxy_class(kind)
    obj: Any = object.__new__(cls)
    obj._home, obj._oid, obj._kind, obj._net, obj._outbox = home, oid, kind, net, outbox
    return obj


def _rebuild_obj(home: int, oid: int, kind: int, outbox: Chan) -> Any:
    """A sync object or atomic of node ``home`` arriving at another P of a node."""
    net = proc.cluster
    if net is not None:
        return net.homes.resolve_obj(home, oid, kind, counted=False)
    return make_obj(home, oid, kind, None, outbox)


def _rebuild(home: int, oid: int, cap: int, outbox: Chan) -> Chan:
    """A channel of node ``home`` arriving at another P of a node."""
    net = proc.cluster
    if net is not None:
        return net.homes.resolve(home, oid, cap, counted=False)
    proc.select_remote = select_remote
    return RemoteChan.make(home, oid, cap, None, outbox)


def select_remote(hub: Any, parsed: list, live: list[int], dflt: int) -> tuple[int, Any]:
    """``select`` with at least one case on a channel of another node (see the module doc)."""
    from .._chan import default

    if len(live) == 1 and dflt < 0:
        kind, ch, x = parsed[live[0]]
        if kind == _SEND:
            ch.send(x)
            return live[0], None
        got = ch.recv_ok()
        return live[0], (got if kind != _RECV else got[0])
    local = [i for i in live if not isinstance(parsed[i][1], RemoteChan)]
    cases = {i: _case(parsed[i]) for i in local}
    remote = [i for i in live if i not in cases]
    waits = [cases[i] for i in local]
    # a blocking select offers its remote cases at their homes under a token (module doc)
    net = proc.cluster
    if net is not None and net.hub is not hub:
        net = None
    outbox: Any = None if net is not None else parsed[remote[0]][1]._outbox
    token: Chan | None = None
    poke: Any = None
    tid: Any = None
    me: Any = None
    if dflt < 0:
        token = Chan()
        poke = Chan(1)
        # unique on its node: no two live tokens share an id, nor one id two moments
        tid = (os.getpid(), id(token), time.monotonic_ns())
        me = (proc.node, tid)
    offered: list[tuple[int, int]] = []
    rng = hub.select_rng
    try:
        while True:
            order = list(live)
            rng.shuffle(order)
            for i in order:
                kind, ch, x = parsed[i]
                if i in cases:
                    k, got = select(cases[i], default)
                    if k == 0:
                        return i, got
                elif kind == _SEND:
                    if ch._call("trysend", (x, me)):
                        return i, None
                else:
                    done, got = ch._call("tryrecv", me)
                    if done:
                        return i, (got if kind != _RECV else got[0])
            if token is None:
                return dflt, None
            if not offered:
                offers = []
                for i in remote:
                    kind, ch, x = parsed[i]
                    offers.append((ch._home, ch._oid, i, kind == _SEND, x))
                    offered.append((ch._home, ch._oid))
                if net is not None:
                    net.offers.offer(tid, token, poke, offers)
                else:
                    outbox.send((-1, 0, "offer", (tid, token, poke, offers), None))
            k, got = select(token.recv, poke.recv, *waits)
            if k == 0:
                return _taken(parsed, *got)
            if k >= 2:
                return local[k - 2], got
            # poked: a home saw one of the remote cases become possible; try them again
    finally:
        if offered:
            if net is not None:
                net.offers.withdraw(tid, offered)
            else:
                outbox.send((-1, 0, "withdraw", (tid, offered), None))


def _taken(parsed: list, case: int, payload: Any) -> tuple[int, Any]:
    """What a select returns for the case another node's home completed."""
    kind = parsed[case][0]
    if kind == _SEND:
        return case, None
    return case, (payload if kind != _RECV else payload[0])


def _case(entry: tuple) -> Any:
    kind, ch, x = entry
    if kind == _SEND:
        return (ch.send, x)
    return ch.recv if kind == _RECV else ch.recv_ok
