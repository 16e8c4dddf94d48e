"""What a frame's pickle holds: a message pickled for another node, with csp_mp objects as
global ids.

A message is pickled with protocol 5 (cloudpickle for functions). An object with a home travels
by ``persistent_id``: a channel as ``("c", home node, id, cap)``, a sync object or atomic as
``("o", home node, id, kind)`` (``kind``: its index in ``remote.homed_classes()``). It arrives
as the object itself on its home, and as a handle elsewhere (``RemoteChan``, ``proxy_class``).
Objects that cannot yet be used on another node refuse to travel (TypeError).

The ids come from the node's ``Homes`` (``homes.py``), passed in as ``homes``: it names an
object homed here by ``export`` and finds what an id names by ``resolve``/``resolve_obj``.

Invariants:
- An object pickled here names its home and the id its home knows it by: a handle names the
  object it stands for, never itself.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from .._chan import Chan
from .._shm import cloud
from .remote import RemoteChan, homed_classes, proxy_class


class Kinds:
    """Which types travel as global ids, and which cannot travel at all."""

    def __init__(self) -> None:
        self.homed = {t: k for k, t in enumerate(homed_classes())}
        self.proxy_types = frozenset(proxy_class(k) for k in self.homed.values())
        self.refused = refused_types()


def refused_types() -> tuple[type, ...]:
    """csp_mp objects that cannot yet be used from another node."""
    from .. import _context
    from .._sync import primitives as S

    ctx = tuple(t for t in vars(_context).values()
                if isinstance(t, type) and issubclass(t, _context.Context)
                and t is not _context.Context and t.__name__ != "_Empty")
    return (S.Once, S.Cond, *ctx)


class Pickler(cloud._Pickler):
    """Pickles messages for another node (see the module doc); ``homes``: the node's ids."""

    def __init__(self, f: Any, homes: Any, kinds: Kinds) -> None:
        super().__init__(f, protocol=5)
        self.homes = homes
        self.me = homes.me
        self.kinds = kinds

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t is Chan:
            return ("c", self.me, self.homes.export(obj), obj._st.cap)
        if t is RemoteChan:
            return ("c", obj._home, obj._oid, obj._st.cap)
        kinds = self.kinds
        kind = kinds.homed.get(t)
        if kind is not None:
            return ("o", self.me, self.homes.export(obj), kind)
        if t in kinds.proxy_types:
            return ("o", obj._home, obj._oid, obj._kind)
        if t in kinds.refused:
            raise TypeError(f"a csp_mp {t.__name__} cannot be used on another node yet: keep it "
                            "on the node that made it")
        return None


class Unpickler(pickle.Unpickler):
    """Unpickles a message from another node (see the module doc)."""

    def __init__(self, data: Any, homes: Any) -> None:
        super().__init__(io.BytesIO(data))
        self.homes = homes

    def persistent_load(self, pid: Any) -> Any:
        what, home, oid, extra = pid
        if what == "c":
            return self.homes.resolve(home, oid, extra)
        return self.homes.resolve_obj(home, oid, extra)
