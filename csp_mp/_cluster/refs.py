"""Which nodes hold a handle on an object homed here, so that an object no other node holds
any more stops being exported (a channel made per request and sent to another node costs the
home nothing once the handle is gone).

Counting, as in distributed reference counting with borrowers: the home counts the references
to each exported object it pickled into messages to each node (``holders``); a node counts those
that arrived into each of its handles (``cell``: one per handle object, so a handle made anew
for a later arrival counts apart). When a handle dies (its last reference dropped, on the
node's P0) and no new handle on the object takes its references over within ``RELEASE_AFTER``,
the node sends ``("release", oid, count, unused credits)``, and the home subtracts the count:
a node whose count reaches 0 holds nothing, and once no node holds anything the
object leaves ``exports`` (the home's own goroutines keep using it as before; sent again, it
gets a new id). A node passing a handle on to a third node tells the home first-hand,
``("lend", oid, node)``, which counts it as if the home had sent it; a release overtaking that
lend leaves a negative count until the lend comes, so the object is kept meanwhile. A handle
given to another P of the node (through the arena) is pinned: P0 never releases it, for it
cannot see when that P drops its own.

Invariants:
- ``holders[oid][node]`` = references pickled to ``node`` (by the home or lent) - those
  ``node`` released; an entry is dropped at 0; ``oid`` is exported exactly while ``holders[oid]``
  has an entry, or while it is ``fresh`` (exported by the message being pickled).
- A handle's cell counts the references unpickled into it; they are released once, after it
  died, unless a newer handle on the same object took them over.
- Hub thread only (P0), but the death of a handle, which posts its release to the hub.
"""

from __future__ import annotations

import functools
import time
import weakref
from typing import Any

#: seconds a dropped handle's references wait before their release: a reference to the same
#: object arriving meanwhile takes them over, keeping the object's id at its home and this
#: node's credits for it (a goroutine batch after batch naming the same channel, a reply
#: channel used again)
RELEASE_AFTER = 0.5


