"""Sleeping, timers and tickers that park only the calling goroutine; mirrors Go's ``time``."""

from ._time import Ticker as Ticker
from ._time import Timer as Timer
from ._time import after as after
from ._time import after_func as after_func
from ._time import sleep as sleep
from ._time import tick as tick

__all__ = ["Ticker", "Timer", "after", "after_func", "sleep", "tick"]
