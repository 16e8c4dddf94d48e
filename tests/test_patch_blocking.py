"""``patch_blocking()``: known blocking stdlib calls park only the calling goroutine inside
goroutines, and behave exactly as before everywhere else."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

import csp_mp
from csp_mp import _patch

ORIGINAL_SLEEP = time.sleep


@pytest.fixture()
def patched():
    csp_mp.patch_blocking()
    try:
        yield
    finally:
        _patch.unpatch_blocking()


def test_patch_is_idempotent_and_undone():
    assert time.sleep is ORIGINAL_SLEEP
    csp_mp.patch_blocking()
    first = time.sleep
    csp_mp.patch_blocking()
    try:
        assert time.sleep is first is not ORIGINAL_SLEEP
        assert "recv" in vars(socket.socket)
    finally:
        _patch.unpatch_blocking()
    assert time.sleep is ORIGINAL_SLEEP
    assert "recv" not in vars(socket.socket)  # inherited from _socket.socket, as before
    _patch.unpatch_blocking()
    assert time.sleep is ORIGINAL_SLEEP


def test_public_name():
    assert csp_mp.patch_blocking.__module__ == "csp_mp"
    assert "patch_blocking" in csp_mp.__all__


def test_100_sleeps_on_one_p_overlap(patched):
    d = 0.2

    def main() -> float:
        wg = csp_mp.WaitGroup()
        t0 = time.monotonic()
        for _ in range(100):
            wg.go(time.sleep, d)
        wg.wait()
        return time.monotonic() - t0

    elapsed = csp_mp.run(main, procs=1)
    # concurrency check, not a speed figure: serial sleeping would take 100 x d
    assert elapsed < 10 * d


def test_originals_run_outside_goroutines(patched):
    # another thread, with and without a runtime: the real sleep
    done = []

    def in_thread() -> None:
        t0 = time.monotonic()
        time.sleep(0.05)
        done.append(time.monotonic() - t0)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(10)
    assert done and done[0] >= 0.05
    with pytest.raises(ValueError):
        time.sleep(-1)
    with pytest.raises(TypeError):
        time.sleep("1")


def test_socket_recv_does_not_block_the_p(patched):
    def main() -> bytes:
        a, b = socket.socketpair()
        a.settimeout(10)
        got = csp_mp.Chan(1)

        def reader() -> None:
            got.send(a.recv(16))  # would block the P, and so the writer, if not handed off

        csp_mp.go_local(reader)
        csp_mp.sleep(0.05)
        b.sendall(b"hello")
        v = got.recv()
        a.close()
        b.close()
        return v

    assert csp_mp.run(main, procs=1) == b"hello"


def test_select_does_not_block_the_p(patched):
    def main() -> bool:
        r, w = os.pipe()
        got = csp_mp.Chan(1)

        def waiter() -> None:
            ready, _, _ = select.select([r], [], [], 10)
            got.send(ready == [r])

        csp_mp.go_local(waiter)
        csp_mp.sleep(0.05)
        os.write(w, b"x")
        ok = got.recv()
        os.close(r)
        os.close(w)
        return ok

    assert csp_mp.run(main, procs=1) is True


def test_os_read_on_a_pipe_does_not_block_the_p(patched):
    def main() -> bytes:
        r, w = os.pipe()
        got = csp_mp.Chan(1)
        csp_mp.go_local(lambda: got.send(os.read(r, 16)))
        csp_mp.sleep(0.05)
        os.write(w, b"data")
        v = got.recv()
        os.close(r)
        os.close(w)
        return v

    assert csp_mp.run(main, procs=1) == b"data"


def test_subprocess_wait_does_not_block_the_p(patched):
    def main() -> tuple[int, int]:
        steps = csp_mp.atomic.Int64()
        stop = csp_mp.atomic.Bool()

        def counter() -> None:
            while not stop.load():
                steps.add(1)
                csp_mp.sleep(0.01)

        csp_mp.go_local(counter)
        proc = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)"])
        stop.store(True)
        return proc.returncode, steps.load()

    rc, steps = csp_mp.run(main, procs=1)
    assert rc == 0
    assert steps >= 5  # the counter kept running while the child was waited for
