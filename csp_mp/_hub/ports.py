"""The hub's edges to other threads: what wakes an idle hub (``Waker``, the ``Wakes`` protocol
the process layer's doorbell also follows), what an M thread posts back (``Completion``), and
the error for a blocking operation called where no goroutine of the hub runs.

Invariants:
- A ``Waker``'s post is never lost: a post before the wait makes that wait return at once.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from greenlet import getcurrent, greenlet

from .._errors import InternalError
from .g import G


class Waker:
    """Wakes an idle hub from any thread; a post is never lost (a counting semaphore)."""

    def __init__(self) -> None:
        self._sem = threading.Semaphore(0)

    def post(self) -> None:
        """Wake the hub if it waits, else make its next wait return at once."""
        self._sem.release()

    def wait(self, timeout: float | None) -> bool:
        """Wait for a post or ``timeout`` seconds; True if posted."""
        return self._sem.acquire(timeout=timeout)


class Wakes(Protocol):
    """What wakes an idle hub from any thread: a ``Waker``, or the P's doorbell (``_mp``)."""

    def post(self) -> None:
        """Wake the hub if it waits, else make its next wait return at once."""

    def wait(self, timeout: float | None) -> bool:
        """Wait for a post or ``timeout`` seconds; True if posted."""


#: an M thread's outcome of a blocking call, posted to the hub: (the goroutine, ok, value or
#: exception); every other inbox entry is a call
Completion = tuple[G, bool, Any]


def wrong_context(thread_id: int, hub_glet: greenlet) -> BaseException:
    """The error for a blocking operation called outside the goroutines of the hub whose thread
    is ``thread_id`` and whose greenlet is ``hub_glet``."""
    if threading.get_ident() != thread_id:
        return RuntimeError(
            "csp_mp blocking operation called from a thread that is not the runtime's; "
            "use csp_mp.blocking() from goroutines or run everything inside csp_mp.run()")
    if getcurrent() is hub_glet:
        return InternalError("a blocking operation ran in the hub (timer callback?)")
    return RuntimeError("csp_mp blocking operation called outside a goroutine")


__all__ = ["Completion", "Waker", "Wakes", "wrong_context"]
