"""L8: a program on a Ray cluster, ``run(main, cluster="ray")`` (docs/cluster.md).

Ray is the control plane only, kept in a process of its own (``control.py``); every node runs a
csp_mp runtime (``node.py``) whose P0 holds the node's network part (``net.py``), made of
parts: the links to the others (``link.py``), what travels on them (``wire.py``), the objects
homed here and the requests for them (``homes.py``), which nodes still hold them (``refs.py``),
send credits and the fence (``credits.py``; a buffered channel others send into counts their
reserved slots, ``exported.py``), the offers of selects waiting on other nodes' channels
(``offers.py``), deadlock rounds (``rounds.py``) and the runtime-wide views (``views.py``).
Channels pickled for another node become handles there (``remote.py``); goroutines that have
not started move from node 0 to idle nodes (``ship.py``).
Importing this package imports neither Ray nor the rest of it: ``proc.run_cluster`` loads
``driver.py`` when a cluster is asked for.
"""

from __future__ import annotations

from typing import Any

from .._proc import proc


def _run_cluster(main: Any, args: tuple, kwargs: dict, cluster: str, procs: int | None) -> Any:
    from .driver import run_cluster

    return run_cluster(main, args, kwargs, cluster, procs)


proc.run_cluster = _run_cluster
