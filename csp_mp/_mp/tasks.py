"""Goroutines as bytes: what ``go()`` puts in the stealable run queue, and how a thief runs it.

A task frame is ``(seq, owner, digest, fn_bytes, args, warn, site, creator)``, one msgpack array
(``layout.TASK_ITEMS`` items). The callable pickles by reference where plain pickle can (an
importable module-level function), by value through cloudpickle otherwise (``__main__``
functions, closures, lambdas); its bytes are cached per function object and thieves cache the
unpickled function by digest. The caches are the runtime object's (``proc.fn_bytes``,
``recent``, ``closures``, ``fns``), bounded, and emptied with the runtime (their bytes name its
arena's offsets). ``warn`` names the mutable plain state the function captures (SPEC's
MigrationWarning), or is empty. ``site`` and ``creator`` say where ``go()`` was called, for
Go's ``created by`` lines on whatever P runs it: the ``[function, file, line]`` array, encoded
once per call site (``_hub/g.py``: ``site_bytes``), or nil, and the creating goroutine's id.

``args`` is a list for the common fan-out call, ``go(fn, i, out)``, whose positional arguments
are all msgpack scalars or untyped channels: they sit in the frame itself, each channel an
extension value holding its arena offset (about a third of the codec's cost, which pickles a
tuple holding a channel). Any other arguments are the codec's bytes of ``(args, kwargs)``.

Invariants:
- Serialization happens before anything is queued: an unpicklable callable or argument raises
  ``TypeError`` in ``go()`` and leaves no trace.
"""

from __future__ import annotations

try:  # the interpreter's own blake2b: hashlib would load OpenSSL (~2 ms of a multi-P start)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b
import pickle
import types
from collections.abc import Callable
from typing import Any

import msgspec

from .._chan import Chan
from .._chan.local import LocalState
from .._proc import CLOSURES_MAX, FNS_MAX, RECENT_MAX, proc
from .._shm import OOB_MIN, codec, decode, encode
from .._shm import layout as L
from .._shm.cloud import check as cloud_check
from .._shm.cloud import dumps as cloudpickle_dumps
from . import migrate_warn, promote
from .promote import chan_offset, names, pinning

_CHAN_EXT = L.CHAN_EXT  # the extension type naming a channel (task.c's too: layout.py)
#: ``made`` of a frame that says nothing of where it was made: ``(site, creator's id)``
NO_SITE: tuple[bytes | None, int] = (None, 0)
#: Argument types a frame carries as msgpack values (bytes too, below OOB_MIN, and untyped
#: channels, as extension values: see plain_items).
PLAIN_LEAF = frozenset({int, str, float, bool, type(None)})
PLAIN_WITH_CHAN = PLAIN_LEAF | {bytes, Chan}


def _chan_name(obj: Chan) -> msgspec.msgpack.Ext | None:
    """The extension value naming an untyped channel (promoted first if still local), cached on
    its shared state; None for a typed channel (pickled). Counts nothing: the caller counts the
    name once it travels."""
    if obj._type is not None:
        return None
    st: Any = obj._st
    if not st.shared or st.broker is not proc.broker:
        b = proc.broker
        got = None
        if (b is not None and b.handles is not None and type(st) is LocalState
                and not (st.buf or st.sendq or st.recvq or st.closed)):
            got = b.handles.promote(obj, st.cap)  # promote_chan_state's first case
            if type(got) is int:  # a block from the pool, which this P has no state for
                got = promote.adopt_block(b, obj, got, st.cap)
        st = got if got is not None else promote.promote_chan_state(obj)
    ext = st.handle
    if ext is None:
        ext = st.handle = msgspec.msgpack.Ext(_CHAN_EXT, st.key)
    return ext


def _count_name(obj: Chan) -> None:
    """A name of ``obj`` written into bytes that will travel (promote.py's protocol)."""
    st: Any = obj._st  # a SharedChan: _chan_name promoted it
    if proc.pinning:
        promote.pin(proc.broker, st.add_refs(promote.PIN), "chan")
    else:
        st.add_name()


