"""The same program on one machine or on a Ray cluster: count primes in blocks, one goroutine
per block, each worker reporting which node it ran on.

Workers are goroutines that have not started when ``main`` queues them, so on a cluster node 0
ships some of them to idle nodes (``runtime.current_node`` tells where each ran); their results
come back over a channel homed on node 0, one message per block.

    python examples/cluster_primes.py [BLOCKS] [SIZE]               # this machine
    python examples/cluster_primes.py [BLOCKS] [SIZE] --cluster ray # every node of a Ray cluster
    CSP_MP_CLUSTER=ray python examples/cluster_primes.py            # the same
"""

from __future__ import annotations

import sys
from collections import Counter

import csp_mp
from csp_mp import Chan, go, runtime


def count_primes(lo: int, hi: int) -> int:
    """How many primes p with lo <= p < hi (trial division: deliberately CPU-bound)."""
    n = 0
    for k in range(max(lo, 2), hi):
        if all(k % d for d in range(2, int(k**0.5) + 1)):
            n += 1
    return n


def worker(index: int, lo: int, hi: int, results: Chan) -> None:
    """One block: count it, send ``(index, count, node)`` to node 0's channel."""
    results.send((index, count_primes(lo, hi), runtime.current_node()))


def main(blocks: int = 16, size: int = 10_000) -> int:
    results: Chan = Chan(blocks)
    for i in range(blocks):
        go(worker, i, i * size, (i + 1) * size, results)
    counts = [0] * blocks
    where: Counter[int] = Counter()
    for _ in range(blocks):
        i, n, node = results.recv()
        counts[i] = n
        where[node] += 1
    print(f"{runtime.num_nodes()} node(s); blocks per node: "
          + ", ".join(f"node {k}: {where[k]}" for k in sorted(where)))
    print(f"total: {sum(counts)} primes below {blocks * size}")
    return sum(counts)


if __name__ == "__main__":
    argv = sys.argv[1:]
    cluster = None
    if "--cluster" in argv:
        k = argv.index("--cluster")
        cluster = argv[k + 1]
        del argv[k:k + 2]
    args = [int(a) for a in argv[:2]]
    if cluster:
        csp_mp.run(main, *args, cluster=cluster)
    else:
        csp_mp.run(main, *args)
