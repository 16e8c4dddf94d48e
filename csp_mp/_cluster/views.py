"""Runtime-wide views across nodes: ``num_goroutine()``, ``stack()`` and ``metrics()`` of a
cluster run, asked of every node not lost (node operations ``ngo``, ``stack``, ``metrics`` on
object id 0) and put together on the asking node.

A node counts and dumps only its program's goroutines: the runtime's own (``net.infra``) and
those standing in for goroutines of other nodes or Ps (``net.serving``) are left out, and each
goroutine in a dump names its node.

Invariants:
- Nothing here changes state: a view reads the nodes' runtimes and adds them up.
"""

from __future__ import annotations

from typing import Any


class Views:
    """What every node says of itself, put together (a goroutine on P0). ``net``: the node's
    ``Net``."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def node_op(self, op: str) -> Any:
        """(a goroutine) What this node says of itself: its program's goroutines, counted
        (``ngo``) or dumped (``stack``), or its metrics."""
        from .. import _mp

        net = self.net
        hub = net.hub
        if op == "ngo":
            return _mp.num_goroutine(hub) - net.infra - net.serving
        if op == "stack":
            return node_dump(_mp.stack(hub), net.me)
        if op == "metrics":
            got = dict(_mp.metrics(hub))
            got["goroutines"] = self.node_op("ngo")
            # objects of this node other nodes hold, and handles here on other nodes' objects
            got["exported"] = len(net.homes.exports)
            got["handles"] = len(net.homes.proxies)
            got["releasing"] = len(net.refs.dying)  # handles dropped, released soon
            got["released"] = net.refs.released  # and released since the run began
            # other nodes' goroutines waiting here: stand-ins, and select cases offered
            got["serving"] = net.serving
            got["offers"] = sum(len(v) for v in net.offers.offers.values())
            return got
        raise ValueError(f"unknown node operation {op!r}")

    def _each(self, op: str) -> list[Any]:
        """``op`` asked of every node not lost, in node order."""
        net = self.net
        return [net.homes.call(k, 0, op, None) if k != net.me else self.node_op(op)
                for k in range(net.n) if k not in net.lost]

    def metrics(self) -> dict[str, Any]:
        """Every node's counters added up (lists joined in node order), and each node's own
        under ``nodes``."""
        per = self._each("metrics")
        out: dict[str, Any] = {}
        for m in per:
            for key, v in m.items():
                have = out.get(key)
                if have is None:
                    out[key] = dict(v) if isinstance(v, dict) else (
                        list(v) if isinstance(v, list) else v)
                elif isinstance(v, dict):
                    for kind, x in v.items():
                        have[kind] = have.get(kind, 0) + x
                elif isinstance(v, list):
                    have.extend(v)
                elif isinstance(v, int | float) and not isinstance(v, bool):
                    out[key] = have + v
        out["nodes"] = per
        return out

    def num_goroutine(self) -> int:
        """The program's live goroutines on every node."""
        return sum(self._each("ngo"))

    def stack(self) -> str:
        """The program's goroutines on every node, each naming its node."""
        return "\n\n".join(p for p in self._each("stack") if p)


def node_dump(text: str, node: int) -> str:
    """A node's goroutine dump: each goroutine names the node, the runtime's own are left
    out (see ``Net.infra``)."""
    out = []
    for block in text.split("\n\n"):
        head, _, rest = block.partition("\n")
        name = head.rpartition(": ")[2]
        if name.startswith("csp_mp._cluster.") and not name.startswith("csp_mp._cluster.ship"):
            continue
        if name == "main" and node != 0:
            continue  # the node runtime's own main goroutine
        head = head.replace("] on P", f"] on node {node} P", 1)
        out.append(head + ("\n" + rest if rest else ""))
    return "\n\n".join(b for b in out if b.strip())
