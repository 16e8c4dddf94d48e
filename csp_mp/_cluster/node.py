"""A node runtime: the csp_mp runtime a node agent starts on its node (``python -m
csp_mp._cluster.node``), which runs goroutines and the node's links until node 0 says stop.

Its arguments: node index, number of nodes, Ps per node (comma-separated), the address to listen
on, node 0's address. It prints its own address as one JSON line (the agent reports it), dies
with the agent (parent-death signal), runs at nice 0 when it may, and never imports Ray.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from typing import Any


def node_main(me: int, n: int, procs: list[int], listener: socket.socket, addr0: Any,
              held: list) -> None:
    """(main goroutine of a node runtime) Link to every node, serve until the run ends."""
    from .._run import blocking
    from .net import Net

    net = Net(me, n, procs)
    held.append(net)  # closed by main(), after a panic is reported on its link to node 0
    net.start(listener)
    net.connect(0, addr0)
    net.blocking_infra += 1  # the wait below: the runtime's, not the program's
    blocking(net.stopped.wait)


def main(argv: list[str]) -> int:
    from . import life

    life.die_with_parent(int(os.environ.get("CSP_MP_PARENT", os.getppid())))
    life.nice_zero()
    me, n = int(argv[0]), int(argv[1])
    procs = [int(x) for x in argv[2].split(",")]
    host = argv[3]
    addr0 = (argv[4], int(argv[5]))
    from .._proc import proc

    proc.node, proc.nodes = me, n
    os.environ["CSP_MP_NODE"], os.environ["CSP_MP_NODES"] = str(me), str(n)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(64)
    print(json.dumps({"addr": list(listener.getsockname()[:2]), "pid": os.getpid()}),
          flush=True)
    os.dup2(2, 1)  # what goroutines print goes where the agent's output goes
    import csp_mp

    held: list = []
    code = 0
    try:
        csp_mp.run(node_main, me, n, procs, listener, addr0, held, procs=procs[me], cluster="")
    except BaseException as exc:  # noqa: BLE001 - reported to node 0, which raises it
        if held and 0 not in held[0].lost:
            _report(held[0], exc)
        code = 1
    finally:
        if held:  # a failed run says no bye: node 0 learns this node is gone, at once
            held[0].close(bye=code == 0)
    return code


def _report(net: Any, exc: BaseException) -> None:
    """Tell node 0 how this node's run ended (a panic), before the link closes."""
    text = "".join(traceback.format_exception(exc))
    link = net.links.get(0)
    if link is None:
        return
    try:
        data = net.dumps(("panic", exc, text))
    except Exception:
        data = net.dumps(("panic", RuntimeError(f"{type(exc).__name__}: {exc}"), text))
    net.flush()  # what the node sent before it, first
    link.put(len(data).to_bytes(4, "big") + data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
