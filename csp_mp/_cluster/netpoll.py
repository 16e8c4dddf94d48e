"""Who reads a node's links (Go's netpoller): one epoll set of every link, read without blocking.

A node whose P0 is its only P hands its hub the ``Poller`` as the hub's waker: an idle hub waits
in the poll, so a frame arriving wakes the hub itself, which reads it and readies the dispatcher
(one wake-up per message, no thread between); a busy hub polls without blocking in its pass
after a preemption, or when sysmon finds frames waiting (``Hub.use_netpoll``, ``waiting``). A
hub that waits elsewhere (a P0 with other Ps, on its doorbell) has a thread serve the poll
instead, which hands frames over through ``hub.post`` as other threads do. While a busy hub has
not polled for a heartbeat's period (one long C call), the heartbeat thread reads the links, so
a busy node never looks silent.

Invariants:
- One reader at a time (``lock``): the hub while it polls, or the serving thread for its life,
  or the heartbeat thread for one poll; frames of one link are delivered in the order they were
  read, under the lock.
- A ``post`` is never lost: ``post`` sets ``pending`` and then writes the break socket only if
  the hub sleeps; ``wait`` sets ``sleeping`` and then checks ``pending`` (and the hub's inbox, for
  a post that went to the hub's waker before this one replaced it).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .link import HDR, Link

#: a reader's buffer: frames larger are read into buffers of their own
RX = 1 << 18


class Reader:
    """The bytes read from one link and not yet framed."""

    __slots__ = ("sock", "buf", "view", "start", "end", "big", "have")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(RX)
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # the bytes read and not yet framed: buf[start:end]
        self.big: bytearray | None = None  # a frame larger than buf, being read into its own
        self.have = 0  # bytes of ``big`` read

    def read(self) -> list[Any]:
        """Read what the link holds, without blocking: the frames it completed (maybe none).
        Raises ``EOFError`` at the link's end, ``BlockingIOError`` if nothing was there,
        ``OSError`` if the link failed."""
        big = self.big
        if big is not None:
            k = self.sock.recv_into(memoryview(big)[self.have:], 0, socket.MSG_DONTWAIT)
            if not k:
                raise EOFError
            self.have += k
            if self.have < len(big):
                return []
            self.big = None
            return [big]
        buf, view, start, end = self.buf, self.view, self.start, self.end
        if end == RX:  # a frame's start at the buffer's end: move it to the front
            buf[:end - start] = bytes(view[start:end])
            end -= start
            start = 0
        k = self.sock.recv_into(view[end:], 0, socket.MSG_DONTWAIT)
        if not k:
            raise EOFError
        end += k
        frames: list[Any] = []
        while end - start >= 4:
            size = HDR.unpack_from(buf, start)[0]
            if end - start - 4 < size:
                if size + 4 > RX:  # it cannot fit: read the rest into its own buffer
                    have = end - start - 4
                    big = bytearray(size)
                    big[:have] = view[start + 4:end]
                    self.big, self.have = big, have
                    start = end = 0
                break
            frames.append(bytes(view[start + 4:start + 4 + size]))
            start += 4 + size
        if start == end:
            start = end = 0
        self.start, self.end = start, end
        return frames


class Poller:
    """Every link of the node in one epoll set, and a break socket that wakes its waiter.

    ``deliver(link, item)`` hands frames (or why the link ended) over from the hub thread,
    ``post(link, item)`` from a thread; ``wait``/``post``/``poll`` are the hub's side when it
    reads its links itself (``attach``), ``serve`` the thread's side when it cannot.
    """

    def __init__(self, deliver: Callable[[Link, Any], None],
                 post: Callable[[Link, Any], None], stopped: threading.Event) -> None:
        self.deliver = deliver
        self.post_item = post
        self.stopped = stopped
        self.ep = select.epoll()
        self.brk_r, self.brk_w = socket.socketpair()
        self.brk_r.setblocking(False)
        self.brk_w.setblocking(False)
        self.ep.register(self.brk_r.fileno(), select.EPOLLIN)
        self.links: dict[int, tuple[Link, Reader]] = {}  # by fd
        self.lock = threading.Lock()
        self.pending = False
        self.sleeping = False
        self.inbox: Any = ()  # the hub's inbox, once attached
        self.polls = 0  # the hub's polls so far (the heartbeat's check)
        self._seen = 0  # ``polls`` at the last heartbeat
        self.closed = False

    def add(self, link: Link) -> None:
        """Read ``link`` from now on (any thread)."""
        fd = link.sock.fileno()
        self.links[fd] = (link, Reader(link.sock))
        self.ep.register(fd, select.EPOLLIN)

    # ------------------------------------------------------------------ the hub reads

    def attach(self, hub: Any) -> None:
        """Make ``hub`` (hub thread, a hub without other Ps) read the links: it waits here when
        idle and polls in its pass; the poller closes when the hub stops."""
        self.inbox = hub.inbox
        hub.use_waker(self)
        hub.use_netpoll(self)
        hub.hooks_on_stop.append(self.close)

    def post(self) -> None:
        """(any thread) Wake the hub if it waits here, else make its next wait return at once."""
        self.pending = True
        if self.sleeping:
            self._break()

    def wait(self, timeout: float | None) -> bool:
        """(hub thread) Wait for a post, a frame or ``timeout`` seconds, reading what comes;
        True if posted."""
        with self.lock:
            self.sleeping = True
            if self.pending or self.inbox:
                self.sleeping = False
                self.pending = False
                return True
            events = self.ep.poll(-1 if timeout is None else timeout)
            self.sleeping = False
            self.polls += 1
            self._take(events, self.deliver)
        posted = self.pending
        self.pending = False
        return posted

    def poll(self) -> None:
        """(hub thread) Read what the links hold, without blocking."""
        if self.lock.acquire(False):
            try:
                self.polls += 1
                self._take(self.ep.poll(0), self.deliver)
            finally:
                self.lock.release()

    def waiting(self) -> bool:
        """(any thread) Whether a link has bytes to read (the hub's ``has_work``)."""
        try:
            return bool(self.ep.poll(0))
        except (OSError, ValueError):  # closed
            return False

    def poll_stale(self) -> None:
        """(the heartbeat thread) Read the links if the hub has not polled since last time."""
        if self.polls != self._seen:
            self._seen = self.polls
            return
        if self.lock.acquire(False):
            try:
                self._take(self.ep.poll(0), self.post_item)
            finally:
                self.lock.release()

    # ------------------------------------------------------------------ a thread reads

    def serve(self) -> None:
        """(a thread of its own, for a hub that waits elsewhere) Read the links until
        ``stopped``."""
        with self.lock:
            while not self.stopped.is_set():
                self._take(self.ep.poll(), self.post_item)
        self.close()

    def stop(self) -> None:
        """(any thread) Wake a serving thread to see ``stopped``."""
        self._break()

    def _break(self) -> None:
        try:
            self.brk_w.send(b"\0")
        except OSError:  # closed (the run ended), or full: a wake-up is on its way
            pass

    def close(self) -> None:
        """Close the epoll set and the break socket (the links are the mesh's)."""
        if self.closed:
            return
        self.closed = True
        self.ep.close()
        self.brk_r.close()
        self.brk_w.close()

    def _take(self, events: list, deliver: Callable[[Link, Any], None]) -> None:
        """Read the links ``events`` names, handing their frames to ``deliver``."""
        for fd, _ in events:
            entry = self.links.get(fd)
            if entry is None:  # the break socket
                if fd == self.brk_r.fileno():
                    try:
                        self.brk_r.recv(4096)
                    except OSError:
                        pass
                continue
            link, reader = entry
            try:
                frames = reader.read()
            except BlockingIOError:
                continue
            except (OSError, EOFError) as exc:
                del self.links[fd]
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass
                why = "its link closed" if isinstance(exc, EOFError) else \
                    f"its link failed: {exc}"
                deliver(link, why)
                continue
            link.last_rx = time.monotonic()
            if frames:
                deliver(link, frames)
