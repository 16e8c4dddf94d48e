"""Who reads a node's links (``csp_mp/_cluster/netpoll.py``), over real sockets: the framing of
what arrives in any pieces, and the poller's wake-ups, reads and hand-overs."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csp_mp._cluster.link import HDR, Link, frame
from csp_mp._cluster.netpoll import RX, Poller, Reader


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    return a, b


def _read_all(reader: Reader, sock: socket.socket, deadline: float) -> tuple[list, bool]:
    """Frames ``reader`` completes until the link ends (True) or ``deadline``."""
    import select

    got: list = []
    while time.monotonic() < deadline:
        select.select([sock], [], [], 0.5)
        try:
            got.extend(reader.read())
        except BlockingIOError:
            continue
        except EOFError:
            return got, True
    return got, False


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 1, 3, 100, 4096, RX - 4, RX - 3, RX + 1, 3 * RX]),
                      max_size=8),
       cuts=st.lists(st.integers(1, 2 * RX), min_size=1, max_size=6))
def test_frames_written_in_any_pieces_are_read_whole_in_order(sizes: list[int],
                                                              cuts: list[int]) -> None:
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    data = b"".join(frame(p) for p in payloads)
    a, b = _pair()

    def write() -> None:
        pos, i = 0, 0
        while pos < len(data):
            n = cuts[i % len(cuts)]
            a.sendall(data[pos:pos + n])
            pos += n
            i += 1
        a.close()

    t = threading.Thread(target=write)
    t.start()
    got, ended = _read_all(Reader(b), b, time.monotonic() + 20)
    t.join(20)
    b.close()
    assert ended
    assert [bytes(f) for f in got] == payloads


def test_a_reader_with_nothing_to_read_raises_blocking_io_error() -> None:
    a, b = _pair()
    with pytest.raises(BlockingIOError):
        Reader(b).read()
    a.close()
    b.close()


def _poller() -> tuple[Poller, list, list, threading.Event]:
    """A poller, what it delivered on the hub's side and on a thread's, and its stop event."""
    here: list = []
    posted: list = []
    stopped = threading.Event()
    return Poller(lambda link, item: here.append(item),
                  lambda link, item: posted.append(item), stopped), here, posted, stopped


def _linked() -> tuple[Poller, list, list, threading.Event, socket.socket, socket.socket]:
    """``_poller()`` reading one link, with the link's far end and its own socket."""
    p, here, posted, stopped = _poller()
    a, b = _pair()
    p.add(Link(b, 1))
    return p, here, posted, stopped, a, b


def test_a_waiting_hub_reads_a_frame_that_arrives() -> None:
    p, here, posted, _, a, b = _linked()
    threading.Timer(0.05, a.sendall, (frame(b"one") + frame(b"two"),)).start()
    deadline = time.monotonic() + 10
    while not here and time.monotonic() < deadline:
        p.wait(5.0)
    assert [[bytes(f) for f in item] for item in here] == [[b"one", b"two"]]
    assert posted == []
    a.close()
    b.close()
    p.close()


def test_a_post_from_another_thread_wakes_the_waiting_hub() -> None:
    p, _, _, _ = _poller()
    threading.Timer(0.05, p.post).start()
    assert p.wait(10.0) is True
    assert p.wait(0.01) is False  # the post was taken once
    p.post()  # before the wait: the wait returns at once
    assert p.wait(None) is True
    p.close()
    p.post()  # after close: no error, nothing to wake


def test_a_wait_returns_at_once_while_the_hub_inbox_holds_entries() -> None:
    p, _, _, _ = _poller()
    p.inbox = [object()]
    assert p.wait(None) is True
    p.close()


def test_a_link_that_ends_is_reported_once_and_no_longer_read() -> None:
    p, here, _, _, a, b = _linked()
    a.sendall(frame(b"last"))
    a.close()
    deadline = time.monotonic() + 10
    while len(here) < 2 and time.monotonic() < deadline:
        p.wait(1.0)
    assert [bytes(f) for f in here[0]] == [b"last"]
    assert here[1:] == ["its link closed"]
    assert p.links == {}
    b.close()
    p.close()


def test_the_heartbeat_reads_only_while_the_hub_has_not() -> None:
    p, here, posted, _, a, b = _linked()
    a.sendall(frame(b"x"))
    p.poll()  # the hub polled since the last beat: the beat leaves the link to it
    assert [bytes(f) for f in here[0]] == [b"x"]
    a.sendall(frame(b"y"))
    p.poll_stale()  # notes the hub's polls
    assert posted == []
    p.poll_stale()  # no poll since: the beat reads, and hands the frame over as a thread
    assert [[bytes(f) for f in item] for item in posted] == [[b"y"]]
    assert len(here) == 1
    a.close()
    b.close()
    p.close()


def test_a_serving_thread_hands_frames_over_and_ends_when_stopped() -> None:
    p, here, posted, stopped, a, b = _linked()
    t = threading.Thread(target=p.serve)
    t.start()
    a.sendall(frame(b"hello"))
    deadline = time.monotonic() + 10
    while not posted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [[bytes(f) for f in item] for item in posted] == [[b"hello"]]
    assert here == []
    stopped.set()
    p.stop()
    t.join(10)
    assert not t.is_alive()
    assert p.closed
    a.close()
    b.close()


def test_frame_header_is_four_bytes_big_endian() -> None:
    assert frame(b"ab") == HDR.pack(2) + b"ab" == b"\0\0\0\2ab"


def test_nothing_put_on_a_link_after_its_end_is_written() -> None:
    """A heartbeat racing the close puts a frame after the end: the writer ends at the end
    and writes nothing after it."""
    a, b = _pair()
    link = Link(b, 1)
    link.put(frame(b"before"))  # written at once: nothing queued
    link.put(None)
    link.put(frame(b"after"))
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            link.write_loop()
        except BaseException as exc:  # noqa: BLE001 - what the test asserts against
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    t.join(10)
    assert not t.is_alive() and errors == []
    b.close()
    got, ended = _read_all(Reader(a), a, time.monotonic() + 10)
    assert ended and [bytes(f) for f in got] == [b"before"]
    a.close()
