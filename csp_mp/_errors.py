"""Every exception and warning csp_mp raises.

Leaf module: imports nothing of ours. Messages copy Go's wording where Go has one.
"""

from __future__ import annotations

__all__ = [
    "ClosedChannelError",
    "DeadlockError",
    "InternalError",
    "MigrationWarning",
    "Panic",
    "ProcessLost",
    "BlockingWarning",
    "GoroutineExit",
    "RemoteError",
]


class ClosedChannelError(RuntimeError):
    """Raised when sending on a closed channel, closing a closed channel, or closing ``nilchan``."""

    __module__ = "csp_mp"


class Panic(RuntimeError):
    """Raised by ``run()`` when an exception escapes a goroutine.

    The message names the goroutine, the P it ran on and that P's process id (``p`` and
    ``pid``; -1 and 0 when unknown); ``__cause__`` is the original exception (or a
    :class:`RemoteError` standing in for one that could not cross a process).
    """

    __module__ = "csp_mp"

    def __init__(self, message: str, goroutine: str = "", traceback_text: str = "",
                 p: int = -1, pid: int = 0) -> None:
        super().__init__(message)
        self.goroutine = goroutine
        self.traceback_text = traceback_text
        self.p = p
        self.pid = pid

    def __reduce__(self):  # keep the extra fields across pickling
        return (type(self), (str(self), self.goroutine, self.traceback_text, self.p, self.pid))


class DeadlockError(RuntimeError):
    """Raised by ``run()`` when every goroutine is blocked and nothing can wake one.

    ``stack`` holds the ``runtime.stack()`` text taken at the moment of detection, and the message
    ends with it.
    """

    __module__ = "csp_mp"

    def __init__(self, message: str = "all goroutines are asleep - deadlock!", stack: str = ""):
        full = message if not stack else f"{message}\n\n{stack}"
        super().__init__(full)
        self.stack = stack

    def __reduce__(self):
        return (_rebuild_deadlock, (str(self), self.stack))


def _rebuild_deadlock(text: str, stack: str) -> DeadlockError:
    err = DeadlockError.__new__(DeadlockError)
    RuntimeError.__init__(err, text)
    err.stack = stack
    return err


class ProcessLost(RuntimeError):
    """Raised by ``run()`` when a P process dies (killed, out of memory, crashed).

    ``p`` is the lost P's index and ``goroutines`` the descriptions of the goroutines lost with it.
    """

    __module__ = "csp_mp"

    def __init__(self, message: str, p: int = -1, goroutines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.p = p
        self.goroutines = tuple(goroutines)

    def __reduce__(self):
        return (type(self), (str(self), self.p, self.goroutines))


class RemoteError(Exception):
    """Stands in for an exception that could not be pickled across processes.

    Carries the original type name, message and the remote traceback text.
    """

    __module__ = "csp_mp"

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self):
        return (type(self), (self.type_name, self.message, self.traceback_text))

    def __str__(self) -> str:
        base = f"{self.type_name}: {self.message}"
        if self.traceback_text:
            return f"{base}\n\nRemote traceback:\n{self.traceback_text}"
        return base


class MigrationWarning(RuntimeWarning):
    """Warned once per function when a goroutine that captures mutable state moves to another P,
    and once per function and argument when a goroutine on another P than its spawner's changed
    a plain ``list``, ``dict`` or NumPy array it received (a copy)."""

    __module__ = "csp_mp"


class BlockingWarning(RuntimeWarning):
    """Warned once per call site when a goroutine blocks its P's hub thread in foreign code."""

    __module__ = "csp_mp"


class GoroutineExit(BaseException):
    """Thrown into a goroutine to stop it when the program ends (like ``GreenletExit``)."""

    __module__ = "csp_mp"


class InternalError(AssertionError):
    """Raised when one of the runtime's own invariants is broken: a bug in csp_mp."""

    __module__ = "csp_mp"
