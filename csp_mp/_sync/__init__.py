"""L4: sync primitives built on Sema and atomics."""

from .primitives import Cond, Mutex, Once, RWMutex, WaitGroup
from .sema import Sema

__all__ = ["Cond", "Mutex", "Once", "RWMutex", "WaitGroup", "Sema"]