def install() -> None:
    """Let the codec carry untyped channels in tuples and lists as this module's extension
    values, the way frames carry them (when a multi-P runtime starts)."""
    codec.set_extension(Chan, _CHAN_EXT, codec.Extension(_chan_name, _count_name,
                                                         _chan_from_ext))


def chan_ext_offset(obj: Chan) -> int | None:
    """The arena offset naming an untyped channel in a frame (promoted first if still local);
    None for a typed channel, which travels through the codec."""
    return chan_offset(obj) if obj._type is None else None


def encode_plain(seq: int, owner: int, entry: tuple[bytes, bytes, str], args: tuple,
                 made: tuple[bytes | None, int] = NO_SITE) -> bytes | None:
    """The frame of a ``go()`` call without kwargs whose arguments are all plain (see
    ``plain_items``), ``entry`` being ``pickle_fn``'s and ``made`` the goroutine's ``G.made``
    (``(site bytes or None, creator's id)``); None when the codec must carry them."""
    got = plain_items(args)
    if got is None:
        return None
    items, chans = got
    try:
        frame = encode_frame((seq, owner, entry[0], entry[1], items, entry[2], *_made_items(made)))
    except MSGPACK_FAIL:
        return None  # a huge int or a lone surrogate: the codec pickles it
    for ch in chans:  # the frame exists: each name now travels
        _count_name(ch)
    return frame


def _made_items(made: tuple[bytes | None, int]) -> tuple[msgspec.Raw | None, int]:
    """The site and creator items of a frame: the site's bytes are msgpack already."""
    site = made[0]
    return (None if site is None else msgspec.Raw(site)), made[1]


def made_of(t: tuple) -> tuple[Any, int]:
    """``G.made`` of a goroutine whose frame is decoded (``unframe``): ``(site, creator's id)``,
    the site a ``[function, file, line]`` list or None."""
    return t[L.TASK_SITE], t[L.TASK_CREATOR]


def plain_encoder(arena: Any) -> Callable[..., bytes | None]:
    """``encode_plain``, from the compiled core when ``arena`` runs on it."""
    if arena.core is None:
        return encode_plain
    from .._shm.native import core

    return core().TaskEncoder(Chan, chan_ext_offset, OOB_MIN, arena.core).encode


def decode_plain(frames: list[bytes], start: int, fns: dict, names: dict) -> list:
    """The Python path of the compiled core's ``TaskEncoder.decode_many``: none decoded, each
    frame is left to ``unframe`` and ``unpack_items`` (the protocol: ``(fn, args, made)`` of
    the frames from ``start`` up to the first one the caller must unpack, which has consumed no
    channel name; ``made`` is ``G.made``, ``(site bytes or None, creator's id)``)."""
    return []


def plain_decoder(encode: Any) -> Callable[[list[bytes], int, dict, dict], list]:
    """``decode_plain``, or the ``decode_many`` of the compiled core's ``TaskEncoder`` whose
    ``encode`` is ``encode`` (``plain_encoder``'s answer)."""
    encoder = getattr(encode, "__self__", None)
    return decode_plain if encoder is None else encoder.decode_many


def _chan_from_ext(code: int, data: memoryview) -> Chan:
    try:
        ref = names.get(data)  # type: ignore[call-overload]  # hashes as its bytes
    except ValueError:  # a writable view does not hash
        ref = None
    if ref is not None and code == _CHAN_EXT:
        ch = ref()
        if ch is not None:
            ref.drop()  # the name read; its handle keeps one
            return ch
    if code != _CHAN_EXT:
        raise ValueError(f"unknown argument extension {code}")
    # no live handle here (names keeps them all): the name read becomes a new one's count
    b = proc.broker
    if b is not None and b.handles is not None:
        ch = b.handles.attach_new(data)  # new_handle's first case
        if ch is not None:
            return ch
    return promote.new_handle(int.from_bytes(data, "little"), None)


