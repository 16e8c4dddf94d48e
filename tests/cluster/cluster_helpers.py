"""Helpers of the cluster tests: finding the processes a cluster run started."""

from __future__ import annotations

import time

from csp_mp._cluster.life import MARKER


def marked_processes() -> list[int]:
    """Pids of processes a csp_mp cluster run started (by the marker in their environment)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if MARKER in p.environ():
                out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return out


def wait_no_marked(timeout: float = 10.0) -> list[int]:
    """Marked processes still there after ``timeout`` seconds (polled, bounded)."""
    deadline = time.monotonic() + timeout
    left = marked_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked_processes()
    return left
