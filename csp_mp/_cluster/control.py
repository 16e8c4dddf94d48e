"""The Ray side of a cluster run, in a process of its own (``python -m csp_mp._cluster.control
ADDRESS``) so that no csp_mp runtime process ever imports Ray.

It connects to the Ray cluster, tells the driver which nodes there are (one JSON line on
stdout), reserves every node's CPUs (a ``STRICT_SPREAD`` placement group, one bundle per node),
places one node agent per node other than the driver's, and has each agent start its node's
runtime; it reports their addresses, then waits for the driver to close its stdin (or for the
driver to die: parent-death signal) and tears everything down.

Driver -> control (stdin, JSON lines): ``{"start": {...}}``. Control -> driver (stdout, JSON
after ``PREFIX``; other lines are Ray's, passed on to stderr): ``{"nodes": [...]}``, then
``{"started": [...]}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class _NodeAgent:
    """One per node: starts that node's csp_mp runtime, reports its address, watches it, stops
    it. Control plane only: it runs no goroutine and forks nothing but the runtime (fork+exec,
    in its own process group, which Ray kills with it)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    def start(self, argv: list[str], env: dict[str, str], cwd: str | None) -> dict:
        """Start the node runtime with this agent's interpreter; its address and pid."""
        full = dict(os.environ)
        full.pop("CSP_MP_CLUSTER", None)
        full.update(env)
        full["CSP_MP_PARENT"] = str(os.getpid())
        if cwd is not None and not os.path.isdir(cwd):
            cwd = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csp_mp._cluster.node", *argv], env=full, cwd=cwd,
            stdout=subprocess.PIPE, stderr=None, close_fds=True)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if not line:
            code = self.proc.wait()
            raise RuntimeError(
                f"the csp_mp node runtime did not start on node {ray.util.get_node_ip_address()} "
                f"with {sys.executable} (exit status {code}): is csp_mp installed for that "
                "interpreter? (Ray's runtime_env can ship it)")
        info = json.loads(line)
        threading.Thread(target=self._drain, daemon=True).start()
        return info

    def _drain(self) -> None:
        p = self.proc
        if p is not None and p.stdout is not None:
            for _ in p.stdout:
                pass

    def stop(self, grace: float = 3.0) -> int | None:
        """Stop the node runtime (it normally ended already); its exit status."""
        p = self.proc
        if p is None:
            return None
        try:
            return p.wait(grace)
        except subprocess.TimeoutExpired:
            p.terminate()
        try:
            return p.wait(1.0)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()


NodeAgent: Any = ray.remote(max_restarts=0, max_concurrency=4)(_NodeAgent)  # type: ignore[call-overload]


#: the start of every line of this process's protocol on stdout (Ray prints there too)
PREFIX = "csp_mp-control: "


def _say(obj: Any) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _nodes() -> list[dict]:
    """Alive nodes with CPUs, the driver's first."""
    here = ray.get_runtime_context().get_node_id()
    out = []
    for nd in ray.nodes():
        if not nd.get("Alive"):
            continue
        cpus = int(nd.get("Resources", {}).get("CPU", 0))
        if cpus < 1 and nd["NodeID"] != here:
            continue
        out.append({"id": nd["NodeID"], "ip": nd.get("NodeManagerAddress", ""), "cpus": cpus})
    out.sort(key=lambda d: d["id"] != here)
    return out


def main(address: str) -> int:
    from . import life

    life.die_with_parent(int(os.environ.get("CSP_MP_PARENT", os.getppid())))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
             configure_logging=False)
    agents: list[Any] = []
    pg = None
    try:
        nodes = _nodes()
        _say({"nodes": nodes})
        line = sys.stdin.readline()
        if not line:
            return 0
        req = json.loads(line)["start"]
        procs: list[int] = req["procs"]
        # a node's CPUs, or fewer when it runs fewer Ps; more Ps than CPUs share them, as
        # run(procs=...) past a machine's cores does
        cpus = [max(1, min(p, nodes[k]["cpus"])) for k, p in enumerate(procs)]
        bundles = [{"CPU": n} for n in cpus]
        pg = placement_group(bundles, strategy="STRICT_SPREAD")
        if not pg.wait(timeout_seconds=req.get("timeout", 60)):
            raise RuntimeError(f"Ray could not reserve {bundles} on {len(nodes)} nodes "
                               "(a STRICT_SPREAD placement group stayed pending)")
        table = ray.util.placement_group_table(pg)["bundles_to_node_id"]
        where = {nid: b for b, nid in table.items()}
        starts = []
        for k in range(1, len(nodes)):
            bundle = where.get(nodes[k]["id"])
            if bundle is None:
                raise RuntimeError(f"no bundle was placed on node {nodes[k]['id']}")
            a = NodeAgent.options(
                num_cpus=cpus[k],
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=int(bundle))).remote()
            agents.append(a)
            argv = [str(k), str(len(nodes)), ",".join(map(str, procs)), nodes[k]["ip"],
                    str(req["addr"][0]), str(req["addr"][1])]
            env = dict(req["env"], CSP_MP_NODE=str(k), CSP_MP_RAY_NODE=nodes[k]["id"])
            starts.append(a.start.remote(argv, env, req.get("cwd")))
        _say({"started": ray.get(starts, timeout=req.get("timeout", 60))})
    except Exception as exc:  # noqa: BLE001 - the driver raises it
        _say({"error": f"{type(exc).__name__}: {exc}"})
    try:
        sys.stdin.read()  # until the driver is done (or dies)
    finally:
        t0 = time.monotonic()
        try:
            ray.get([a.stop.remote() for a in agents], timeout=5)
        except Exception:  # noqa: BLE001 - an agent lost with its node
            pass
        for a in agents:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        if pg is not None:
            try:
                remove_placement_group(pg)
            except Exception:  # noqa: BLE001
                pass
        ray.shutdown()
        del t0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