encode_frame = msgspec.msgpack.Encoder().encode
_unframe = msgspec.msgpack.Decoder(tuple, ext_hook=_chan_from_ext).decode
#: A task frame as a tuple ``(seq, owner, digest, fn_bytes, args, warn, site, creator)``;
#: consumes the channel names it carries. ``args`` is a list for ``encode_plain``'s frames,
#: ``site`` a ``[function, file, line]`` list or None.
unframe = _unframe
MSGPACK_FAIL = (TypeError, ValueError, OverflowError, msgspec.EncodeError)


def plain_items(args: tuple) -> tuple[list, list[Chan]] | None:
    """``args`` as a list msgpack carries, if every item is a scalar, small bytes or an untyped
    Chan (as its extension value, promoting it), with the channels it names; else None. Counts
    nothing: the caller counts each name once the frame exists (``_count_name``)."""
    leaf = PLAIN_LEAF
    items = []
    chans = []
    for a in args:
        t = type(a)
        if t in leaf or (t is bytes and len(a) < OOB_MIN):
            items.append(a)
        elif t is Chan and a._type is None:
            items.append(_chan_name(a))
            chans.append(a)
        else:
            return None
    return items, chans


_MUTABLE = (list, dict, set, bytearray)
# The last few callables go() was given, held strongly: a dict hit by id, where the weak-keyed
# proc.fn_bytes pays a weakref per lookup (and the only cache for callables that cannot be weakly
# referenced). Cleared when full, so it keeps at most RECENT_MAX alive. The runtime object's
# dict (proc.recent), named here for go()'s path.
_recent = proc.recent
#: digest -> the callable unpickled here (and without a warning to give): the runtime object's
#: dict, never rebound (the compiled core's ``decode_many`` reads it).
fns = proc.fns
#: The callable of a digest already unpickled here, or None.
known_fn = fns.get


def _is_plain_mutable(v: Any) -> bool:
    if isinstance(v, _MUTABLE):
        return not migrate_warn.shared_table(v)  # a table of channels is shared, not copied
    t = type(v)
    if isinstance(v, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                      types.MethodType, staticmethod, classmethod, property)):
        return False
    mod = getattr(t, "__module__", "") or ""
    if mod == "builtins" or mod.startswith("csp_mp"):
        return False
    return hasattr(v, "__dict__") or hasattr(t, "__slots__")


def captured_mutable(fn: Any) -> list[str]:
    """Names of the mutable plain values ``fn`` closes over or holds as defaults."""
    names: list[str] = []
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is not None:
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            if _is_plain_mutable(v):
                names.append(name)
    defaults = getattr(fn, "__defaults__", None) or ()
    if code is not None and defaults:
        argnames = code.co_varnames[: code.co_argcount]
        for name, v in zip(argnames[len(argnames) - len(defaults):], defaults, strict=False):
            if _is_plain_mutable(v):
                names.append(name)
    for name, v in (getattr(fn, "__kwdefaults__", None) or {}).items():
        if _is_plain_mutable(v):
            names.append(name)
    return names


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{type(obj).__name__} {name!r}" if name else repr(type(obj).__name__)


_LEAVES = frozenset({int, float, str, bytes, bool, type(None), complex, range})



def _stable(v: Any, refs: list, depth: int) -> bool:
    """Whether ``v`` pickles to the same bytes for as long as it is the same object: immutable
    values, modules, classes, the runtime's shared objects, and functions made only of those."""
    t = type(v)
    if t in _LEAVES or isinstance(v, (type, types.ModuleType, types.BuiltinFunctionType)):
        return True
    if t is tuple or t is frozenset:
        return depth < 4 and all(_stable(x, refs, depth + 1) for x in v)
    if isinstance(v, migrate_warn.RUNTIME_TYPES):
        return True
    if t is types.FunctionType:
        return depth < 3 and _function_refs(v, refs, depth + 1)
    return False


