"""The goroutine record (Go's ``g``).

Invariants:
- ``glet`` is None until the goroutine first runs; from then on it is bound to this P's thread.
- ``state`` is one of RUNNABLE, RUNNING, WAITING, DEAD; ``reason`` is the wait reason while
  WAITING, and the last one (read by no one) otherwise.
- ``param`` carries the value handed over by ``Hub.ready`` until the goroutine resumes.
- A G is its own channel waiter (Go's ``sudog``) for a plain send or receive: ``g``, ``sel`` and
  ``case`` read as a waiter's do, ``elem`` holds the value a parked sender offers. A select
  makes one separate waiter per case instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from types import CodeType, FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._shm import native

#: where csp_mp's own files are: frames there are skipped when looking for the user's call
PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
SITES_MAX = 4096  # call sites resolved and kept (site_of); the cache is emptied when full

RUNNABLE = "runnable"
RUNNING = "running"
WAITING = "waiting"
DEAD = "dead"


class G:
    """One goroutine: its function, its greenlet once started, and its scheduling state.

    Its fields live in a record class below it: ``PyG`` (slots; the Python path, and the
    specification) or, with the compiled core, ``NativeG`` (its twin in grecord.c). A hub
    makes the one ``record_class()`` names. Every field is set when a record is made: a field
    read where it was never stored takes the interpreter's slow path, and the hot paths read
    ``sel``, ``glet`` and ``is_main`` of goroutines that never changed them.
    """

    if not TYPE_CHECKING:  # (the fields below are the record classes' slots)
        __slots__ = ()

    id: int
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    p: int
    local: bool
    glet: Any
    state: str
    reason: str
    param: Any
    result: Any
    is_main: bool
    name: str
    elem: Any
    sel: Any
    case: int
    made: Any
    wait_as: str

    if TYPE_CHECKING:  # what both record classes offer
        def __init__(self, gid: int, fn: Callable[..., Any], args: tuple, kwargs: dict, p: int,
                     local: bool = True) -> None: ...

        @classmethod
        def many(cls, ids: Iterator[int], allgs: dict[int, G], p: int,
                 items: list[tuple[Callable[..., Any], tuple, Any]]) -> list[G]: ...

    @property
    def g(self) -> G:
        """The goroutine a waiter wakes: itself."""
        return self

    def function(self) -> str:
        """``module.func`` of its function, or its name (``main``)."""
        if self.name:
            return self.name
        fn = self.fn
        what = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        mod = getattr(fn, "__module__", None)
        return f"{mod}.{what}" if mod else what

    def describe(self) -> str:
        """``goroutine N (module.func)``, as panics name it."""
        return f"goroutine {self.id} ({self.function()})"

    def created_by(self) -> str:
        """Go's two lines ``created by module.func in goroutine N`` and ``\tfile:line``, or ""
        when not recorded (the main goroutine, as in Go)."""
        made = self.made
        if made is None or self.is_main:
            return ""
        if len(made) == 3:
            func, file, line = site_of(made[0], made[1])
        else:
            site = made[0]
            if site is None:  # go() called with no Python frame under it
                return ""
            func, file, line = _decode_site(site) if type(site) is bytes else site
        creator = made[-1]
        where = f" in goroutine {creator}" if creator else ""
        return f"created by {func}{where}\n\t{file}:{line or '?'}"

    def waiting(self) -> str:
        """Its state, or what it waits for (``wait_as``, else its park's ``reason``)."""
        return (self.wait_as or self.reason) if self.state == WAITING else self.state

    def __repr__(self) -> str:
        extra = f" [{self.waiting()}]" if self.state == WAITING else ""
        return f"<G {self.id} {self.state}{extra} on P{self.p}>"


#: every field but the six a goroutine is made with (id, fn, args, kwargs, p, local), in the
#: records' order, with the value it starts with
AT_START: tuple[tuple[str, Any], ...] = (
    ("glet", None),
    ("state", RUNNABLE),
    ("reason", ""),
    ("param", None),
    ("result", None),
    ("is_main", False),
    ("name", ""),
    ("elem", None),
    ("sel", None),
    ("case", -1),
    #: where it was created, for Go's "created by" line (created_by): ``(code, instruction
    #: offset, creator's goroutine id)`` of the user's call on this P, resolved only when
    #: printed; or ``(site, creator's id)`` for one go() queued for any P, ``site`` being the
    #: task frame's ``[function, file, line]``, as msgpack bytes or decoded; None for main
    ("made", None),
    #: what a wait shows instead of ``reason`` when the goroutine waits for another on its
    #: behalf (a request to another node made through this node's P0): ``waiting()``
    ("wait_as", ""),
)
_START_VALUES = tuple(v for _, v in AT_START)


class PyG(G):
    """G's fields as slots, made in Python: the specification of the compiled ``GRecord``."""

    __slots__ = ("id", "fn", "args", "kwargs", "p", "local", *(name for name, _ in AT_START))

    def __init__(self, gid: int, fn: Callable[..., Any], args: tuple, kwargs: dict, p: int,
                 local: bool = True) -> None:
        self.id = gid
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.p = p
        self.local = local
        (self.glet, self.state, self.reason, self.param, self.result, self.is_main, self.name,
         self.elem, self.sel, self.case, self.made, self.wait_as) = _START_VALUES

    @classmethod
    def many(cls, ids: Iterator[int], allgs: dict[int, G],
             p: int, items: list[tuple[Callable[..., Any], tuple, Any]]) -> list[G]:
        """A record ``(next(ids), fn, args, {}, p, local=False)`` with ``made`` for each
        ``(fn, args, made)`` of ``items``, each put in ``allgs`` under its id."""
        gs: list[G] = []
        for fn, args, made in items:
            g = cls(next(ids), fn, args, {}, p, False)
            g.made = made
            allgs[g.id] = g
            gs.append(g)
        return gs


def record_class() -> type[G]:
    """The record class of the goroutines of a runtime starting now: ``NativeG`` on the
    compiled core, else ``PyG``. Both are made as ``cls(id, fn, args, kwargs, p, local)`` and
    ``cls.many(ids, allgs, p, items)``."""
    if not (native.built() and native.enabled()):
        return PyG
    if _cache.native_g is None:
        grecord = native.core().GRecord
        grecord.start_with(tuple(name for name, _ in AT_START), _START_VALUES)

        class NativeG(G, grecord):  # type: ignore[misc, valid-type]
            """G's fields in the compiled core's record (grecord.c)."""

            __slots__ = ()

        NativeG.__qualname__ = "NativeG"
        _cache.native_g = NativeG
    return _cache.native_g


def root_body() -> None:
    """The placeholder function of the implicit main goroutine (the thread's root greenlet runs
    the user's code, not this)."""
    return None


class _SiteCache:
    """What the site functions below keep: pure functions of the code (where a code object's
    instruction is, which code is the user's), which no fork or runtime can make wrong."""

    __slots__ = ("user_code", "queued_last", "sites", "modules", "compiled", "native_g")

    def __init__(self) -> None:
        self.user_code: CodeType | None = None  # here()'s last code found to be the user's
        #: queued_here's last (code, lasti, site bytes)
        self.queued_last: tuple[Any, int, bytes] = (None, -1, b"")
        #: (id(code), lasti) -> (code, site_of's answer, site_bytes's): at most SITES_MAX
        self.sites: dict[tuple[int, int], tuple[CodeType, tuple[str, str, int], bytes]] = {}
        self.modules: dict[str, str] = {}  # file -> the name of its loaded module
        self.compiled: Any = None  # the compiled core's Sites, once made (compiled_sites)
        self.native_g: type[G] | None = None  # NativeG, once made (record_class)


_cache = _SiteCache()


def _encode_site(site: tuple[str, str, int]) -> bytes:
    """A site as a task frame carries it: the msgpack array ``[function, file, line]``."""
    import msgspec  # on first use: a one-P program never frames a goroutine

    return msgspec.msgpack.encode(site)


def _decode_site(data: bytes) -> tuple[str, str, int]:
    import msgspec

    return tuple(msgspec.msgpack.decode(data))


def here(f: FrameType | None, creator: int) -> tuple | None:
    """``G.made`` of a goroutine made by a call under frame ``f`` by goroutine ``creator``:
    ``(code, lasti, creator)`` of the innermost frame from ``f`` out that is not csp_mp's
    (go() itself, errgroup, the executor, a hooked hub's layers are skipped), or of ``f``
    itself when every frame is (a goroutine csp_mp starts on its own: the executor's runner of
    tasks on its owner's P); None without a frame. The Python twin of the compiled core's
    ``Sites.here`` (a hub records with one of them: ``recorder``)."""
    if f is None:
        return None
    code = f.f_code
    if code is _cache.user_code:  # the user's code the last search found: a loop spawning
        return code, f.f_lasti, creator
    user: FrameType | None = f
    while user is not None and user.f_code.co_filename.startswith(PKG):
        user = user.f_back
    if user is None:
        user = f
    elif user is f:
        _cache.user_code = code
    return user.f_code, user.f_lasti, creator


def queued_here(f: FrameType | None, current: G | None) -> tuple:
    """``G.made`` of a goroutine that go() queues for any P, called under frame ``f``:
    ``(site, creator's id)``, the site as a task frame carries it (``site_bytes``; None
    without a frame)."""
    creator = current.id if current is not None else 0
    made = here(f, creator)
    if made is None:
        return None, creator
    last = _cache.queued_last  # the last site asked: a loop calling go() on one line
    if last[0] is made[0] and last[1] == made[1]:
        return last[2], creator
    site = site_bytes(made[0], made[1])
    _cache.queued_last = (made[0], made[1], site)
    return site, creator


def requeued(made: tuple | None) -> tuple:
    """``G.made`` of a goroutine not started, in the form go() queues it for any P (``(site
    bytes or None, creator's id)``): it is handed back to the queue between Ps."""
    if made is None:
        return None, 0
    if len(made) == 3:
        return site_bytes(made[0], made[1]), made[2]
    site = made[0]
    if site is not None and type(site) is not bytes:  # decoded: [function, file, line]
        site = _encode_site(tuple(site))
    return site, made[1]


def site_of(code: CodeType, lasti: int) -> tuple[str, str, int]:
    """``(module.func, file, line)`` of the instruction at byte offset ``lasti`` of ``code``;
    line 0 when the code has no line there (code built without a line table)."""
    return _site(code, lasti)[1]


def site_bytes(code: CodeType, lasti: int) -> bytes:
    """``site_of`` as a task frame carries it: the msgpack array ``[function, file, line]``."""
    return _site(code, lasti)[2]


def _site(code: CodeType, lasti: int) -> tuple[CodeType, tuple[str, str, int], bytes]:
    """The site's cache entry: a loop calling go() on one line resolves it once."""
    sites = _cache.sites
    key = (id(code), lasti)
    hit = sites.get(key)
    if hit is not None and hit[0] is code:
        return hit
    line = next((ln for start, end, ln in code.co_lines() if start <= lasti < end), None)
    file = code.co_filename
    mod = _module_named(file)
    func = f"{mod}.{code.co_qualname}" if mod else code.co_qualname
    site = (func, file, line or 0)
    if len(sites) >= SITES_MAX:
        sites.clear()
    # the code is held: its id stays its own while the entry lives
    hit = sites[key] = (code, site, _encode_site(site))
    return hit


def _module_named(file: str) -> str:
    """The name of the loaded module whose source is ``file`` ("" for none: exec'd code)."""
    name = _cache.modules.get(file)
    if name is None:  # a module's own dict: no module __getattr__ (a lazy loader) runs
        name = next((n for n, m in list(sys.modules.items())
                     if isinstance(m, ModuleType) and m.__dict__.get("__file__") == file), "")
        if name:
            _cache.modules[file] = name
    return name


def compiled_sites() -> Any:
    """This process's ``Sites`` of the compiled core (``here`` and ``site_bytes`` in C, which
    the compiled ``go()`` reads too), made on first use."""
    if _cache.compiled is None:
        _cache.compiled = native.core().Sites(PKG, site_bytes)
    return _cache.compiled


def recorder() -> Callable[[FrameType | None, int], tuple | None]:
    """What a hub records ``G.made`` with: ``Sites.here`` on the compiled core, else ``here``."""
    return compiled_sites().here if native.built() and native.enabled() else here
