"""Does a value match a type msgspec knows, all the way down?

``msgspec.convert(v, T, strict=True)`` checks containers item by item but passes a
``msgspec.Struct`` (or dataclass, attrs) instance of the right class through without looking at
its fields: ``Point("one", 2)`` passes as a ``Point`` of two ints. For types that hold such
classes anywhere, the value is also encoded to msgpack and decoded strictly as ``T``, which
checks every field, nested ones included. Types without them pay only the ``convert``.

Rejected: ``to_builtins`` + ``convert`` (turns ``bytes`` into base64 text, which the strict
conversion back then rejects); checking Structs with per-field ``isinstance`` (misses
``list[int]`` fields, unions, constraints).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi

__all__ = ["validator"]

_CLASSES = (mi.StructType, mi.DataclassType)
_ENCODE_FAIL = (TypeError, ValueError, OverflowError, msgspec.EncodeError)


def _holds_classes(info: Any, depth: int = 0) -> bool:
    if isinstance(info, _CLASSES):
        return True
    if depth > 16 or not isinstance(info, mi.Type):
        return False
    for name in getattr(type(info), "__struct_fields__", ()):
        v = getattr(info, name, None)
        items = v if isinstance(v, tuple) else (v,)
        for x in items:
            x = getattr(x, "type", x)  # a Field of a TypedDict or NamedTuple
            if isinstance(x, mi.Type) and _holds_classes(x, depth + 1):
                return True
    return False


def validator(tp: Any) -> Callable[[Any], None]:
    """A function raising ``msgspec.ValidationError`` for a value that is not a ``tp``."""
    convert = msgspec.convert
    try:
        deep = _holds_classes(mi.type_info(tp))
    except Exception:
        deep = False
    if not deep:
        def check(v: Any) -> None:
            convert(v, tp, strict=True)
        return check
    enc = msgspec.msgpack.Encoder().encode
    dec = msgspec.msgpack.Decoder(tp, strict=True).decode

    def check_deep(v: Any) -> None:
        convert(v, tp, strict=True)
        try:
            data = enc(v)
        except _ENCODE_FAIL:
            return  # a field msgpack cannot carry (an ``Any`` holding an object): as convert said
        dec(data)
    return check_deep
