"""Goroutine-aware locks and waits that work across Ps; mirrors Go package ``sync``."""

from ._sync import Cond as Cond
from ._sync import Mutex as Mutex
from ._sync import Once as Once
from ._sync import RWMutex as RWMutex
from ._sync import WaitGroup as WaitGroup

__all__ = ["Cond", "Mutex", "Once", "RWMutex", "WaitGroup"]
