"""Send credits and the fence: a stream into another node's buffered channel without a round
trip per message, and nothing another node learns from this one overtaking it.

Send credits: a send into another node's buffered channel (op ``sendb``) asks its home for
credits with its first, blocking, request; the answer carries the slots granted (at most the
room in the buffer neither used nor reserved for another node, none while a sender of the home
waits for room, at most ``window``, and never more than half the buffer reserved in all: the
home's own senders keep the other half, for a reserved slot counts as taken). While a node
holds credits for a channel its sends are ``put`` messages and return at once; the home lands
them in the order they came, and tops the credits up (``("credit", oid, k)``) as puts land
while there is room, in batches of at least half a window. A node out of credits sends the
blocking way, which waits at the home for room.
A reserved slot counts as taken at the home (``exported.py``): a sender of the home finding
room only in reserved slots waits, and the home asks the nodes holding them for the unused ones,
``("recall", oid)``, answered by ``("unused", oid, k)`` after every put sent on them (so a
buffered channel used as a semaphore admits no more holders than its capacity, wherever they
run). A put finding no room (the channel shared between the home's Ps since: only a local one
keeps reservations) waits at the home in a queue of its sender's node, ahead of that node's
later sends. A put finding the channel closed is answered ``("putfail", oid, exc)``: the
sender's run panics, as a send on a closed channel does.

The fence: a put returns before its value lands. While puts of this node to a home have not
been confirmed landed (``unfenced``), a message to any other node is held back, with every later
message (``held``), until a ``("fence", k)`` round trip to that home confirms them (``("fenced",
k)``: this node's first k puts there landed). Whatever another node learns from this one thus
comes after the values this node sent (a close caused that way finds them in the buffer); a
stream to one home pays nothing.

Invariants:
- The ``reserved`` count of channel ``oid``'s state is the sum of ``reserved[oid, node]`` over
  nodes (hub thread only, like everything here), while the state is an ``ExportedState``.
- ``(oid, node)`` is in ``recalling`` while a recall to ``node`` is unanswered.
- A node's puts into one channel land in the order they were sent, each once; a put waiting
  in ``pushq`` is ahead of every later send of its node into that channel.
- ``held`` is written in order, each message once no put to another node is unconfirmed.
- ``fenced[h] <= puts[h]``; ``h`` is in ``unfenced`` exactly while ``fenced[h] < puts[h]``
  (a lost home leaves it: its puts are lost with it).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .._errors import ClosedChannelError
from .exported import ExportedState
from .homes import send_arrived


class Credits:
    """Both sides of send credits and the fence, for one node (P0's hub only).
    ``net``: the node's ``Net``."""

    def __init__(self, net: Any) -> None:
        n = net.n
        self.net = net
        #: (sender side) the slots this node holds in other nodes' channels, (home, oid) -> k;
        #: the channels a blocking send asks slots of, (home, oid) -> the goroutines waiting
        #: for its answer (``Homes.call``)
        self.credit: dict[tuple[int, int], int] = {}
        self.asking: dict[tuple[int, int], list] = {}
        #: (home side) the slots reserved here for other nodes, (oid, node) -> k, and those
        #: asked back (``recall``); puts waiting here for room, (oid, node) -> deque of
        #: (value, request id or 0); the fence each node waits for meanwhile, node -> k
        self.reserved: dict[tuple[int, int], int] = {}
        self.recalling: set[tuple[int, int]] = set()
        self.pushq: dict[tuple[int, int], deque] = {}
        self.fence_wait: dict[int, int] = {}
        #: (the fence) puts written to each node, how many of them each confirmed landed and
        #: how many a fence asked about; the homes with puts not confirmed; the messages held
        #: back meanwhile, (node, frame, is a put, is batched), in order
        self.puts = [0] * n
        self.fenced = [0] * n
        self.fence_asked = [0] * n
        self.unfenced: set[int] = set()
        self.held: deque = deque()

    # ------------------------------------------------------------------ the sender's side

    def take(self, home: int, oid: int) -> bool:
        """Use one of this node's credits for channel ``oid`` of ``home``, if it holds any."""
        key = (home, oid)
        k = self.credit.get(key, 0)
        if k > 0:
            self.credit[key] = k - 1
            return True
        return False

    def add(self, home: int, oid: int, k: int) -> None:
        """``home`` granted this node ``k`` more slots of its channel ``oid``."""
        key = (home, oid)
        self.credit[key] = self.credit.get(key, 0) + k

    def revoke(self, home: int, oid: int) -> None:
        """A put into channel ``oid`` of ``home`` found it closed: no more credits there."""
        self.credit.pop((home, oid), None)

    def give_back(self, home: int, oid: int) -> None:
        """(dispatcher) ``home`` asks for the slots of its channel ``oid`` this node has not
        used: they go back, after every put sent on the others."""
        self.net.send(home, ("unused", oid, self.credit.pop((home, oid), 0)))

    # ------------------------------------------------------------------ the home's side

    def window(self, cap: int) -> int:
        """The most slots of a channel of capacity ``cap`` one node may hold."""
        return max(1, cap // max(1, self.net.n - 1))

    def grant(self, node: int, oid: int, ch: Any, now: bool) -> int:
        """(hub thread) Reserve slots of channel ``oid`` for ``node``: as many as its window
        lacks, within the room not reserved already; ``now``: for the answer to a blocking
        send (else only a batch of at least half a window is worth a message). How many."""
        st = ch._st
        if type(st) is not ExportedState:
            return 0  # shared between the home's Ps: its senders there cannot be held off
        key = (oid, node)
        held = self.reserved.get(key, 0)
        window = self.window(ch.cap)
        if not now and held * 2 > window:
            return 0
        k = min(window - held, st.room(), ch.cap // 2 - st.reserved)  # half for the home
        if k <= 0 or (not now and k * 2 < window):
            return 0
        self.reserved[key] = held + k
        st.reserve(k)
        return k

    def _unreserve(self, oid: int, node: int, k: int) -> None:
        """``k`` slots of channel ``oid`` reserved for ``node`` are free again."""
        key = (oid, node)
        left = self.reserved.get(key, 0) - k
        if left > 0:
            self.reserved[key] = left
        else:
            self.reserved.pop(key, None)
        ch = self.net.homes.exports.get(oid)
        if ch is not None and type(ch._st) is ExportedState:
            ch._st.release(k, self.net.hub)

    def _landed(self, node: int, oid: int) -> None:
        """A put of ``node`` into channel ``oid`` used its slot."""
        key = (oid, node)
        held = self.reserved.get(key, 0)
        if held > 0:
            self.reserved[key] = held - 1
            ch = self.net.homes.exports.get(oid)
            if ch is not None and type(ch._st) is ExportedState:
                ch._st.landed()

    def recall(self, oid: int) -> None:
        """A sender of the home finds room in channel ``oid`` only in reserved slots: ask the
        nodes holding them for those they have not used."""
        net = self.net
        for (o, node), k in list(self.reserved.items()):
            if o == oid and k > 0 and (oid, node) not in self.recalling \
                    and node not in net.lost:
                self.recalling.add((oid, node))
                net.send(node, ("recall", oid))

    def forget(self, oid: int) -> None:
        """Channel ``oid`` is no longer exported (no other node holds it): no slots of it are
        reserved any more."""
        for key in [key for key in self.reserved if key[0] == oid]:
            self._unreserve(oid, key[1], self.reserved[key])
        self.recalling = {key for key in self.recalling if key[0] != oid}

    def unused(self, node: int, oid: int, k: int) -> None:
        """(dispatcher) ``node`` gives back ``k`` unused slots of channel ``oid``."""
        self.recalling.discard((oid, node))
        self._unreserve(oid, node, k)

    def land(self, node: int, oid: int, value: Any) -> None:
        """(dispatcher) A send of ``node`` on a credit: into the buffer now, else behind that
        node's earlier puts, by a goroutine standing in for its sender."""
        net = self.net
        ch = net.homes.exports[oid]
        self._landed(node, oid)
        key = (oid, node)
        q = self.pushq.get(key)
        if q is None:
            try:
                if send_arrived(net, ch, value):
                    k = self.grant(node, oid, ch, False)
                    if k:
                        net.send(node, ("credit", oid, k))
                    if net.offers.offers.get(oid):
                        net.offers.check(oid)  # a select's receive case may complete now
                    return
            except ClosedChannelError as exc:
                self._put_failed(node, oid, exc)
                return
            q = self.pushq[key] = deque()
            net.serving += 1
            net.hub.spawn_local(self._push, (node, oid, ch, q), {})
        q.append((value, 0))

    def _push(self, node: int, oid: int, ch: Any, q: deque) -> None:
        """(a goroutine) Land ``node``'s queued sends into channel ``oid`` in order, waiting
        for room like the senders it stands in for."""
        net = self.net
        try:
            while q:
                value, rid = q[0]
                try:
                    net.wired = value
                    ch.send(value)
                    net.wired = None
                except ClosedChannelError as exc:
                    q.popleft()
                    if rid:
                        net.homes.reply(node, rid, False, exc)
                    else:
                        self._put_failed(node, oid, exc)
                    continue
                q.popleft()
                if rid:
                    net.homes.reply(node, rid, True, self.grant(node, oid, ch, True))
        finally:
            del self.pushq[oid, node]
            net.serving -= 1
            k = self.fence_wait.get(node)
            if k is not None and not any(key[1] == node for key in self.pushq):
                del self.fence_wait[node]
                net.put_probe(node, ("fenced", k))

    def _put_failed(self, node: int, oid: int, exc: BaseException) -> None:
        """A put found channel ``oid`` closed: its sender's node panics, as a send would."""
        self._unreserve(oid, node, self.reserved.get((oid, node), 0))
        if node not in self.net.lost:
            self.net.send(node, ("putfail", oid, exc))

    def fence(self, node: int, k: int) -> None:
        """(dispatcher) ``node`` asks to know once its first ``k`` puts here landed."""
        if any(key[1] == node for key in self.pushq):
            self.fence_wait[node] = k  # answered once they landed (_push)
        else:
            self.net.put_probe(node, ("fenced", k))

    def node_lost(self, node: int) -> None:
        """``node`` is lost: the slots reserved for it are free, its puts here are gone with
        it, and this node's unconfirmed puts to it no longer hold anything back."""
        for oid, k in list(self.reserved):
            if k == node:
                self._unreserve(oid, node, self.reserved[oid, k])
        self.recalling = {key for key in self.recalling if key[1] != node}
        if node in self.unfenced:  # its puts are lost with it (ProcessLost says so)
            self.unfenced.discard(node)
            self.flush_held()

    # ------------------------------------------------------------------ the fence

    def hold(self, node: int, data: bytes, is_put: bool, batched: bool) -> None:
        """Hold back a message to ``node`` until its turn (``flush_held``)."""
        self.held.append((node, data, is_put, batched))
        self.flush_held()

    def wrote_put(self, node: int) -> None:
        """A put to ``node`` was written: not confirmed yet."""
        self.puts[node] += 1
        self.unfenced.add(node)

    def flush_held(self) -> None:
        """Write the held messages whose turn has come: each once no put to another node
        is unconfirmed; ask those nodes for a fence otherwise."""
        held = self.held
        net = self.net
        while held:
            node = held[0][0]
            need = [h for h in self.unfenced if h != node]
            if need:
                for h in need:
                    if self.fence_asked[h] < self.puts[h]:
                        self.fence_asked[h] = self.puts[h]
                        net.put_probe(h, ("fence", self.puts[h]))
                return
            node, data, is_put, batched = held.popleft()
            net.write(node, data, is_put, batched)

    def confirmed(self, home: int, k: int) -> None:
        """``home`` confirms this node's first ``k`` puts to it landed."""
        self.fenced[home] = max(self.fenced[home], k)
        if self.fenced[home] >= self.puts[home]:
            self.unfenced.discard(home)
            self.flush_held()
