"""Shared objects freed while the program runs: what the reference counts cost a service loop.

The figure is the reply-channel loop of issue 13 inside ``run(procs=2)``: 4 client goroutines
each send ``(i, reply)`` to 2 servers on a ``Chan(64)`` and wait for the answer. With a fresh
``Chan(1)`` per request every reply channel is promoted, counted and freed; the baseline is the
same loop with one reply channel per client, made once. Both run in the same child
interpreter, interleaved, once per runtime path, with the same placement: one server and two
clients on each P (started there with ``go_local``). Left to the scheduler, the placement
changes from round to round (three clients on one P, or the servers together), and the
throughput with it by up to 40 %: a comparison of placements, not of the two loops. Bar
(issue 13): per request >= 0.8x per client.

``python -m benchmarks.bench_lifetime [--quick]`` prints this family's rows;
``python -m benchmarks.bench_lifetime --child N`` is the child (prints JSON).
"""

from __future__ import annotations

import json
import sys
import time

from ._common import (
    at_least,
    csp_paths,
    family_main,
    json_child,
    median,
    on_path,
    pick,
    row,
)

FAMILY = "lifetime"
BAR = 0.8
REPEATS = 5


def _server(reqs) -> None:  # type: ignore[no-untyped-def]
    for i, reply in reqs:
        reply.send(i)


def _client(reqs, n: int, fresh: bool, done) -> None:  # type: ignore[no-untyped-def]
    from csp_mp import Chan

    mine = Chan(1)
    for i in range(n):
        reply = Chan(1) if fresh else mine
        reqs.send((i, reply))
        reply.recv()
    done.send(n)


def _on_p1(won, reqs, orders, done) -> None:  # type: ignore[no-untyped-def]
    """Run on P1 (the first probe that lands there): its server, then two clients an order."""
    from csp_mp import go_local, runtime

    if runtime.current_p() != 1 or not won.compare_and_swap(0, 1):
        return
    go_local(_server, reqs)
    for n, fresh in orders:
        for _ in range(2):
            go_local(_client, reqs, n, fresh, done)


def _loop(n: int) -> dict[str, list[float]]:
    import csp_mp
    from csp_mp import Chan, go_local
    from csp_mp.atomic import Int64

    reqs, done, orders = Chan(64), Chan(8), Chan()
    won = Int64(0)
    while not won.load():  # probes until one runs on P1
        for _ in range(8):
            csp_mp.go(_on_p1, won, reqs, orders, done)
        csp_mp.sleep(0.001)
    go_local(_server, reqs)
    out: dict[str, list[float]] = {"per_request": [], "per_client": []}
    for r in range(REPEATS + 1):
        for fresh in (False, True):
            t0 = time.perf_counter()
            orders.send((n // 4, fresh))
            for _ in range(2):
                go_local(_client, reqs, n // 4, fresh, done)
            total = sum(done.recv() for _ in range(4))
            if r:  # the first round warms both up
                out["per_request" if fresh else "per_client"].append(
                    total / (time.perf_counter() - t0))
    orders.close()
    reqs.close()
    return out


def _child(n: int) -> None:
    import csp_mp

    print(json.dumps(csp_mp.run(_loop, n, procs=2)))


def run(quick: bool) -> list[dict]:
    """One child per runtime path; the result rows."""
    n = pick(quick, 40_000, 12_000, 400)
    rows = []
    for path in csp_paths():
        figure = on_path("reply-channel loop, a Chan(1) per request, procs=2", path)
        cmd = [sys.executable, "-m", "benchmarks.bench_lifetime", "--child", str(n)]
        res = json_child(cmd, 300, path)
        why = res.get("error", "")
        got = None if why else res
        per_req = median(got["per_request"]) if got else None
        per_client = median(got["per_client"]) if got else None
        ratio = per_req / per_client if per_req and per_client else None
        rows.append(row(FAMILY, "reply_chan_per_request", figure, "requests/s", per_req,
                        baseline="same loop, one reply Chan(1) per client",
                        baseline_value=per_client, higher_is_better=True,
                        bar=f">= {BAR}x", met=at_least(ratio, BAR),
                        note=why or f"{n} requests a repeat, median of {REPEATS}",
                        repeats=REPEATS))
        rows[-1]["path"] = path
    return rows


def main() -> None:
    """Command line: the child, or print the rows."""
    family_main(run, _child)


if __name__ == "__main__":
    main()
