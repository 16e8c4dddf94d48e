"""A node's links: one TCP link to every other node, the threads that write their bytes, and the
heartbeats that tell a silent link from a quiet one.

Framing: every frame is a 4-byte big-endian length (``HDR``) and a pickle (``wire.py``). A frame
of ``BIG`` bytes or more is written apart from the small ones queued with it. Reading is the
poller's (``netpoll.py``): the node's hub reads its links itself, or one thread for it.

Threads only move bytes, and never touch the hub's state: one writer per link, one accepting
links, one sending heartbeats and watching for silent links. The heartbeat thread hands a link
silent too long to ``deliver`` (the node's dispatcher, through ``hub.post``), and reads the links
when the hub has not (``Poller.poll_stale``).

Invariants:
- Frames put on one link leave in the order they were put, each whole (``Link.put``: a direct
  write only while nothing is queued and the writer thread is not writing).
- ``Link.last_rx`` moves with every byte read; a link silent for ``timeout`` seconds is reported
  to ``deliver`` once per heartbeat until its node is in ``lost``.
- ``links`` maps a node to its link once the link said whose it is (``hello``); a link accepted
  here is in it from then on.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .._errors import ProcessLost

HDR = struct.Struct("!I")
#: frames this large are sent apart from the small ones queued with them
BIG = 1 << 20


def heartbeat_timeout() -> float:
    """Seconds of silence after which a node counts as lost (``CSP_MP_HEARTBEAT_S``)."""
    try:
        return max(0.2, float(os.environ.get("CSP_MP_HEARTBEAT_S", "3") or 3))
    except ValueError:
        return 3.0


def frame(data: bytes) -> bytes:
    """``data`` with its length in front: one frame."""
    return HDR.pack(len(data)) + data


def lost_error(node: int, why: str) -> ProcessLost:
    """The ``ProcessLost`` an operation waiting on lost node ``node`` ends with."""
    exc = ProcessLost(f"node {node} was lost ({why})")
    exc.node = node  # type: ignore[attr-defined]
    return exc


class Link:
    """One TCP link to another node, the frames queued for it and when it last spoke.

    ``put`` writes at once when nothing is queued and the writer thread is not writing (no
    thread hand-off on the common path); else it queues, and the writer thread sends whatever
    is queued in one write. Either way frames leave in the order they were put.
    """

    __slots__ = ("node", "sock", "out", "cond", "writing", "ended", "last_rx", "bye", "writer")

    def __init__(self, sock: socket.socket, node: int = -1) -> None:
        self.node = node
        self.sock = sock
        self.out: deque = deque()
        #: protects ``out`` and ``writing``
        self.cond = threading.Condition(threading.Lock())
        self.writing = False
        self.ended = False  # None was put: nothing after it is written
        self.last_rx = time.monotonic()
        self.bye = False  # the peer said it closes on purpose
        self.writer: threading.Thread | None = None

    def put(self, data: Any) -> None:
        """Send ``data`` (bytes, or None to end the writer) after what is queued; once None
        was put, nothing (a heartbeat racing the close)."""
        with self.cond:
            if self.ended:
                return
            if data is None:
                self.ended = True
            elif not self.out and not self.writing:
                try:
                    n = self.sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return  # the link is gone: its reader reports it
                if n == len(data):
                    return
                data = memoryview(data)[n:]
            self.out.append(data)
            self.cond.notify()

    def write_loop(self) -> None:
        """(the writer thread) Send what is queued, in one write, until told to end."""
        out, cond, sock = self.out, self.cond, self.sock
        while True:
            with cond:
                while not out:
                    cond.wait()
                batch = list(out)
                out.clear()
                self.writing = True
            end = batch[-1] is None
            if end:
                batch.pop()
            try:
                small: list[Any] = []
                for b in batch:
                    if len(b) >= BIG:
                        if small:
                            sock.sendall(b"".join(small))
                            small = []
                        sock.sendall(b)
                    else:
                        small.append(b)
                if small:
                    sock.sendall(b"".join(small) if len(small) > 1 else small[0])
            except OSError:
                return  # the reader sees the link end
            finally:
                with cond:
                    self.writing = False
            if end:
                return


class Reading(Protocol):
    """Who reads the links (``netpoll.Poller``)."""

    def add(self, link: Link) -> None:
        """Read ``link`` from now on (any thread)."""

    def poll_stale(self) -> None:
        """(the heartbeat thread) Read the links if their reader has not lately."""

    def stop(self) -> None:
        """(any thread) The links are closing: a reading thread ends."""


class Mesh:
    """This node's links to every other node and the threads that serve them.

    ``deliver(link, why)`` (called from the heartbeat thread) gets a string saying why the link
    went silent; ``reading`` reads every link; ``beat()`` (optional) is called from the
    heartbeat thread at each beat.
    """

    def __init__(self, deliver: Callable[[Link, Any], None], reading: Reading,
                 stopped: threading.Event, lost: dict[int, str],
                 beat: Callable[[], None] | None = None) -> None:
        self.links: dict[int, Link] = {}
        self.listener: socket.socket | None = None
        self.deliver = deliver
        self.reading = reading
        self.stopped = stopped
        self.lost = lost
        self.beat = beat
        self.timeout = heartbeat_timeout()

    def start(self, listener: socket.socket) -> None:
        """Accept links on ``listener``; start the heartbeat."""
        self.listener = listener
        _thread(self._accept_loop, "accept")
        _thread(self._beat_loop, "heartbeat")

    def connect(self, node: int, addr: Any) -> Link:
        """Open the link to ``node``."""
        sock = socket.create_connection(tuple(addr), timeout=30)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = Link(sock, node)
        self._add(link)
        return link

    def _add(self, link: Link) -> None:
        if link.node >= 0:
            self.links[link.node] = link
        link.writer = _thread(link.write_loop, "writer")
        self.reading.add(link)

    def close(self, bye: bool = True) -> None:
        """Close every link after writing what is queued and, with ``bye``, a ``bye`` (which
        tells the other nodes this node ends on purpose); stop the listener."""
        for link in list(self.links.values()):
            if bye:
                try:
                    link.put(frame(pickle.dumps(("bye",))))
                except Exception:
                    pass
            link.put(None)
        for link in list(self.links.values()):
            if link.writer is not None:
                link.writer.join(5.0)
            _close(link.sock)
        if self.listener is not None:
            _close(self.listener)
        self.reading.stop()

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        lst = self.listener
        assert lst is not None
        while not self.stopped.is_set():
            try:
                sock, _ = lst.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._add(Link(sock))

    def _beat_loop(self) -> None:
        hb = frame(pickle.dumps(("hb",)))
        period = min(0.5, self.timeout / 4)
        while not self.stopped.wait(period):
            if self.beat is not None:
                self.beat()
            self.reading.poll_stale()
            now = time.monotonic()
            for link in list(self.links.values()):
                link.put(hb)
                if now - link.last_rx > self.timeout and link.node not in self.lost:
                    self.deliver(link, f"silent for more than {self.timeout:g} s")


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _thread(fn: Any, name: str, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, name=f"csp_mp-net-{name}", daemon=True)
    t.start()
    return t
