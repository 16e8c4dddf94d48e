"""Hook points of the process layer: what a tool sees of work and wake-ups moving between Ps.

The hub's instruments (``_hub/hooks.py``) see a P's own scheduling; a ``Watcher`` sees what only
the broker knows: frames taken from another P's run queue, this P's own frames it runs itself,
wake-ups sent to and received from other Ps. The execution trace (``tracing.py``) is one; a tool
registers with ``Broker.watch`` and leaves with ``Broker.unwatch``. Several may watch at once,
each event going to each of them in the order they came.

Events, on the P's hub thread:

- ``stolen(q, frames)``: ``frames`` were taken from P ``q``'s run queue; their goroutine records
  are made next, in that order;
- ``own(seq)``: the record of this P's own frame ``seq`` is made next;
- ``wake_sent(p, gid) -> flow``: a wake-up for goroutine ``gid`` of P ``p`` is queued; a non-zero
  ``flow`` travels with it and comes back as ``wake_arrived`` on P ``p`` (several watchers: the
  last non-zero one);
- ``wake_arrived(gid, flow)``: a wake-up that carried ``flow`` reached goroutine ``gid`` here.

Design notes: with no watcher the run queue and the broker run their plain methods; ``watch``
switches them to variants that send the events (the owner rebinds its own method, as the hub's
``bind_go`` does), so nothing is tested on ``pop_own``'s or ``deliver``'s path while nobody
watches.
"""

from __future__ import annotations


class Watcher:
    """A watcher of one P's broker: override the events you need (see the module doc)."""

    def stolen(self, q: int, frames: list[bytes]) -> None:
        """``frames`` were taken from P ``q``'s run queue."""

    def own(self, seq: int) -> None:
        """This P runs its own frame ``seq`` itself."""

    def wake_sent(self, p: int, gid: int) -> int:
        """A wake-up for goroutine ``gid`` of P ``p`` is queued; the flow it carries (0: none)."""
        return 0

    def wake_arrived(self, gid: int, flow: int) -> None:
        """A wake-up that carried ``flow`` reached goroutine ``gid`` of this P."""
