"""The goroutine leak, and its fix with a context and a buffered channel.

``leaky`` starts a goroutine that sends on an unbuffered channel nobody reads: the goroutine
blocks in "chan send" forever, and every call leaks one more. ``safe`` gives the goroutine a way
out: a buffered channel (the send never waits) and a ``select`` on ``ctx.done()``, and it closes
its channel when it leaves.

    python examples/leak.py [CALLS]
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import csp_mp
from csp_mp import Chan, context, go, runtime, select
from csp_mp.context import Context


def send_answer(ch: Chan) -> None:
    ch.send(42)  # blocks forever: nobody receives


def leaky() -> Chan:
    ch: Chan = Chan()
    go(send_answer, ch)
    return ch


def send_or_quit(ctx: Context, ch: Chan) -> None:
    try:
        select((ch.send, 42), ctx.done().recv)
    finally:
        ch.close()  # Go's ``defer close(ch)``


def safe(ctx: Context) -> Chan:
    ch: Chan = Chan(1)
    go(send_or_quit, ctx, ch)
    return ch


def blocked_in(reason: str) -> int:
    """How many goroutines ``runtime.stack()`` shows parked for ``reason`` (an entry of several
    goroutines stopped at the same place starts with their number: "20 goroutines [...]")."""
    heads = re.finditer(rf"^(?:(\d+) goroutines|goroutine \d+) \[{re.escape(reason)}\]",
                        runtime.stack(), re.M)
    return sum(int(m[1] or 1) for m in heads)


def settle(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the other goroutines run until ``done()`` holds (or ``timeout`` seconds pass)."""
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        runtime.gosched()


def main(calls: int = 100) -> tuple[int, int]:
    base = runtime.num_goroutine()
    print(f"goroutines at start: {base}")

    for _ in range(calls):
        leaky()  # the channel is dropped, its sender waits forever
    settle(lambda: blocked_in("chan send") >= calls)
    leaked = runtime.num_goroutine() - base
    stuck = blocked_in("chan send")
    print(f"after {calls} calls of leaky(): {base + leaked} goroutines, "
          f"{leaked} leaked ({stuck} blocked in 'chan send')")

    ctx, cancel = context.with_cancel(context.background())
    before = runtime.num_goroutine()
    for _ in range(calls):
        safe(ctx)  # the channel is dropped here too
    cancel()
    settle(lambda: runtime.num_goroutine() <= before)
    left = runtime.num_goroutine() - before
    print(f"after {calls} calls of safe(ctx) and cancel(): {left} more goroutines "
          f"({'fixed' if left == 0 else 'still leaking'})")
    print("main returns: the runtime stops the leaked goroutines with it")
    return leaked, left


if __name__ == "__main__":
    csp_mp.run(main, *[int(a) for a in sys.argv[1:2]])