class Refs:
    """This node's side of the counting (module doc): the home's ``holders`` and the handles'
    cells. ``net``: the node's ``Net``."""

    def __init__(self, net: Any) -> None:
        self.net = net
        #: (home side) oid -> {node: references it holds}
        self.holders: dict[int, dict[int, int]] = {}
        #: (home side) oids exported while pickling the current message, not counted yet
        self.fresh: list[int] = []
        #: what the current message pickled: ids of objects homed here, handles (home, oid)
        self.own: list[int] = []
        self.lent: list[tuple[int, int]] = []
        #: (holder side) each handle's count of references that arrived into it, by what it
        #: names: (home, oid) -> the cell of its current handle; the references of handles
        #: dropped lately, (home, oid) -> (when to release them, how many); handles given to
        #: other Ps of this node, never released
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.dying: dict[tuple[int, int], tuple[float, int]] = {}
        self.pinned: set[tuple[int, int]] = set()
        #: releases sent (``runtime.metrics()``)
        self.released = 0

    # ------------------------------------------------------------------ pickling a message

    def start(self) -> None:
        """A message is about to be pickled."""
        if self.own or self.lent or self.fresh:
            self.own.clear()
            self.lent.clear()
            self.fresh.clear()

    def exported(self, oid: int) -> None:
        """The pickler exported a new object, ``oid``."""
        self.holders[oid] = {}
        self.fresh.append(oid)

    def sent(self, node: int) -> None:
        """The message just pickled goes to ``node``: count what it carries."""
        own, lent = list(self.own), list(self.lent)
        self.own.clear()
        self.lent.clear()
        self.fresh.clear()
        net = self.net
        for oid in own:
            self._count(oid, node, 1)
        for home, oid in lent:
            if home != node and home not in net.lost:
                net.send(home, ("lend", oid, node))

    def unsent(self) -> None:
        """The message just pickled goes nowhere (it failed, or only a check pickled it): the
        objects it exported and nobody holds stop being exported."""
        fresh = list(self.fresh)
        self.start()
        for oid in fresh:
            self._maybe_drop(oid)

    # ------------------------------------------------------------------ the holder's side

    def arrived(self, key: tuple[int, int], handle: Any, new: bool) -> None:
        """A reference to ``key`` arrived over a link into ``handle`` (``new``: made for it;
        it takes over the references of a handle on ``key`` dropped lately)."""
        cell = None if new else self.cells.get(key)
        if cell is None:
            got = self.dying.pop(key, None)
            cell = self.cells[key] = [got[1] if got is not None else 0]
            weakref.finalize(handle, self._died, key, cell).atexit = False
        cell[0] += 1

    def pin(self, key: tuple[int, int]) -> None:
        """The handle on ``key`` goes to another P of this node: never release it."""
        self.pinned.add(key)

    def _died(self, key: tuple[int, int], cell: list[int]) -> None:
        """(any thread) The handle on ``key`` is gone: release what arrived into it."""
        if key in self.pinned or not cell[0] or self.net.stopping:
            return
        try:
            self.net.hub.post(functools.partial(self._dropped, key, cell))
        except Exception:  # the runtime stopped meanwhile: there is nobody to tell
            pass

    def _dropped(self, key: tuple[int, int], cell: list[int]) -> None:
        """(hub thread) A handle on ``key`` died with ``cell``'s references: a newer handle
        takes them over, else they wait ``RELEASE_AFTER`` for one (``dying``)."""
        if self.cells.get(key) is cell:
            del self.cells[key]
        elif key in self.cells and self.net.homes.proxies.get(key) is not None:
            self.cells[key][0] += cell[0]
            return
        got = self.dying.get(key)
        count = cell[0] + (got[1] if got is not None else 0)
        self.dying[key] = (time.monotonic() + RELEASE_AFTER, count)
        self.sweep()

    def sweep(self) -> None:
        """(hub thread) Release the references of handles dropped ``RELEASE_AFTER`` ago and
        not taken over since."""
        now = time.monotonic()
        for key, (when, count) in list(self.dying.items()):
            if when <= now:
                del self.dying[key]
                self._release(key, count)

    def _release(self, key: tuple[int, int], count: int) -> None:
        """Tell ``key``'s home this node dropped ``count`` references, with the credits no
        handle here can use any more."""
        net = self.net
        home, oid = key
        if net.stopping or home in net.lost or home not in net.links:
            return
        net.send(home, ("release", oid, count, net.credits.credit.pop(key, 0)))
        self.released += 1

    # ------------------------------------------------------------------ the home's side

    def lend(self, oid: int, node: int) -> None:
        """(dispatcher) A holder passed a handle on ``oid`` to ``node``."""
        self._count(oid, node, 1)

    def release(self, node: int, oid: int, count: int, unused: int) -> None:
        """(dispatcher) ``node`` dropped ``count`` references to ``oid``, and gives back
        ``unused`` credits."""
        if unused:
            self.net.credits.unused(node, oid, unused)
        self._count(oid, node, -count)

    def _count(self, oid: int, node: int, k: int) -> None:
        """``node`` holds ``k`` more references to ``oid`` (fewer, if negative)."""
        h = self.holders.get(oid)
        if h is None or node == self.net.me:
            return
        left = h.get(node, 0) + k
        if left:
            h[node] = left
        else:
            h.pop(node, None)
        self._maybe_drop(oid)

    def node_lost(self, node: int) -> None:
        """``node`` is lost: it holds nothing any more."""
        for oid in list(self.holders):
            if self.holders[oid].pop(node, None) is not None:
                self._maybe_drop(oid)

    def _maybe_drop(self, oid: int) -> None:
        if self.holders.get(oid) or oid in self.fresh:
            return
        self.holders.pop(oid, None)
        self.net.homes.unexport(oid)
