"""Machine-independent costs of the hot paths: instructions and bytecodes per operation.

Wall-clock figures on a shared 2-vCPU machine move by ±25 % between runs; these do not. Use them
to tell whether a change to a hot path made it cheaper, then confirm with the timed families.

- ``pingpong``, ``spawn``: CPU instructions per unbuffered hand-off and per ``go_local``
  spawn+finish on one P, counted by ``valgrind --tool=callgrind`` (runs of two sizes; the
  difference divided by the extra operations, so start-up cancels out).
- ``gosched``: CPU instructions per ``runtime.gosched()`` of two goroutines yielding to each
  other on one P, counted the same way.
- ``go``: CPU instructions P0 runs per ``go(fn, i, out)`` of a tiny task on two Ps (the
  compiled core's ``GoEntry`` and ``Spawner``), its entry's freeing at the end included, while a
  goroutine holds P1 (no time slices under valgrind: P1 steals nothing), counted the same way
  in P0's process alone.
- ``core-chan``, ``core-ring``: CPU instructions per pair of calls of the compiled core in one
  process, counted the same way: ``ChanOps.send((i, 1))`` and ``ChanOps.recv()`` on a buffered
  channel block, and ``Region.ring_try_put`` and ``ring_try_get`` of an 8-byte frame on a
  locked ring (500 puts, then 500 gets; the driving loop's bytecodes included, alike in both).
- ``shared-send``, ``shared-recv``: Python bytecodes per ``ch.send(i)`` and per ``ch.recv()`` of
  a ``Chan(1024)`` promoted to a shared channel inside ``run(procs=2)``, on the fast path (the
  buffer has room for each send, holds a value for each receive; nobody parks), counted by an
  opcode trace function over the operations alone (the driving loop is not traced).
- ``shared-handoff``: Python bytecodes per ``ch.send(i)`` on an unbuffered shared channel whose
  receiver, a goroutine of P1, is parked for each send (Go's hand-off to a waiting partner).
- ``tiny-p0``: Python bytecodes P0 executes per task of the windowed tiny-task fan-out on two Ps
  (``go(fn, i, out)`` plus the ``recv`` of its result), counted the same way.
- ``reply-fresh``, ``reply-kept``: Python bytecodes per request of issue 13's reply-channel
  loop, a client on P0 and a server on P1 (``reqs.send((i, reply))``, ``reply.recv()``; the
  server's ``reply.send(i)``), both Ps counted: with a fresh ``Chan(1)`` per request (promoted,
  named to P1, released and ended each time) and with one reply channel kept by the client.

Each bytecode count runs in a child interpreter once per runtime path: with ``CSP_MP_NATIVE=1``
(the compiled core) and ``CSP_MP_NATIVE=0`` (the pure-Python path), or only the one ``--native``
names. The functions that execute the most are printed under each count, and the bar from issue
11 beside it (<= 40 bytecodes per shared send or receive, its fast paths including the hand-off,
<= 150 per tiny task on P0).

    .venv/bin/python -m benchmarks.instr [pingpong spawn gosched go core-chan core-ring
                                          shared-send shared-recv shared-handoff tiny-p0
                                          reply-fresh reply-kept]
                                         [--native both|1|0]

``pingpong``, ``spawn``, ``gosched``, ``go``, ``core-chan`` and ``core-ring`` need ``valgrind``
on the PATH (they count one process, ``go`` P0's of two: they are counted once, on the default
path).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import re
import shutil
import sys
from typing import Any

SIZES = {"pingpong": (2_000, 12_000), "spawn": (2_000, 12_000), "core-chan": (5_000, 25_000),
         "core-ring": (5_000, 25_000), "gosched": (5_000, 25_000), "go": (5_000, 25_000)}
# hand-offs per round trip; goroutines per spawn; call pairs per pair; yields per round (two
# goroutines each yield once)
OPS_PER_UNIT = {"pingpong": 2, "spawn": 1, "core-chan": 1, "core-ring": 1, "gosched": 2,
                "go": 1}
CALLGRIND_KINDS = ("pingpong", "spawn", "core-chan", "core-ring", "gosched", "go")
CALLGRIND_UNITS = {"pingpong": "hand-off", "spawn": "goroutine", "core-chan": "send + recv",
                   "core-ring": "put + get", "gosched": "gosched", "go": "go() on P0"}
BYTECODE_KINDS = ("shared-send", "shared-recv", "shared-handoff", "tiny-p0", "reply-fresh",
                  "reply-kept")
KINDS = CALLGRIND_KINDS + BYTECODE_KINDS
#: issue 11's bars, bytecodes per operation
BARS = {"shared-send": 40, "shared-recv": 40, "shared-handoff": 40, "tiny-p0": 150}
UNITS = {"shared-send": "send", "shared-recv": "receive", "shared-handoff": "send",
         "tiny-p0": "task on P0", "reply-fresh": "request", "reply-kept": "request"}
TOP = 10


def _child(kind: str, n: int) -> None:
    from benchmarks.bench_local import csp_pingpong, csp_spawn

    if kind == "pingpong":
        csp_pingpong(n)
    elif kind == "spawn":
        csp_spawn(n, 1)
    elif kind == "gosched":
        _yields(n)
    elif kind == "go":
        _gos(n)
    else:
        _core_calls(kind, n)


def _yield_n(n: int, done: Any) -> None:
    from csp_mp import runtime

    for _ in range(n):
        runtime.gosched()
    done.send(1)


def _yields(n: int) -> None:
    """Two goroutines of one P, each calling ``runtime.gosched()`` ``n`` times."""
    import csp_mp

    def main() -> None:
        done = csp_mp.Chan(2)
        csp_mp.go_local(_yield_n, n, done)
        csp_mp.go_local(_yield_n, n, done)
        done.recv()
        done.recv()

    csp_mp.run(main, procs=1)


def _hold_p1(won: Any, release: Any) -> None:
    from csp_mp import runtime

    if runtime.current_p() != 1 or won.load():
        return
    won.store(1)
    while not release.load():  # no time slices under valgrind: P1 takes nothing meanwhile
        pass


def _gos(n: int) -> None:
    """P0 calls ``go(_tiny_task, i, out)`` ``n`` times while a goroutine holds P1."""
    import csp_mp
    from benchmarks.bench_parallel import _tiny_task

    def main() -> None:
        won, release = csp_mp.atomic.Int64(0), csp_mp.atomic.Int64(0)
        while not won.load():
            for _ in range(4):
                csp_mp.go(_hold_p1, won, release)
            csp_mp.sleep(0.001)
        out = csp_mp.Chan(1)
        for i in range(n):
            csp_mp.go(_tiny_task, i, out)
        release.store(1)

    csp_mp.run(main, procs=2)


def _core_calls(kind: str, n: int) -> None:
    """``n`` pairs of the compiled core's calls (``core-chan``, ``core-ring``), in batches of
    500 of each side, on an arena of their own."""
    from csp_mp._shm import layout as L
    from csp_mp._shm.arena import Arena
    from csp_mp._shm.codec import _mdec, _menc, _tdec, decode
    from csp_mp._shm.native import core
    from csp_mp._shm.ring import NativeRing

    arena = Arena.create(1 << 22, nlocks=8, use_native=True)
    r = arena.core
    try:
        if kind == "core-ring":
            ring = NativeRing.create(arena, 1 << 14, 2).offset
            for _ in range(n // 500):
                for _ in range(500):
                    r.ring_try_put(ring, b"abcdefgh")
                for _ in range(500):
                    r.ring_try_get(ring)
            return
        off = arena.alloc(L.CHAN_WORDS * 8)
        rings = [NativeRing.create(arena, size, 3).offset for size in (1 << 14, 512, 512)]
        words = {L.W_CAP: 1024, L.W_BUF: rings[0], L.W_RECVQ: rings[1], L.W_SENDQ: rings[2],
                 L.W_LOCK: 4, L.W_REFS: 1}
        for i in range(L.CHAN_WORDS):
            r.store(off + 8 * i, words.get(i, 0))
        r.store(off + 8 * L.W_MAGIC, L.CHAN_MAGIC)
        ops = core().ChanOps(r, off, _menc, _mdec, _tdec, lambda b: decode(b, arena), object(),
                             1 << 16, None)
        for i in range(n // 500):
            for _ in range(500):
                ops.send((i, 1))
            for _ in range(500):
                ops.recv()
    finally:
        arena.close()


def _instructions(kind: str, n: int) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           "-m", "benchmarks.instr", "--child", kind, str(n)]
    from benchmarks._common import run_child

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # no time-slice clock: valgrind delivers a SIGVTALRM of the run so late that it can land after
    # the interpreter's finalization gave the signal its default action back (the child dies)
    env = {**os.environ, "CSP_MP_PREEMPT": "0"}
    rc, _, err = run_child(cmd, env, root, 900)
    found = re.findall(r"==(\d+)== Collected : (\d+)", err)
    if rc != 0 or not found:
        raise RuntimeError(f"callgrind failed ({'timed out' if rc is None else f'exit {rc}'}): "
                           f"{err.strip()[-500:]}")
    if kind == "go":  # P0: the process valgrind started, the first to print
        first = re.search(r"==(\d+)==", err)
        return next(int(c) for pid, c in found if first is not None and pid == first.group(1))
    return max(int(c) for _, c in found)  # the measured process (forked helpers count far less)


def per_op(kind: str) -> float:
    """Instructions per operation of ``kind`` (one of ``CALLGRIND_KINDS``)."""
    small, large = SIZES[kind]
    delta = _instructions(kind, large) - _instructions(kind, small)
    return delta / ((large - small) * OPS_PER_UNIT[kind])


# the time-slice signal handlers: sysmon's SIGURG one and the CPU-time clock's SIGVTALRM one
_SIGNAL_HANDLERS = frozenset({"preempt.py:_handler", "slicer.py:_handler"})


class OpcodeCounter:
    """A ``sys.settrace`` function counting opcodes per function of every frame it sees start.

    Frames already running when it is installed (the caller's driving loop) are not traced.
    With ``skip_preemption``, what runs inside a preemption signal handler (the time-slice
    check, which tracing slows enough to trip now and then) is counted apart, in ``skipped``.
    """

    def __init__(self, skip_preemption: bool = False) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.skipped = 0
        self._skip = skip_preemption
        self._in_handler = 0

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        counts = self.counts
        code = frame.f_code
        name = f"{os.path.basename(code.co_filename)}:{code.co_name}"
        if self._skip and name in _SIGNAL_HANDLERS:
            self._in_handler += 1

            def handler(frame: Any, event: str, arg: Any) -> Any:
                if event == "return":
                    self._in_handler -= 1
                self.skipped += event == "opcode"
                return handler

            return handler

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                if self._in_handler:
                    self.skipped += 1
                else:
                    counts[name] += 1
            return local

        return local

    def per_op(self, n: int) -> tuple[float, list[tuple[str, float]]]:
        """Opcodes per operation over ``n`` operations, and the functions running the most (those
        under 0.05 per operation left out: the odd preemption tick the slow tracing invites)."""
        top = [(name, c / n) for name, c in self.counts.most_common(TOP) if c / n >= 0.05]
        return sum(self.counts.values()) / n, top


def tiny_p0(n: int = 20_000, window: int = 4096) -> tuple[float, list[tuple[str, float]]]:
    """Bytecodes P0 runs per windowed tiny task, and the ten functions running the most."""
    import csp_mp
    from benchmarks.bench_parallel import _tiny_task

    tracer = OpcodeCounter()

    def main() -> None:
        out = csp_mp.Chan(window)
        for i in range(window):  # warm-up: the callable's bytes cached, the channel shared
            csp_mp.go(_tiny_task, i, out)
        for _ in range(window):
            out.recv()
        sys.settrace(tracer)
        for i in range(window):
            csp_mp.go(_tiny_task, i, out)
        nxt = window
        for _ in range(n):
            out.recv()
            if nxt < n:
                csp_mp.go(_tiny_task, nxt, out)
                nxt += 1
        sys.settrace(None)

    csp_mp.run(main, procs=2)
    return tracer.per_op(n)


def shared_ops(rounds: int = 5, cap: int = 1024) -> dict[str, tuple[float, list]]:
    """Bytecodes per ``send`` and per ``recv`` of a shared ``Chan(cap)`` on the fast path.

    Inside ``run(procs=2)`` the channel is promoted by pickling it (what happens when its handle
    crosses to another P). Each round fills the buffer with ``cap`` sends, traced, then empties
    it with ``cap`` receives, traced separately; one untraced round warms up first.
    Returns ``{"shared-send": (per op, top, skipped per op), "shared-recv": (...)}``, where
    ``skipped`` is what ran in the preemption handler meanwhile (not part of the operation).
    """
    import csp_mp

    sends, recvs = OpcodeCounter(skip_preemption=True), OpcodeCounter(skip_preemption=True)

    def main() -> str:
        ch = csp_mp.Chan(cap)
        pickle.dumps(ch)  # promote: the handle could now cross to P1
        where = repr(ch)
        for r in range(rounds + 1):
            if r:
                sys.settrace(sends)
            for i in range(cap):
                ch.send(i)
            sys.settrace(None)
            if r:
                sys.settrace(recvs)
            for _ in range(cap):
                ch.recv()
            sys.settrace(None)
        return where

    where = csp_mp.run(main, procs=2)
    if "shared" not in where:
        raise RuntimeError(f"the channel was not promoted: {where}")
    n = rounds * cap
    return {"shared-send": sends.per_op(n) + (sends.skipped / n,),
            "shared-recv": recvs.per_op(n) + (recvs.skipped / n,)}


def _recv_on_p1(ch: Any, n: int, won: Any, ready: Any) -> None:
    import csp_mp

    if csp_mp.runtime.current_p() != 1 or not won.compare_and_swap(0, 1):
        return
    ready.send(None)
    for _ in range(n):
        ch.recv()


def shared_handoff(n: int = 2000) -> tuple[float, list[tuple[str, float]], float]:
    """Bytecodes per send on an unbuffered shared channel to a receiver of P1 parked each time
    (waiting for it to park is not traced)."""
    import csp_mp

    sends = OpcodeCounter(skip_preemption=True)

    def main() -> None:
        ch, ready = csp_mp.Chan(), csp_mp.Chan(1)
        won = csp_mp.atomic.Int64(0)
        while not won.load():  # probes until one runs on P1: it becomes the receiver
            for _ in range(16):
                csp_mp.go(_recv_on_p1, ch, n, won, ready)
            csp_mp.sleep(0.001)
        ready.recv()
        for i in range(n):
            while not ch.stats().receivers_waiting:
                csp_mp.runtime.gosched()
            sys.settrace(sends)
            ch.send(i)
            sys.settrace(None)

    csp_mp.run(main, procs=2)
    return sends.per_op(n) + (sends.skipped / n,)


def _reply_server(reqs: Any, won: Any, ready: Any, out: Any, n: int) -> None:
    import csp_mp

    if csp_mp.runtime.current_p() != 1 or not won.compare_and_swap(0, 1):
        return
    ready.send(None)
    counter = OpcodeCounter(skip_preemption=True)
    for i, reply in reqs:
        if i == 0:
            sys.settrace(counter)
        reply.send(i)
        if i == n:
            sys.settrace(None)
            break
    out.send((dict(counter.counts), counter.skipped))


def reply_loop(fresh: bool, n: int = 2000, warm: int = 200,
               top_n: int = TOP) -> tuple[float, list, float]:
    """Bytecodes per request of the reply-channel loop (both Ps; see the module doc), the
    ``top_n`` functions running the most, and the bytecodes per request in signal handlers."""
    import csp_mp

    def main() -> tuple[dict, float, dict, float]:
        reqs, ready, out = csp_mp.Chan(64), csp_mp.Chan(1), csp_mp.Chan(1)
        won = csp_mp.atomic.Int64(0)
        while not won.load():  # probes until one runs on P1: it becomes the server
            for _ in range(16):
                csp_mp.go(_reply_server, reqs, won, ready, out, n)
            csp_mp.sleep(0.001)
        ready.recv()
        mine = csp_mp.Chan(1)
        for i in range(warm):  # blocks, states and spares in place on both Ps
            reply = csp_mp.Chan(1) if fresh else mine
            reqs.send((-1 - i, reply))
            reply.recv()
        counter = OpcodeCounter(skip_preemption=True)
        sys.settrace(counter)
        for i in range(n + 1):
            reply = csp_mp.Chan(1) if fresh else mine
            reqs.send((i, reply))
            reply.recv()
        sys.settrace(None)
        far, far_skipped = out.recv()
        return dict(counter.counts), counter.skipped, far, far_skipped

    near, skipped, far, far_skipped = csp_mp.run(main, procs=2)
    both = collections.Counter(near)
    both.update(far)
    top = [(name, c / n) for name, c in both.most_common(top_n) if c / n >= 0.05]
    return sum(both.values()) / n, top, (skipped + far_skipped) / n


def bytecodes(kinds: list[str], small: bool = False) -> dict[str, Any]:
    """The bytecode counts of ``kinds`` in this interpreter, on the path it runs."""
    from csp_mp._shm import native

    out: dict[str, Any] = {"native": native.enabled()}
    if {"shared-send", "shared-recv"} & set(kinds):
        res = shared_ops(rounds=2 if small else 5, cap=64 if small else 1024)
        for k in ("shared-send", "shared-recv"):
            if k in kinds:
                out[k] = res[k]
    if "shared-handoff" in kinds:
        out["shared-handoff"] = shared_handoff(n=100 if small else 2000)
    if "tiny-p0" in kinds:
        out["tiny-p0"] = tiny_p0(n=300, window=32) if small else tiny_p0()
    for kind, fresh in (("reply-fresh", True), ("reply-kept", False)):
        if kind in kinds:
            out[kind] = reply_loop(fresh, n=100 if small else 2000, warm=20 if small else 200)
    return out


def bytecodes_in_child(kinds: list[str], path: str, small: bool = False,
                       timeout: float = 600) -> dict[str, Any]:
    """``bytecodes(kinds)`` in a fresh interpreter run with ``CSP_MP_NATIVE=path``."""
    from benchmarks._common import json_child

    cmd = [sys.executable, "-m", "benchmarks.instr", "--bytecodes-child",
           json.dumps({"kinds": kinds, "small": small})]
    return json_child(cmd, timeout, path)


def report(kind: str, path: str, res: dict[str, Any]) -> list[str]:
    """The printed lines of one bytecode count: figure, bar, top functions."""
    from benchmarks._common import PATH_LABELS

    label = f"{kind} ({PATH_LABELS[path]})"
    if "error" in res:
        return [f"{label:<30} n/a: {res['error']}"]
    total, top, *skipped = res[kind]
    lines = [f"{label:<30} {total:8.1f} bytecodes per {UNITS[kind]}"]
    bar = BARS.get(kind)
    if bar is not None:
        lines[0] += f"   bar <= {bar}: {'met' if total <= bar else 'NOT met'}"
    if skipped and skipped[0]:
        lines[0] += f"   (+{skipped[0]:.1f} in the preemption handler, not counted)"
    lines += [f"{'':>14}{c:8.1f}  {name}" for name, c in top]
    return lines


def main(argv: list[str] | None = None) -> None:
    """Command line: print the costs asked for (all of them by default)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kinds", nargs="*", metavar="KIND",
                    help=f"{', '.join(KINDS)} (default: all)")
    ap.add_argument("--native", choices=("both", "1", "0"), default="both",
                    help="the runtime path(s) of the bytecode counts: compiled core (1), "
                         "pure Python (0) or both (default)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--bytecodes-child", metavar="PARAMS_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    if args.bytecodes_child:
        params = json.loads(args.bytecodes_child)
        print(json.dumps(bytecodes(params["kinds"], params.get("small", False))), flush=True)
        return
    kinds = args.kinds or list(KINDS)
    for kind in kinds:
        if kind not in KINDS:
            ap.error(f"unknown kind {kind!r}")
    for kind in kinds:
        if kind not in CALLGRIND_KINDS:
            continue
        if shutil.which("valgrind") is None:
            print(f"{kind:10s} skipped: valgrind is not installed")
        else:
            print(f"{kind:10s} {per_op(kind):8.0f} instructions per {CALLGRIND_UNITS[kind]}")
    counted = [k for k in kinds if k in BYTECODE_KINDS]
    if not counted:
        return
    paths = ["1", "0"] if args.native == "both" else [args.native]
    results = {path: bytecodes_in_child(counted, path) for path in paths}
    for kind in counted:
        for path in paths:
            print("\n".join(report(kind, path, results[path])), flush=True)


if __name__ == "__main__":
    main()
