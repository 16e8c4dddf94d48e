"""Node 0 of a cluster run: the process that called ``run``.

It starts the control process (Ray, ``control.py``), learns the nodes and their CPUs, opens its
listening socket, has the control process start every other node's runtime, then runs ``main``
on its own runtime once every node has a link to every other. When ``main`` ends (returns,
raises, Ctrl-C) it tells every node to stop and closes the control process's stdin, which tears
the agents down.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from typing import Any

from .._proc import proc
from . import life

_PREFIX = b"csp_mp-control: "  # control.PREFIX (that module imports Ray)
#: seconds the cluster may take to start the node runtimes and link them
START_TIMEOUT = float(os.environ.get("CSP_MP_CLUSTER_START_S", "120"))


def _knobs() -> dict[str, str]:
    """This process's csp_mp settings (``CSP_MP_NATIVE``, ``CSP_MP_HEARTBEAT_S``, ...), for
    every node's runtime; not the ones that name this run or this node."""
    skip = {"CSP_MP_CLUSTER", "CSP_MP_NODE", "CSP_MP_NODES", "CSP_MP_PARENT", life.MARKER}
    return {k: v for k, v in os.environ.items() if k.startswith("CSP_MP_") and k not in skip}


def _pythonpath() -> str:
    """This process's import path, for the processes of the run (on a simulated cluster the
    other nodes share this file system; a real cluster ships code with Ray's runtime_env)."""
    return os.pathsep.join(p or os.getcwd() for p in sys.path)


class Control:
    """The control process and the pipe to it."""

    def __init__(self, address: str, run_id: str) -> None:
        env = dict(os.environ)
        env.pop("CSP_MP_CLUSTER", None)
        env[life.MARKER] = run_id
        env["CSP_MP_PARENT"] = str(os.getpid())
        env["PYTHONPATH"] = _pythonpath()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "csp_mp._cluster.control", address], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)

    def read(self) -> dict:
        assert self.p.stdout is not None
        while True:
            line = self.p.stdout.readline()
            if not line:
                code = self.p.wait()
                raise RuntimeError(f"csp_mp: could not connect to the Ray cluster (the control "
                                   f"process exited with status {code}; its error is above)")
            if line.startswith(_PREFIX):
                break
            sys.stderr.write(line.decode(errors="replace"))  # Ray's own messages
        msg = json.loads(line[len(_PREFIX):])
        if "error" in msg:
            raise RuntimeError(f"csp_mp: the cluster run could not start: {msg['error']}")
        return msg

    def write(self, obj: Any) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.p.stdin.flush()

    def close(self) -> None:
        """Tear the agents down and wait for the control process to end."""
        try:
            if self.p.stdin is not None:
                self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        if self.p.stdout is not None:
            self.p.stdout.close()


def run_cluster(main: Any, args: tuple, kwargs: dict, cluster: str, procs: int | None) -> Any:
    """``run(main, *args, cluster=cluster, procs=procs, **kwargs)``."""
    from .._run import resolve_procs, run

    address = "auto" if cluster == "ray" else cluster
    if procs is not None:
        resolve_procs(procs)  # the checks, before anything starts
    run_id = uuid.uuid4().hex[:12]
    ctl = Control(address, run_id)
    listener = None
    try:
        nodes = ctl.read()["nodes"]
        n = len(nodes)
        per = [procs if procs is not None else max(1, int(nd["cpus"])) for nd in nodes]
        host = nodes[0]["ip"] or "127.0.0.1"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(64)
        addr = listener.getsockname()[:2]
        if n > 1:
            ctl.write({"start": {"addr": list(addr), "procs": per, "cwd": os.getcwd(),
                                 "timeout": START_TIMEOUT,
                                 "env": {**_knobs(), life.MARKER: run_id,
                                         "CSP_MP_NODES": str(n),
                                         "PYTHONPATH": _pythonpath()}}})
            ctl.read()  # {"started": [...]}
        proc.node, proc.nodes = 0, n
        return run(_driver_main, main, args, kwargs, n, per, listener, procs=per[0],
                   cluster="")
    finally:
        proc.node, proc.nodes = 0, 1
        if listener is not None:
            listener.close()
        ctl.close()


def _driver_main(main: Any, args: tuple, kwargs: dict, n: int, per: list[int],
                 listener: socket.socket) -> Any:
    """(node 0's main goroutine) Wait for every node's links, run ``main``, stop every node."""
    from .._run import blocking
    from .net import Net

    net = Net(0, n, per)
    try:
        net.start(listener)
        if n > 1 and not blocking(net.all_ready.wait, START_TIMEOUT):
            missing = sorted(set(range(1, n)) - net.ready_nodes)
            raise RuntimeError(f"csp_mp: nodes {missing} did not link up within "
                               f"{START_TIMEOUT:g} s")
        return main(*args, **kwargs)
    finally:
        net.shutdown()