def _function_refs(fn: Any, refs: list, depth: int) -> bool:
    """Collect what ``fn``'s pickled bytes depend on; False if any of it may change in place."""
    code = fn.__code__
    refs.append(code)
    for cell in fn.__closure__ or ():
        try:
            v = cell.cell_contents
        except ValueError:
            return False
        if not _stable(v, refs, depth):
            return False
        refs.append(v)
    for v in (fn.__defaults__ or ()) + tuple((fn.__kwdefaults__ or {}).values()):
        if not _stable(v, refs, depth):
            return False
        refs.append(v)
    g = fn.__globals__
    refs.append(g)
    for name in code.co_names:
        if name in g:
            v = g[name]
            if not _stable(v, refs, depth):
                return False
            refs.append(v)
    return True


def _closure_key(fn: Any) -> tuple | None:
    """A cache key for a function whose bytes depend only on objects that cannot change in
    place (a new closure made by each turn of a loop, over the same channels, say), or None.

    The key holds those objects, so their ids stay theirs while the entry lives."""
    if type(fn) is not types.FunctionType:
        return None
    refs: list = []
    if not _function_refs(fn, refs, 0):
        return None
    return tuple(map(id, refs)), tuple(refs)


def pickle_fn(fn: Callable[..., Any]) -> tuple[bytes, bytes, str]:
    """``(digest, bytes, warn)`` of a callable, cached per function object, and for closures
    per code and captured objects when those cannot change in place."""
    recent = _recent.get(id(fn))
    if recent is not None and recent[0] is fn:
        return recent[1]
    entry = _pickle_fn_cached(fn)
    if len(_recent) >= RECENT_MAX:
        _recent.clear()
    _recent[id(fn)] = (fn, entry)
    return entry


def _pickle_fn_cached(fn: Callable[..., Any]) -> tuple[bytes, bytes, str]:
    by_fn, closures = proc.fn_bytes, proc.closures
    try:
        hit = by_fn.get(fn)
    except TypeError:  # not weakly referable: only _recent keeps its entry
        hit = None
    if hit is not None:
        return hit
    key = _closure_key(fn) if getattr(fn, "__closure__", None) or getattr(
        fn, "__module__", None) == "__main__" else None
    if key is not None:
        entry = closures.get(key[0])
        if entry is not None:
            closures.move_to_end(key[0])
            by_fn[fn] = entry[0]
            return entry[0]
    with pinning():  # these bytes are shipped many times: channels they hold stay
        entry = _pickle_fn_uncached(fn)
    if key is not None:
        closures[key[0]] = (entry, key[1])
        if len(closures) > CLOSURES_MAX:
            closures.popitem(last=False)
    try:
        by_fn[fn] = entry
    except TypeError:
        pass  # not weakly referable: pickle_fn's _recent holds it
    return entry


def _pickle_fn_uncached(fn: Callable[..., Any]) -> tuple[bytes, bytes, str]:
    data = None
    if getattr(fn, "__module__", None) != "__main__" and "<locals>" not in getattr(
            fn, "__qualname__", "<locals>") and getattr(fn, "__name__", "") != "<lambda>":
        try:
            data = pickle.dumps(fn, protocol=5)
        except Exception:
            data = None
    if data is None:
        try:
            data = cloudpickle_dumps(fn)
        except Exception as exc:
            raise TypeError(f"go(): cannot pickle {_describe(fn)} to run it on another P: "
                            f"{type(exc).__name__}: {exc}") from exc
    warn = migrate_warn.text(fn, captured_mutable(fn), migrate_warn.globals_read(fn),
                             migrate_warn.globals_written(fn))
    return (blake2b(data, digest_size=16).digest(), data, warn)


