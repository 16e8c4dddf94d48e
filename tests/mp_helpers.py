"""Helpers for the multi-P tests: put a goroutine on a chosen P, and bodies that travel.

This module is imported by the worker Ps whenever a goroutine body defined here migrates, so it
imports nothing heavier than csp_mp (no pytest). Every wait is on runtime state with a deadline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
from helpers import DEADLINE, count_reason, wait_reason, wait_until  # noqa: F401 (re-exported)

from csp_mp import (
    Chan,
    Cond,
    Mutex,
    Once,
    RWMutex,
    WaitGroup,
    atomic,
    go,
    go_local,
    nilchan,
    runtime,
    select,
)
from csp_mp import run as csp_run

BATCH = 8  # probe goroutines per attempt of ``go_on``
#: set (to 1) in the environment of a cluster run: ``go_on`` to another P means another node
ACROSS_NODES = "CSP_MP_TEST_ACROSS_NODES"


def run(main: Callable[..., Any], procs: int, *args: Any) -> Any:
    """``csp_mp.run(main, *args, procs=procs)``."""
    return csp_run(main, *args, procs=procs)


def other_p(procs: int) -> int:
    """The P a test puts its 'remote' goroutines on: the last one (P0 when there is one P)."""
    return procs - 1


def _probe(target: int, won: atomic.Int64, fn: Callable[..., Any], args: tuple,
           reply: Chan) -> None:
    if runtime.current_p() == target and won.compare_and_swap(0, 1):
        reply.send(True)
        fn(*args)
    else:
        reply.send(False)


def go_on(p: int, fn: Callable[..., Any], *args: Any, timeout: float = DEADLINE) -> int:
    """From a goroutine: start ``fn(*args)`` in a goroutine that runs on P ``p``.

    On the caller's own P it is a ``go_local``; otherwise probe goroutines are spawned with
    ``go()`` until one is stolen by P ``p``, which then runs ``fn`` (AssertionError after
    ``timeout``). Returns once ``fn`` has started or is about to, with how many goroutines it
    made (``fn``'s included). Call it from one goroutine at a time: two Ps each running their
    own probes are never idle, so neither steals.

    With ``ACROSS_NODES`` set in the environment, in a cluster run (the semantic cases run
    across nodes, tests/cluster/test_cluster_semantics.py) any P but the caller's means the next
    node: ``fn`` then runs there, and every value crosses machines.
    """
    if p == runtime.current_p():
        go_local(fn, *args)
        return 1
    if os.environ.get(ACROSS_NODES) and runtime.num_nodes() > 1:
        from csp_mp._cluster.ship import go_node

        go_node((runtime.current_node() + 1) % runtime.num_nodes(), fn, *args)
        return 1
    if p >= runtime.gomaxprocs():
        raise ValueError(f"no P{p} in a runtime of {runtime.gomaxprocs()} Ps")
    won = atomic.Int64(0)
    reply: Chan = Chan(BATCH)
    deadline = time.monotonic() + timeout
    made = 0
    while True:
        for _ in range(BATCH):
            go(_probe, p, won, fn, args, reply)
        made += BATCH
        got = [reply.recv() for _ in range(BATCH)]
        if any(got):
            return made
        if time.monotonic() > deadline:
            raise AssertionError(f"no goroutine reached P{p} within {timeout}s\n"
                                 f"{runtime.stack()}")


# ---------------------------------------------------------------- goroutine bodies


def report_p(out: Chan) -> None:
    """Send ``(P, pid)`` of the goroutine running this."""
    out.send((runtime.current_p(), os.getpid()))


def send_all(ch: Chan, values: list) -> None:
    """Send every value of ``values`` on ``ch``, in order."""
    for v in values:
        ch.send(v)


def recv_n(ch: Chan, n: int, out: Chan) -> None:
    """Receive ``n`` values from ``ch`` and send the list of them on ``out``."""
    out.send([ch.recv() for _ in range(n)])


def recv_all(ch: Chan, out: Chan) -> None:
    """Receive until ``ch`` is closed; send the list of values (``for v in ch``) on ``out``."""
    out.send(list(ch))


def recv_ok_to(ch: Chan, out: Chan) -> None:
    """One ``recv_ok`` on ``ch``; send its ``(value, ok)`` on ``out``."""
    out.send(ch.recv_ok())


def echo(inp: Chan, out: Chan) -> None:
    """Send back on ``out`` each value received from ``inp`` until ``inp`` is closed."""
    for v in inp:
        out.send(v)
    out.close()


def echo_types(inp: Chan, out: Chan) -> None:
    """Send back ``(value, type name)`` for each value of ``inp`` until it is closed."""
    for v in inp:
        out.send((v, type(v).__name__))
    out.close()


def send_catching(ch: Chan, v: Any, out: Chan) -> None:
    """Send ``v`` on ``ch``; report the exception type name (or None) on ``out``."""
    try:
        ch.send(v)
    except Exception as exc:
        out.send(type(exc).__name__)
    else:
        out.send(None)


def block_forever(ch: Chan) -> None:
    """Receive from ``ch`` (which nobody sends on)."""
    ch.recv()


def spin(n: int) -> int:
    """Pure-Python CPU work; returns a checksum."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFF
    return acc


def spin_to(n: int, out: Chan) -> None:
    """``spin(n)``, result on ``out``."""
    out.send(spin(n))


def noop(*args: Any) -> None:
    """Do nothing."""
    return None


def raise_value_error(msg: str) -> None:
    """Raise ValueError(msg)."""
    raise ValueError(msg)


class Unpicklable(Exception):
    """An exception that cannot travel between processes (its argument is a lock)."""

    def __init__(self, msg: str) -> None:
        import threading

        super().__init__(msg, threading.Lock())
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


def raise_unpicklable(msg: str) -> None:
    """Raise an exception whose pickling fails."""
    raise Unpicklable(msg)


class Point(msgspec.Struct, frozen=True):
    """A typed-channel value that both Ps know by reference."""

    x: int
    y: float


class Segment(msgspec.Struct, frozen=True):
    """A typed-channel value holding Structs: nested fields are validated too."""

    a: Point
    rest: list[Point]


def send_typed(ch: Chan, good: list, bad: Any, out: Chan) -> None:
    """Send ``bad`` on typed ``ch`` (reporting the error type and message on ``out``), then
    every value of ``good``."""
    try:
        ch.send(bad)
    except Exception as exc:
        out.send((type(exc).__name__, str(exc)))
    else:
        out.send(None)
    for v in good:
        ch.send(v)


def feed(ch: Chan, values: list) -> None:
    """Send every value of ``values`` on ``ch``, then close it."""
    for v in values:
        ch.send(v)
    ch.close()


# ---------------------------------------------------------------- bodies of test_mp_sync
# (here rather than in the test module, so a P that steals one does not import pytest)


def locked_increments(mu: Mutex, counter: atomic.Int64, k: int, wg: WaitGroup) -> None:
    """``k`` non-atomic increments of ``counter`` under ``mu``, then ``wg.done()``."""
    for _ in range(k):
        with mu:
            v = counter.load()
            runtime.gosched()  # let others try to get in while we hold it
            counter.store(v + 1)
    wg.done()


def reader(rw: RWMutex, inside: atomic.Int64, writers: atomic.Int64, bad: atomic.Int64,
           peak: atomic.Int64, k: int, wg: WaitGroup) -> None:
    """``k`` read sections: count readers inside, record the peak, flag a writer seen."""
    for _ in range(k):
        with rw.rlocker():
            n = inside.add(1)
            while True:
                p = peak.load()
                if n <= p or peak.compare_and_swap(p, n):
                    break
            if writers.load():
                bad.add(1)
            runtime.gosched()
            inside.add(-1)
    wg.done()


def writer(rw: RWMutex, inside: atomic.Int64, writers: atomic.Int64, bad: atomic.Int64,
            k: int, wg: WaitGroup) -> None:
    """``k`` write sections: flag any other writer or reader seen inside."""
    for _ in range(k):
        with rw:
            if writers.add(1) != 1 or inside.load():
                bad.add(1)
            runtime.gosched()
            writers.add(-1)
    wg.done()


def once_caller(once: Once, calls: atomic.Int64, finished: atomic.Int64, out: Chan) -> None:
    """``once.do`` a slow body; report whether it had finished when ``do`` returned."""
    def body() -> None:
        calls.add(1)
        for _ in range(20):
            runtime.gosched()
        finished.store(1)

    once.do(body)
    out.send(finished.load())  # do() returns only after the one call has finished


def cond_waiter(cond: Cond, ready: atomic.Int64, out: Chan) -> None:
    """Wait on ``cond`` until ``ready``; report the P."""
    with cond.L:
        while not ready.load():
            cond.wait()
    out.send(runtime.current_p())


def adder(n: atomic.Int64, k: int, wg: WaitGroup) -> None:
    """``n.add(1)`` ``k`` times, then ``wg.done()``."""
    for _ in range(k):
        n.add(1)
    wg.done()


def cas_racer(word: atomic.Int64, flag: atomic.Bool, me: int, out: Chan) -> None:
    """Race for ``word`` (0 -> me) and ``flag`` (False -> True); report the two results."""
    out.send((word.compare_and_swap(0, me), flag.compare_and_swap(False, True)))


def wait_done(ctx: Any, out: Chan) -> None:
    """Wait for ``ctx.done()``; report ``(P, type of ctx.err())``."""
    ctx.done().recv()
    err = ctx.err()
    out.send((runtime.current_p(), type(err).__name__))


def ok_task(out: Chan) -> None:
    """Report the P."""
    out.send(runtime.current_p())


def failing_task(msg: str) -> None:
    """Raise KeyError(msg)."""
    raise KeyError(msg)


def group_member(g: Any, started: Chan, fn: Callable[..., Any], *args: Any) -> None:
    """``g.go(fn, *args)`` from this P; report the P once it is in the group."""
    g.go(fn, *args)
    started.send(runtime.current_p())


# ---------------------------------------------------------------- bodies of test_mp_stress


def produce(ch: Chan, me: int, n: int, wg: WaitGroup) -> None:
    """Send ``(me, 0) .. (me, n-1)`` on ``ch``, then ``wg.done()``."""
    for i in range(n):
        ch.send((me, i))
    wg.done()


def consume(ch: Chan, out: Chan) -> None:
    """Receive until ``ch`` is closed; send (this P, the list received in order) on ``out``."""
    out.send((runtime.current_p(), list(ch)))


def select_sender(chans: list, me: int, n: int, out: Chan, wg: WaitGroup) -> None:
    """``n`` selects, each sending ``(me, i, k)`` on whichever channel ``k`` takes it; the list
    of chosen ``k`` goes on ``out``."""
    chosen = []
    for i in range(n):
        k, _ = select(*[(c.send, (me, i, j)) for j, c in enumerate(chans)])
        chosen.append(k)
    out.send((me, chosen))
    wg.done()


def select_receiver(chans: list, out: Chan) -> None:
    """Receive with one select over every channel until all are closed; send
    ``[(case, value), ...]`` on ``out``."""
    cases = [c.recv_ok for c in chans]
    live = len(cases)
    got = []
    while live:
        k, (v, ok) = select(*cases)
        if not ok:
            cases[k] = nilchan.recv_ok
            live -= 1
            continue
        got.append((k, v))
    out.send(got)


def timed_spin(n: int, out: Chan) -> None:
    """``spin(n)``; send ``(P, checksum)`` on ``out``."""
    out.send((runtime.current_p(), spin(n)))


def report_args(out: Chan, *args: Any) -> None:
    """Send ``(P, [(arg, type name), ...])`` of the goroutine running this."""
    out.send((runtime.current_p(), [(a, type(a).__name__) for a in args]))
