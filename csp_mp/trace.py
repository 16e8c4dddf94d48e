"""Execution tracing; mirrors Go's package ``runtime/trace``.

A trace records, for every P, which goroutine ran when (run slices named after the goroutine's
function), goroutine creation, parks with their wait reason, unparks, ends, preemptions, steals,
blocking calls on M threads, and flows from each ``go()`` to where the goroutine ran. It is
written in the Chrome trace-event JSON format, which Perfetto and ``chrome://tracing`` open;
``python -m csp_mp trace FILE.json -o FILE.html`` turns it into a self-contained HTML viewer.
``CSP_MP_TRACE=path`` traces a whole ``run()`` (or the implicit runtime until it stops).

(*) Go writes a binary format for ``go tool trace``; this writes JSON, and ``start`` takes a
path instead of an ``io.Writer``. Tracing off costs nothing: the recorder is installed only while
a trace runs.
"""

from ._mp.tracing import start as start
from ._mp.tracing import stop as stop
from ._mp.tracing import tracing as tracing

for _f in (start, stop, tracing):
    _f.__module__ = "csp_mp.trace"
del _f

__all__ = ["start", "stop", "tracing"]
