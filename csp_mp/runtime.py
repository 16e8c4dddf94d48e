"""Scheduler queries and knobs; mirrors Go package ``runtime``."""

from ._runtime import current_node as current_node
from ._runtime import current_p as current_p
from ._runtime import goid as goid
from ._runtime import gomaxprocs as gomaxprocs
from ._runtime import gosched as gosched
from ._runtime import metrics as metrics
from ._runtime import native as native
from ._runtime import num_cpu as num_cpu
from ._runtime import num_goroutine as num_goroutine
from ._runtime import num_nodes as num_nodes
from ._runtime import stack as stack

__all__ = [
    "current_node",
    "current_p",
    "gomaxprocs",
    "goid",
    "gosched",
    "metrics",
    "native",
    "num_cpu",
    "num_goroutine",
    "num_nodes",
    "stack",
]
