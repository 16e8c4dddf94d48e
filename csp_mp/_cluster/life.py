"""How a process of a cluster run takes care of itself: it dies with its parent, runs at nice 0
when it may, and carries the run's marker in its environment (tests find leftovers by it)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import warnings

#: the environment variable naming the run in every process a cluster run starts
MARKER = "CSP_MP_CLUSTER_RUN"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask for SIGKILL when the parent dies; exit now if ``parent`` is already gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def nice_zero() -> None:
    """Run at nice 0 (a Ray worker runs at 15, which its children inherit); warn naming
    ``RAY_worker_niceness`` when the system does not allow it."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError as exc:
        warnings.warn(f"csp_mp node runtime stays at nice {os.getpriority(os.PRIO_PROCESS, 0)} "
                      f"({exc}); start Ray with RAY_worker_niceness=0 to run it at full "
                      "priority", RuntimeWarning, stacklevel=2)
    try:  # Ray's workers are the OOM killer's first choice: the runtime need not be
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("0")
    except OSError:
        pass
