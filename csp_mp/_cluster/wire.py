"""What a frame's pickle holds: a message pickled for another node, with csp_mp objects as
global ids.

A message is pickled with protocol 5 (cloudpickle for functions) and unpickled by
``pickle.loads``. An object with a home travels as a global id, by a reducer of the pickler's
dispatch table: a channel as ``_chan(home node, id, cap)``, a sync object or atomic as
``_obj(home node, id, kind)`` (``kind``: its index in ``remote.homed_classes()``). It arrives as
the object itself on its home, and as a handle elsewhere (``RemoteChan``, ``proxy_class``).
An atomic or semaphore already shared between the Ps of its node (a subclass the ``_mp`` layer
gives it) travels as its base class does. Objects built of these (``Once``, ``Cond``, contexts)
travel as their parts; a context's deadline as the time left (``remote.reduce_context``).

The ids come from the node's ``Homes`` (``homes.py``), passed in as ``homes``: it names an
object homed here by ``export``; the receiving node's (``proc.cluster.homes``, on its P0, where
the dispatcher unpickles) finds what an id names by ``resolve``/``resolve_obj``. What a message
carries is counted for the objects' release (``refs.py``): ``export`` notes the objects homed
here, the handle reducers those of other homes (``Refs.lent``).

Invariants:
- An object pickled here names its home and the id its home knows it by: a handle names the
  object it stands for, never itself.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any

from .. import _context
from .._chan import Chan
from .._proc import proc
from .._shm import cloud
from .remote import RemoteChan, homed_classes, proxy_class, reduce_context


class Kinds:
    """Which types travel as global ids: ``homed`` maps each (the homed classes and their
    subclasses but the handles) to its kind."""

    def __init__(self) -> None:
        from .._mp import shobj  # the subclasses an atomic or a semaphore shared by Ps takes

        del shobj
        bases = homed_classes()
        self.proxy_types = frozenset(proxy_class(k) for k in range(len(bases)))
        self.homed: dict[type, int] = {}
        for k, base in enumerate(bases):
            for t in (base, *_subclasses(base)):
                if t not in self.proxy_types:
                    self.homed.setdefault(t, k)


def _subclasses(t: type) -> list[type]:
    """Every subclass of ``t``, however deep."""
    subs: list[type] = t.__subclasses__()
    return [d for sub in subs for d in (sub, *_subclasses(sub))]


class Pickler(cloud._Pickler):
    """Pickles messages for another node (see the module doc); ``homes``: the node's ids.

    The global ids come from this pickler's own dispatch table, looked up by the pickler's C
    code for the objects that are not plain data only: plain values cost no Python call."""

    def __init__(self, f: Any, homes: Any, kinds: Kinds) -> None:
        me, export, lent = homes.me, homes.export, homes.net.refs.lent

        def chan(obj: Any) -> tuple:
            return _chan, (me, export(obj), obj._st.cap)

        def handle(obj: Any) -> tuple:
            lent.append((obj._home, obj._oid))
            return _chan, (obj._home, obj._oid, obj._st.cap)

        def homed(kind: int) -> Any:
            return lambda obj: (_obj, (me, export(obj), kind))

        def proxy(obj: Any) -> tuple:
            lent.append((obj._home, obj._oid))
            return _obj, (obj._home, obj._oid, obj._kind)

        table: dict[type, Any] = {t: proxy for t in kinds.proxy_types}
        table.update({t: homed(k) for t, k in kinds.homed.items()})
        table[Chan] = chan
        table[RemoteChan] = handle
        table[_context._CancelCtx] = reduce_context
        # read by the pickler's __init__: set before it
        self.dispatch_table = ChainMap(table, cloud._Pickler.dispatch_table)
        super().__init__(f, protocol=5)


def _chan(home: int, oid: int, cap: int) -> Any:
    """The channel ``(home, oid)`` arriving at this node (its dispatcher: ``proc.cluster``)."""
    return proc.cluster.homes.resolve(home, oid, cap)


def _obj(home: int, oid: int, kind: int) -> Any:
    """The sync object or atomic ``(home, oid)`` arriving at this node."""
    return proc.cluster.homes.resolve_obj(home, oid, kind)