def pack(seq: int, owner: int, fn: Callable[..., Any], args: tuple, kwargs: dict,
         arena: Any, made: tuple[bytes | None, int] = NO_SITE) -> bytes:
    """The task frame of ``go(fn, *args, **kwargs)`` made as ``made`` says (``encode_plain``);
    TypeError if it cannot travel."""
    digest, fn_bytes, warn = pickle_fn(fn)
    got = plain_items(args) if not kwargs else None
    if got is not None:
        items, chans = got
        try:
            frame = encode_frame((seq, owner, digest, fn_bytes, items, warn, *_made_items(made)))
        except MSGPACK_FAIL:
            pass  # a huge int or a lone surrogate: the codec pickles it
        else:
            for ch in chans:  # the frame exists: each name now travels
                _count_name(ch)
            return frame
    try:
        args_bytes = encode((args, kwargs), arena) if (args or kwargs) else b""
    except TypeError as exc:
        raise _argument_error(fn, args, kwargs, exc) from exc
    return encode_frame((seq, owner, digest, fn_bytes, args_bytes, warn, *_made_items(made)))


def _argument_error(fn: Callable[..., Any], args: tuple, kwargs: dict,
                    exc: TypeError) -> TypeError:
    """The TypeError of a go() whose arguments cannot travel, naming the user's argument that
    cannot ("argument 2 of go(use, ...): an open file (TextIOWrapper) ...")."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    where: list[tuple[str, Any]] = [(f"argument {i + 1}", a) for i, a in enumerate(args)]
    where += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in where:
        try:
            cloud_check(value, migrate_warn.RUNTIME_TYPES)
        except Exception as e:  # the first that cannot travel on its own
            why = str(e) if isinstance(e, TypeError) else f"{type(e).__name__}: {e}"
            return TypeError(f"{label} of go({name}, ...) cannot be sent to another P "
                             f"({type(value).__qualname__}): {why}")
    return TypeError(f"go({name}, ...): its arguments cannot be sent to another P: {exc}")


def is_plain(frame: bytes) -> bool:
    """True if the frame carries its arguments as msgpack values, not the codec's bytes."""
    return type(_unframe(frame)[4]) is list


_UINT_BYTES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}  # msgpack's unsigned int headers


def frame_seq(frame: bytes) -> int:
    """The seq of a task frame (its first item, a msgpack unsigned int), without decoding it."""
    b1 = frame[1]
    if b1 < 0x80:
        return b1
    return int.from_bytes(frame[2 : 2 + _UINT_BYTES[b1]], "big")


def own_frame(frame: bytes, arena: Any) -> int:
    """The seq of a frame its owner takes back (it runs the live G): frees its out-of-band
    argument blocks and consumes the channel names it carries, as nobody else will read it."""
    t = _unframe(frame)  # consumes the names of extension values (_chan_from_ext)
    args = t[4]
    if type(args) is bytes and args:
        from .._shm import discard

        discard(args, arena)
    return t[0]


def unpack(frame: bytes, arena: Any) -> tuple[Callable[..., Any], tuple, dict, str, bytes]:
    """``(fn, args, kwargs, warn, digest)`` of a stolen task."""
    return unpack_items(_unframe(frame), arena)


def unpack_items(t: tuple, arena: Any) -> tuple[Callable[..., Any], tuple, dict, str, bytes]:
    """``unpack`` of a frame already decoded (``_unframe``)."""
    digest, fn_bytes, args_bytes, warn = t[2:6]
    fn = fns.get(digest)
    if fn is None:
        fn = pickle.loads(fn_bytes)
        if not warn:  # a function carrying copied mutable state gets its own copy every time
            if len(fns) >= FNS_MAX:
                del fns[next(iter(fns))]  # the oldest
            fns[digest] = fn
    if type(args_bytes) is list:
        return fn, tuple(args_bytes), {}, warn, digest
    if args_bytes:
        args, kwargs = decode(args_bytes, arena)
    else:
        args, kwargs = (), {}
    return fn, tuple(args), dict(kwargs), warn, digest
