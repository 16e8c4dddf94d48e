"""Test helpers that wait on runtime state, never on time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import csp_mp
from csp_mp import Chan, runtime
from csp_mp._testing.stacks import parse_stack

DEADLINE = 10.0  # seconds a wait may take before the test fails (far above any real need)


def run1(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``csp_mp.run(main, *args, procs=1, **kwargs)``."""
    return csp_mp.run(main, *args, procs=1, **kwargs)


def wait_until(cond: Callable[[], bool], what: str = "condition",
               timeout: float = DEADLINE) -> None:
    """From a goroutine: yield the P until ``cond()`` holds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{runtime.stack()}")
        runtime.gosched()


def wait_blocked(ch: Chan, senders: int = 0, receivers: int = 0) -> None:
    """Wait until at least ``senders``/``receivers`` goroutines are parked on ``ch``."""
    def ok() -> bool:
        st = ch.stats()
        return st.senders_waiting >= senders and st.receivers_waiting >= receivers
    wait_until(ok, f"{senders} senders / {receivers} receivers blocked on {ch!r}")


def wait_goroutines(n: int) -> None:
    """Wait until ``runtime.num_goroutine()`` equals ``n``."""
    wait_until(lambda: runtime.num_goroutine() == n, f"{n} goroutines")


def count_reason(reason: str) -> int:
    """How many goroutines ``runtime.stack()`` shows parked with ``reason``."""
    return sum(e.count for e in parse_stack(runtime.stack()) if e.state == reason)


def wait_reason(reason: str, count: int = 1) -> None:
    """Wait until ``runtime.stack()`` shows ``count`` goroutines parked with ``reason``."""
    wait_until(lambda: count_reason(reason) >= count, f"{count} goroutines in [{reason}]")
