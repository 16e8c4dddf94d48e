"""Values to bytes and back, for everything that crosses a process.

The first byte says how the rest is read:

  - any msgpack first byte: a msgspec msgpack value (no extra byte: decode reads the buffer as is)
  - ``0x80`` followed by more bytes: a pickle (protocol 5 starts ``0x80 0x05``; in msgpack
    ``0x80`` is the empty map, a complete one-byte value)
  - ``0xc1`` (a byte msgpack never uses), then a sub-tag:
    ``0x01`` tuple of msgpack-exact items; ``0x02`` out of band (see below); ``0x03`` memoryview;
    ``0x04`` / ``0x05`` a tuple / list of msgpack-exact scalars and extension values (below).

msgpack is used only where the round trip is exact: ``int`` (64-bit), ``float``, ``str``,
``bytes``, ``bool``, ``None``, and lists and str-keyed dicts of them (exact types, no
subclasses). Everything else is pickled (protocol 5, then cloudpickle for callables pickle cannot
reach); a value neither can pickle raises ``TypeError`` naming its type before any shared memory
is touched.

Out of band: with an arena, a top-level ``bytes``/``bytearray``/``memoryview`` of at least
``OOB_MIN`` bytes, and every buffer of at least ``OOB_MIN`` bytes that pickle 5 hands out of band
(contiguous NumPy arrays), is copied once into its own arena block or, too large for the arena,
into a shared-memory segment of its own (``segment.py``); the message carries the blocks'
offsets (a segment as minus its ticket's offset). The decoder owns the blocks:
``bytes``/``bytearray`` are copied out and the block freed at once; pickled buffers and
memoryviews are *leased* (the receiver's object is a view of the block or segment, freed when
the last view dies). A message that will never be decoded must be
passed to :func:`discard` to free its blocks.

Extension values: the process layer registers a type whose objects travel as msgpack extension
values (``set_extension``: an untyped channel, as its arena offset). A top-level tuple or list of
scalars and such objects is encoded with them, not pickled; its bytes name objects whose count
``count`` raised once the encoding succeeded, so ``discard`` decodes it to consume them.

Rejected: an explicit tag byte before msgpack data (decode would slice off a copy or a view,
~60-100 ns per message); msgspec's own tuple/set/datetime support (they come back as lists or
other types); checking exactness by comparing the decoded value (``1 == True == 1.0``, enum
members equal their values).
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
import msgspec.inspect

from csp_mp import _tb
from csp_mp._proc import proc
from csp_mp._shm import layout as L
from csp_mp._shm.arena import Arena
from csp_mp._shm.cloud import Uncrossable
from csp_mp._shm.cloud import dumps as cloud_dumps
from csp_mp._shm.segment import too_large_for_arena
from csp_mp._shm.typecheck import validator

__all__ = ["OOB_MIN", "Extension", "TypedCodec", "decode", "discard", "encode",
           "set_extension"]

OOB_MIN = 64 * 1024
_EXT = L.CODEC_EXT  # (layout.py: chan.c encodes and tells apart tuples the same way)
_TUPLE = bytes((L.CODEC_EXT, L.CODEC_TUPLE))
_PICKLE = L.CODEC_PICKLE  # a pickle's first byte (layout.py: chan.c tells it apart the same way)
_OOBTAG = b"\xc1\x02"
_MVTAG = b"\xc1\x03"
_XTUPLE = b"\xc1\x04"
_XLIST = b"\xc1\x05"

_menc = msgspec.msgpack.Encoder().encode
_mdec = msgspec.msgpack.Decoder().decode
_tdec = msgspec.msgpack.Decoder(tuple).decode
_pdumps = pickle.dumps
_ploads = pickle.loads
_LEAF = frozenset({int, str, float, bool, bytes, type(None)})
_MSGPACK_FAIL = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


def _exact_list(v: list[Any] | tuple[Any, ...]) -> bool:
    leaf = _LEAF
    for x in v:
        if type(x) in leaf:
            continue
        t = type(x)
        if t is list:
            if not _exact_list(x):
                return False
        elif t is dict:
            if not _exact_dict(x):
                return False
        else:
            return False
    return True


def _exact_dict(v: dict[Any, Any]) -> bool:
    leaf = _LEAF
    for k, x in v.items():
        if type(k) is not str:
            return False
        if type(x) in leaf:
            continue
        t = type(x)
        if t is list:
            if not _exact_list(x):
                return False
        elif t is dict:
            if not _exact_dict(x):
                return False
        else:
            return False
    return True


class Extension:
    """How objects of one type travel as msgpack extension values (``set_extension``)."""

    __slots__ = ("name", "count", "read")

    def __init__(self, name: Any, count: Any, read: Any) -> None:
        #: name(obj) -> msgspec.msgpack.Ext, or None when this object is not carried so; it
        #: may prepare the object (promote it) but counts nothing
        self.name = name
        self.count = count  # count(obj): its name was written into bytes that will travel
        self.read = read  # read(code, data) -> obj: the object a name read stands for


# The extension table is the runtime object's (proc.ext_types, proc.ext_codes, proc.xtdec,
# proc.xldec): a process's, set by the process layer when a multi-P runtime starts. Its dict is
# named here for encode's path; it is never rebound.
_EXT_TYPES: dict[type, Extension] = proc.ext_types


def set_extension(tp: type, code: int, ext: Extension) -> None:
    """Carry objects of exactly type ``tp`` in top-level tuples and lists as extension values
    of ``code``."""
    if proc.ext_types.get(tp) is ext and proc.ext_codes.get(code) is ext.read:
        return  # already so
    proc.ext_types[tp] = ext
    proc.ext_codes[code] = ext.read
    hook = ext.read if len(proc.ext_codes) == 1 else _read_hook  # one kind: no dispatch
    proc.xtdec = msgspec.msgpack.Decoder(tuple, ext_hook=hook).decode
    proc.xldec = msgspec.msgpack.Decoder(list, ext_hook=hook).decode


def _read_hook(code: int, data: memoryview) -> Any:
    read = proc.ext_codes.get(code)
    if read is None:
        raise ValueError(f"unknown codec extension {code}")
    return read(code, data)


def _encode_ext(tag: bytes, value: list[Any] | tuple[Any, ...]) -> bytes | None:
    """``value`` with its extension objects written as their names, the names counted once
    the bytes exist; None when an item is neither a scalar nor such an object."""
    leaf = _LEAF
    exts = _EXT_TYPES
    items = []
    named = []
    for x in value:
        t = type(x)
        if t in leaf:
            items.append(x)
            continue
        e = exts.get(t)
        n = e.name(x) if e is not None else None
        if n is None:
            return None
        items.append(n)
        named.append(x)
    if not named:
        return None
    data = tag + _menc(items)
    for x in named:  # the bytes exist: each name now travels
        exts[type(x)].count(x)
    return data


def encode(value: Any, arena: Arena | None = None) -> bytes:
    """The bytes of ``value``; large buffers go into ``arena`` blocks if one is given.

    Raises TypeError naming the type if the value cannot be serialized (nothing allocated).
    """
    t = type(value)
    try:
        if t in _LEAF:
            if t is not bytes or len(value) < OOB_MIN or arena is None:
                return _menc(value)
            return _oob_raw(b"b", value, arena)
        if t is list:
            if _exact_list(value):
                return _menc(value)
            if _EXT_TYPES and (data := _encode_ext(_XLIST, value)) is not None:
                return data
        elif t is dict:
            if _exact_dict(value):
                return _menc(value)
        elif t is tuple:
            if _exact_list(value):
                return _TUPLE + _menc(value)
            if _EXT_TYPES and (data := _encode_ext(_XTUPLE, value)) is not None:
                return data
        elif t is bytearray or t is memoryview:
            return _encode_buffer(value, arena)
    except _MSGPACK_FAIL:
        pass  # out of msgpack's range (huge int, lone surrogate, deep nesting): pickle it
    return _encode_pickle(value, arena)


def _encode_pickle(value: Any, arena: Arena | None) -> bytes:
    bufs: list[pickle.PickleBuffer] = []
    callback = None
    if arena is not None:

        def callback(pb: pickle.PickleBuffer) -> bool:
            if pb.raw().nbytes < OOB_MIN:
                return True  # in band
            bufs.append(pb)
            return False

    if isinstance(value, BaseException):
        _tb.mark(value)  # its frames travel with it (restored by decode)
    try:
        data = _pdumps(value, protocol=5, buffer_callback=callback)
    except Exception as e:
        data = _cloudpickle(value, e, callback)
    else:
        if b"__main__" in data:
            # Pickled by reference to the user's script, which no other process imports:
            # cloudpickle sends __main__ functions and classes by value instead.
            bufs.clear()
            data = _cloudpickle(value, pickle.PicklingError("__main__ by reference"), callback)
    if not bufs:
        return data
    assert arena is not None
    offs, lens = _copy_in([pb.raw() for pb in bufs], arena)
    return _OOBTAG + _menc([b"p", offs, lens, data])


def _cloudpickle(value: Any, first: Exception, callback: Any) -> bytes:
    try:
        return cloud_dumps(value, buffer_callback=callback)
    except Uncrossable as e:
        if e.offending is type(value):
            raise TypeError(str(e)) from None
        raise TypeError(f"cannot send a value of type {type(value).__qualname__} to another P: "
                        f"it holds a {e.offending.__qualname__}; {e.reason}") from None
    except Exception:
        pass
    raise TypeError(
        f"cannot serialize a value of type {type(value).__qualname__}: {first}"
    ) from first


def _copy_in(views: list[memoryview], arena: Arena) -> tuple[list[int], list[int]]:
    """Copy each buffer into an arena block (its offset) or, too large for the arena, into a
    segment of its own (minus its ticket's offset: ``segment.py``)."""
    offs: list[int] = []
    lens: list[int] = []
    mm = arena.map
    try:
        for m in views:
            n = m.nbytes
            if too_large_for_arena(n, arena.heap_bytes):
                off = -arena.segments.put(m)
            else:
                try:
                    off = arena.alloc(n)
                except MemoryError:  # no room left in the heap: a segment of its own
                    off = -arena.segments.put(m)
                else:
                    mm[off : off + n] = m
            offs.append(off)
            lens.append(n)
    except BaseException:
        _free_blocks(offs, arena)
        raise
    return offs, lens


def _free_blocks(offs: list[int], arena: Arena) -> None:
    for off in offs:
        if off > 0:
            arena.decref(off)
        else:
            arena.segments.drop(-off)


def _oob_raw(kind: bytes, value: Any, arena: Arena, meta: Any = None) -> bytes:
    m = memoryview(value)
    flat = m if m.format == "B" and m.ndim == 1 else m.cast("B")
    offs, lens = _copy_in([flat], arena)
    return _OOBTAG + _menc([kind, offs, lens, meta])


def _encode_buffer(value: bytearray | memoryview, arena: Arena | None) -> bytes:
    m = memoryview(value)
    if not m.c_contiguous:
        m = memoryview(m.tobytes()).cast(m.format, m.shape) if m.ndim else m
    if type(value) is bytearray:
        if arena is not None and m.nbytes >= OOB_MIN:
            return _oob_raw(b"ba", m, arena)
        return _encode_pickle(value, None)
    meta = [m.format, list(m.shape)]
    if arena is not None and m.nbytes >= OOB_MIN:
        return _oob_raw(b"mv", m, arena, meta)
    return _MVTAG + _menc([meta, m.tobytes()])


def _cast(view: memoryview, meta: list[Any]) -> memoryview:
    fmt, shape = meta
    if fmt == "B" and len(shape) == 1:
        return view
    return view.cast(fmt, shape)


def decode(buf: bytes, arena: Arena | None = None) -> Any:
    """The value encoded in ``buf``. Takes ownership of out-of-band blocks (needs ``arena``)."""
    b0 = buf[0]
    if b0 == _EXT:
        if buf[1] == 1:  # a tuple, the common case of a result pair: _decode_ext's first case
            return _tdec(buf[2:])
        return _decode_ext(buf, arena)
    if b0 == _PICKLE and len(buf) > 1:
        v = _ploads(buf)
        if isinstance(v, BaseException):
            _tb.restore(v)
        return v
    return _mdec(buf)


def _decode_ext(buf: bytes, arena: Arena | None) -> Any:
    sub = buf[1]
    body = memoryview(buf)[2:]
    if sub == 1:
        return _tdec(body)
    if sub == 4:
        return proc.xtdec(body)
    if sub == 5:
        return proc.xldec(body)
    if sub == 3:
        meta, data = _mdec(body)
        return _cast(memoryview(bytearray(data)), meta)
    if sub != 2:
        raise ValueError(f"unknown codec tag 0xc1 0x{sub:02x}")
    if arena is None:
        raise ValueError("an out-of-band message needs the arena to decode")
    kind, offs, lens, extra = _mdec(body)
    if kind == b"b" or kind == b"ba":
        off, n = offs[0], lens[0]
        if off > 0:
            data = arena.map[off : off + n]
            arena.decref(off)
        else:
            with arena.segments.take(-off) as seg:
                data = bytes(seg)
        return data if kind == b"b" else bytearray(data)
    views = [arena.lease(off, n) if off > 0 else arena.segments.take(-off)
             for off, n in zip(offs, lens, strict=True)]
    if kind == b"mv":
        return _cast(views[0], extra)
    return _ploads(extra, buffers=views)


def holds_blocks(buf: bytes) -> bool:
    """Whether the message ``buf`` names out-of-band blocks of the arena."""
    return buf[0] == _EXT and buf[1] == 2


def set_ref_markers(*markers: bytes) -> None:
    """Say which pickled messages name counted shared objects (``discard`` decodes those), in
    addition to the markers said before: the bytes found in every pickle naming one, one per
    kind (``proc.ref_marks``; the process layer sets them; empty while none is counted)."""
    proc.ref_marks = tuple(dict.fromkeys((*proc.ref_marks, *(m for m in markers if m))))


def _names_counted(raw: bytes) -> bool:
    return any(m in raw for m in proc.ref_marks)


def discard(buf: bytes, arena: Arena | None) -> None:
    """Free the out-of-band blocks of a message that will not be decoded. A message naming a
    counted shared object is decoded and dropped instead, which releases its names."""
    b0, b1 = buf[0], buf[1] if len(buf) > 1 else 0
    if b0 == _EXT and (b1 == 4 or b1 == 5) or (
            proc.ref_marks and arena is not None and (b0 == _PICKLE or b0 == _EXT and b1 == 2)
            and _names_counted(bytes(buf))):  # a pickle naming counted objects
        try:
            decode(buf, arena)  # takes the out-of-band blocks, freed as the value dies
        except Exception:  # noqa: S110  # a name not released only leaks its object
            pass
        return
    if buf[0] == _EXT and buf[1] == 2 and arena is not None:
        _free_blocks(_mdec(memoryview(buf)[2:])[1], arena)


_SCALAR_TYPES = (int, float, str, bytes, bool)


class TypedCodec:
    """Encoding for a channel of element type ``tp`` (``Chan[T]``): validates, then encodes.

    Types msgspec can describe are validated strictly by msgspec (no coercion: ``"1"`` is not an
    ``int``, ``True`` is not an ``int``) and decoded as ``tp``; any other class is checked with
    ``isinstance`` and travels through the untyped codec.
    """

    def __init__(self, tp: Any, arena: Arena | None = None) -> None:
        self.type = tp
        self.arena = arena
        self._name = getattr(tp, "__qualname__", None) or repr(tp)
        self._dec: Any = None
        try:
            if not isinstance(msgspec.inspect.type_info(tp), msgspec.inspect.CustomType):
                self._dec = msgspec.msgpack.Decoder(tp, strict=True).decode
        except TypeError:
            pass
        self._exact = tp if tp in _SCALAR_TYPES else None
        self._deep = validator(tp) if self._dec is not None else None

    def validate(self, value: Any) -> None:
        """Raise TypeError if ``value`` is not a ``tp``."""
        if self._exact is not None:
            t = type(value)
            if t is self._exact or (self._exact is float and t is int):
                return
            raise TypeError(self._mismatch(value, f"expected `{self._name}`"))
        if self._dec is None:
            if not isinstance(value, self.type):
                raise TypeError(self._mismatch(value, f"expected `{self._name}`"))
            return
        try:
            self._deep(value)
        except msgspec.ValidationError as e:
            raise TypeError(self._mismatch(value, str(e))) from None

    def _mismatch(self, value: Any, why: str) -> str:
        return f"cannot send {type(value).__qualname__} on a channel of {self._name}: {why}"

    def encode(self, value: Any) -> bytes:
        """Validate, then encode (TypeError before anything is written)."""
        self.validate(value)
        if self._dec is None or (
            self.arena is not None
            and type(value) in (bytes, bytearray, memoryview)
            and len(memoryview(value).cast("B")) >= OOB_MIN
        ):
            return encode(value, self.arena)
        try:
            return _menc(value)
        except _MSGPACK_FAIL:
            return _encode_pickle(value, self.arena)  # e.g. a class msgspec does not know inside

    def decode(self, buf: bytes) -> Any:
        """The ``tp`` value in ``buf``."""
        b0 = buf[0]
        if self._dec is None or b0 == _EXT or (b0 == _PICKLE and len(buf) > 1):
            return decode(buf, self.arena)
        return self._dec(buf)
