"""Atomic values shared by every P; mirrors Go package ``sync/atomic`` (``Int64``, ``Bool``)."""

from ._atomic import Bool as Bool
from ._atomic import Int64 as Int64

__all__ = ["Bool", "Int64"]
