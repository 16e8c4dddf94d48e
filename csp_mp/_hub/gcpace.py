"""How often the cyclic collector runs while a hub runs.

Every goroutine allocates container objects (its record, a greenlet, waiters); with the default
threshold the cyclic collector ran so often that it took 40-60 % of the time of a burst of
spawns or of parking 100 k goroutines. So a running hub collects generation 0 every 50 k
allocations instead of 700, and puts the user's setting back when it stops.
"""

from __future__ import annotations

import gc

GC_GEN0_THRESHOLD = 50_000


def raise_threshold() -> tuple[int, ...] | None:
    """Collect generation 0 every ``GC_GEN0_THRESHOLD`` allocations; return the thresholds to
    restore, or None when left alone (the user changed them)."""
    saved = gc.get_threshold()
    if saved[0] != 700:
        return None
    gc.set_threshold(GC_GEN0_THRESHOLD, *saved[1:])
    return saved


def restore(saved: tuple[int, ...] | None) -> None:
    """Put back what ``raise_threshold`` returned (nothing for None)."""
    if saved is not None:
        gc.set_threshold(*saved)


__all__ = ["GC_GEN0_THRESHOLD", "raise_threshold", "restore"]
