"""L3: channels. A local state per P, a shared state once promoted, select over both."""

from .chan import Chan, ChanStats, default, nilchan, select

__all__ = ["Chan", "ChanStats", "default", "nilchan", "select"]
