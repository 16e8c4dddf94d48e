"""csp_mp on a Ray cluster against Ray's own primitives, in the same run on the same cluster.

    python -m benchmarks.bench_cluster [--repeats 5] [--quick] [--verbose]

Starts a simulated cluster (``ray.cluster_utils.Cluster``: a head and one node, one CPU each),
then runs every figure ``--repeats`` times, csp_mp and Ray interleaved within each repeat, and
prints the medians, their ratios and the bars they are held to (benchmarks/README.md, "Across
nodes"). Ray's actors are pinned to their nodes with ``num_cpus=0``: the caller on the second
node, the sink on the head. csp_mp's figures are measured inside one
``run(main, cluster=...)`` per repeat (the cluster's start-up is outside every clock); the local
figures run in ``run(main, procs=1)``. Needs Ray (``pip install 'csp_mp[ray]'``) and NumPy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

import csp_mp
from csp_mp._cluster.ship import go_node

MSG = ("send", 12345, 0)


def _spin(k: int) -> int:
    """A fixed amount of pure-Python CPU work (``k`` loop turns; see ``calibrate``)."""
    x = 0
    for i in range(k):
        x += i
    return x


def calibrate(ms: float) -> int:
    """Loop turns of ``_spin`` that take about ``ms`` of CPU here (measured before anything
    else runs: a goroutine preempted mid-spin cannot time its own work by the thread's clock)."""
    k = 100_000
    while True:
        t0 = time.perf_counter()
        _spin(k)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            return max(1, int(k * ms / 1000 / dt))
        k *= 2


# ---------------------------------------------------------------------- csp_mp side


def _pong(ping: csp_mp.Chan, out: csp_mp.Chan) -> None:
    """(node 1) Answer every ping on a channel homed here."""
    pong = csp_mp.Chan()
    out.send(pong)
    for v in ping:
        pong.send(v)


def _produce(ch: csp_mp.Chan, n: int) -> None:
    """(node 1) Stream ``n`` small messages into ``ch`` (homed on node 0)."""
    for i in range(n):
        ch.send(("send", 12345, i))


def _send_array(ch: csp_mp.Chan, mib: int) -> None:
    """(node 1) Send one array of ``mib`` MiB to node 0, with when it was sent."""
    arr = np.ones(mib << 17)  # float64
    ch.send((time.time(), arr))


def _cpu(k: int, out: csp_mp.Chan) -> None:
    _spin(k)
    out.send(1)


def _inc(i: int, out: csp_mp.Chan) -> None:
    out.send(i + 1)


def _echo(ping: csp_mp.Chan, pong: csp_mp.Chan) -> None:
    for v in ping:
        pong.send(v)


def one_machine_path(n_rtt: int, n_stream: int) -> dict:
    """(a main goroutine) What never leaves node 0's P0: an unbuffered ping-pong with a
    ``go_local`` partner (µs per round trip) and a stream into a ``Chan(1024)`` from one
    (messages/s)."""
    ping, pong = csp_mp.Chan(), csp_mp.Chan()
    csp_mp.go_local(_echo, ping, pong)
    for i in range(100):
        ping.send(i)
        pong.recv()
    t0 = time.perf_counter()
    for i in range(n_rtt):
        ping.send(i)
        pong.recv()
    rtt = (time.perf_counter() - t0) / n_rtt * 1e6
    ping.close()
    ch = csp_mp.Chan(1024)
    t0 = time.perf_counter()
    csp_mp.go_local(_produce, ch, n_stream)
    for _ in range(n_stream):
        ch.recv()
    return {"local_pingpong_us": rtt, "local_stream_per_s": n_stream / (time.perf_counter() - t0)}


def cpu_fan(n: int, k: int) -> float:
    """(a main goroutine) ``n`` goroutines of ``k`` turns of CPU work; seconds until every one
    is done."""
    out = csp_mp.Chan(n)
    t0 = time.perf_counter()
    for _ in range(n):
        csp_mp.go(_cpu, k, out)
    for _ in range(n):
        out.recv()
    return time.perf_counter() - t0


def tiny_tasks(n: int) -> float:
    """(a main goroutine) ``n`` tiny goroutines, each sending one result; results per second."""
    out = csp_mp.Chan(1024)
    t0 = time.perf_counter()
    for i in range(n):
        csp_mp.go(_inc, i, out)
    for _ in range(n):
        out.recv()
    return n / (time.perf_counter() - t0)


def tiny_rate(n: int, calls: int = 3) -> float:
    """(a main goroutine) Results per second of ``calls`` runs of ``tiny_tasks(n)`` after one
    untimed: a run ends at its last result, when many of its goroutines have sent and not yet
    returned, and the next run finishes them; a lone run would leave that work out of its
    clock, more or less of it as the scheduling order falls."""
    tiny_tasks(n)
    t0 = time.perf_counter()
    for _ in range(calls):
        tiny_tasks(n)
    return n * calls / (time.perf_counter() - t0)


def csp_cluster_main(sizes: dict) -> dict:
    """Every csp_mp figure across the two nodes, in one run."""
    res: dict[str, float] = {}
    # ping-pong over two unbuffered channels, one homed on each node
    ping, got = csp_mp.Chan(), csp_mp.Chan()
    go_node(1, _pong, ping, got)
    pong = got.recv()
    for i in range(20):
        ping.send(i)
        pong.recv()
    n = sizes["rtt"]
    t0 = time.perf_counter()
    for i in range(n):
        ping.send(i)
        pong.recv()
    res["pingpong_us"] = (time.perf_counter() - t0) / n * 1e6
    ping.close()
    # a stream from node 1 into a Chan(1024) homed on node 0
    ch = csp_mp.Chan(1024)
    n = sizes["stream"]
    t0 = time.perf_counter()
    go_node(1, _produce, ch, n)
    for _ in range(n):
        ch.recv()
    res["stream_per_s"] = n / (time.perf_counter() - t0)
    # 64 MiB from node 1 to node 0
    ch = csp_mp.Chan()
    go_node(1, _send_array, ch, sizes["mib"])
    sent, arr = ch.recv()
    res["array_gbs"] = arr.nbytes / (time.time() - sent) / 1e9
    del arr
    res["cpu_s"] = cpu_fan(sizes["cpu_n"], sizes["cpu_k"])
    res["tiny_per_s"] = tiny_rate(sizes["tiny"])
    res.update(one_machine_path(sizes["local_rtt"], sizes["local_stream"]))
    return res


def csp_local_main(sizes: dict) -> dict:
    """The same CPU, tiny-task and node-0-only programs on one node of one P, no cluster."""
    return {"cpu_s": cpu_fan(sizes["cpu_n"], sizes["cpu_k"]),
            "tiny_per_s": tiny_rate(sizes["tiny"]),
            **one_machine_path(sizes["local_rtt"], sizes["local_stream"])}


# ---------------------------------------------------------------------- Ray side


def ray_side(ray: Any, head_id: str, node_id: str, sizes: dict) -> dict:
    """Ray's primitives: an actor call round trip from an actor on the second node to one on the
    head, one-way calls, ``ray.util.queue``, an array as an actor argument, and tasks."""
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def on(nid: str) -> Any:
        return NodeAffinitySchedulingStrategy(node_id=nid, soft=False)

    @ray.remote(num_cpus=0)
    class Sink:
        def ping(self, x: Any) -> Any:
            return x

        def consume(self, sent: float, arr: Any) -> float:
            return arr.nbytes / (time.time() - sent) / 1e9

    @ray.remote(num_cpus=0)
    class Caller:
        def rtt(self, sink: Any, n: int) -> float:
            for _ in range(10):
                ray.get(sink.ping.remote(MSG))
            t0 = time.perf_counter()
            for _ in range(n):
                ray.get(sink.ping.remote(MSG))
            return (time.perf_counter() - t0) / n * 1e6

        def oneway(self, sink: Any, n: int) -> float:
            t0 = time.perf_counter()
            refs = [sink.ping.remote(MSG) for _ in range(n)]
            ray.get(refs[-1])
            return n / (time.perf_counter() - t0)

        def queue(self, q: Any, n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                q.put(("send", 12345, i))
            return t0

        def array(self, sink: Any, mib: int) -> float:
            arr = np.ones(mib << 17)
            return ray.get(sink.consume.remote(time.time(), arr))

    @ray.remote(num_cpus=0)
    class Taker:
        def take(self, q: Any, n: int) -> float:
            for _ in range(n):
                q.get()
            return time.perf_counter()

    @ray.remote(num_cpus=1)
    def spin(k: int) -> int:
        return _spin(k)

    @ray.remote(num_cpus=1)
    def inc(i: int) -> int:
        return i + 1

    sink = Sink.options(scheduling_strategy=on(head_id)).remote()
    caller = Caller.options(scheduling_strategy=on(node_id)).remote()
    taker = Taker.options(scheduling_strategy=on(head_id)).remote()
    q = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": on(head_id)})
    res: dict[str, float] = {}
    res["rtt_us"] = ray.get(caller.rtt.remote(sink, sizes["rtt"]))
    res["oneway_per_s"] = ray.get(caller.oneway.remote(sink, sizes["oneway"]))
    nq = sizes["queue"]
    end_ref = taker.take.remote(q, nq)
    start = ray.get(caller.queue.remote(q, nq))
    res["queue_per_s"] = nq / (ray.get(end_ref) - start)
    res["array_gbs"] = ray.get(caller.array.remote(sink, sizes["mib"]))
    t0 = time.perf_counter()
    ray.get([spin.remote(sizes["cpu_k"]) for _ in range(sizes["cpu_n"])])
    res["cpu_s"] = time.perf_counter() - t0
    nt = sizes["ray_tasks"]
    t0 = time.perf_counter()
    ray.get([inc.remote(i) for i in range(nt)])
    res["tasks_per_s"] = nt / (time.perf_counter() - t0)
    for a in (sink, caller, taker):
        ray.kill(a)
    q.shutdown()
    return res


# ---------------------------------------------------------------------- the run

ROWS = [
    # figure, csp key, baseline, baseline key, unit, higher is better, bar (ratio), bar text
    ("cross-node ping-pong round trip", "c.pingpong_us", "agent-to-agent actor call RTT",
     "r.rtt_us", "µs", False, 5.0, "<= 0.2x"),
    ("stream into Chan(1024)", "c.stream_per_s", "one-way actor calls", "r.oneway_per_s",
     "msgs/s", True, 40.0, ">= 40x"),
    ("stream into Chan(1024)", "c.stream_per_s", "ray.util.queue", "r.queue_per_s", "msgs/s",
     True, 250.0, ">= 250x"),
    ("64 MiB array node 1 -> node 0", "c.array_gbs", "actor argument across nodes",
     "r.array_gbs", "GB/s", True, 1.0, ">= 1.0x"),
    ("64 x 20 ms CPU goroutines", "c.cpu_s", "one node of 1 P", "l.cpu_s", "s", False, 1.6,
     ">= 1.6x"),
    ("64 x 20 ms CPU goroutines", "c.cpu_s", "64 Ray tasks", "r.cpu_s", "s", False, 1 / 1.1,
     "wall <= 1.1x"),
    ("tiny go() tasks", "c.tiny_per_s", "Ray tasks", "r.tasks_per_s", "tasks/s", True, 10.0,
     ">= 10x"),
    ("tiny go() tasks", "c.tiny_per_s", "same program without cluster=", "l.tiny_per_s",
     "tasks/s", True, 0.8, ">= 0.8x"),
    ("ping-pong on node 0's P0, in a cluster run", "c.local_pingpong_us",
     "same program without cluster=", "l.local_pingpong_us", "µs", False, 0.9, ">= 0.9x"),
    ("chan 1 -> 1 on node 0's P0, in a cluster run", "c.local_stream_per_s",
     "same program without cluster=", "l.local_stream_per_s", "msgs/s", True, 0.9, ">= 0.9x"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--verbose", action="store_true", help="print every repeat's figures")
    args = ap.parse_args(argv)
    q = args.quick
    sizes = {"rtt": 200 if q else 500, "stream": 5000 if q else 20000, "mib": 64,
             "cpu_n": 64, "cpu_k": calibrate(20), "tiny": 2000 if q else 10000,
             "oneway": 1000 if q else 2000, "queue": 200 if q else 500,
             "ray_tasks": 1000 if q else 2000,
             "local_rtt": 5000 if q else 50000, "local_stream": 20000 if q else 200000}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    os.environ["RAY_TMPDIR"] = tmp
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 300 << 20, "include_dashboard": False,
        "temp_dir": os.path.join(tmp, "ray")})
    samples: dict[str, list[float]] = {}
    try:
        node = cluster.add_node(num_cpus=1, object_store_memory=300 << 20)
        cluster.wait_for_nodes()
        head_id = cluster.head_node.node_id
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        for rep in range(args.repeats):
            got = {}
            for k, v in csp_mp.run(csp_cluster_main, sizes, cluster=cluster.address).items():
                got["c." + k] = v
            for k, v in ray_side(ray, head_id, node.node_id, sizes).items():
                got["r." + k] = v
            for k, v in csp_mp.run(csp_local_main, sizes, procs=1).items():
                got["l." + k] = v
            for k, v in got.items():
                samples.setdefault(k, []).append(v)
            print(f"repeat {rep + 1}/{args.repeats} done (load1 {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
            if args.verbose:
                print("  " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(got.items())),
                      file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"csp_mp on a simulated Ray cluster (2 nodes x 1 CPU), medians of {args.repeats} "
          f"interleaved repeats, load1 {os.getloadavg()[0]:.1f}")
    print("| figure | csp_mp | baseline | baseline value | ratio | bar | met |")
    print("|---|---|---|---|---|---|---|")
    for figure, ck, base, bk, unit, higher, bar, bar_text in ROWS:
        c, b = med[ck], med[bk]
        ratio = c / b if higher else b / c
        met = "met" if ratio >= bar else "NOT met"
        print(f"| {figure} | {c:,.3g} {unit} | {base} | {b:,.3g} {unit} | {ratio:.2f}x | "
              f"{bar_text} | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
