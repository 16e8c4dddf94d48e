"""Helpers for tests that run whole programs in child processes and signal or kill them.

Programs are ``python -c`` texts that print ``ready`` once they are where the test wants them;
every wait here is on another process's state with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

SHM = "/dev/shm"

# Program text: forward values from one channel to another through goroutines that may be
# stolen by other Ps, fed endlessly from this P (needs ``go`` and ``go_local`` in scope).
TRAFFIC_DEFS = textwrap.dedent("""
    def echo(inp, out):
        for v in inp:
            out.send(v)

    def start_traffic(a, b, echoes):
        for _ in range(echoes):
            go(echo, a, b)
        def feed():
            i = 0
            while True:
                a.send(i)
                i += 1
        go_local(feed)
""")


def catching_interrupt(prog: str, call: str) -> str:
    """``prog`` followed by ``call``, printing ``KeyboardInterrupt`` if the call raises it."""
    return prog + textwrap.dedent(f"""
        try:
            {call}
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
    """)


def tree(pid: int) -> list[int]:
    """``pid`` and every process it started (recursively)."""
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


def gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still alive (not even a zombie) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)  # polling another process's exit, bounded by the deadline


def shm_of(pids: list[int]) -> list[str]:
    """The ``/dev/shm`` entries whose names carry one of ``pids``."""
    if not os.path.isdir(SHM):
        return []
    return sorted(e for e in os.listdir(SHM)
                  if any(f"-{pid}-" in e or e.endswith(f"-{pid}") for pid in pids))


def sigint_when_ready(p: subprocess.Popen, delay: float = 0.0, timeout: float = 20.0
                      ) -> tuple[list[str], str, str, list[int]]:
    """Wait for ``p``'s "ready" line, SIGINT it after ``delay``, wait for it to end;
    ``(the words after "ready", stdout, stderr, process tree at "ready")``."""
    try:
        words = p.stdout.readline().split()
        assert words[:1] == ["ready"], p.stderr.read()
        procs = tree(p.pid)
        if delay:
            time.sleep(delay)  # lets the program run a chosen while before the Ctrl-C lands
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return words[1:], out, err, procs


def interrupt_program(prog: str, *args: str, delay: float = 0.0, env: dict | None = None
                      ) -> tuple[str, str, int, list[int]]:
    """Start ``prog``, wait for its "ready", SIGINT it after ``delay``;
    ``(stdout, stderr, returncode, process tree)``."""
    p = subprocess.Popen([sys.executable, "-c", prog, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    _, out, err, procs = sigint_when_ready(p, delay)
    return out, err, p.returncode, procs


def check_clean_end(out: str, err: str, rc: int, procs: list[int]) -> None:
    """The program printed ``KeyboardInterrupt`` and exited 0, leaving no process or
    ``/dev/shm`` entry behind."""
    assert out.strip() == "KeyboardInterrupt", err
    assert rc == 0, err
    assert gone(procs) == []
    assert shm_of(procs) == []


# Program text: ``go_on(p, fn, *args)`` starts ``fn(*args)`` in a goroutine that runs on P ``p``
# (probe goroutines are started with ``go()`` until one is stolen by P ``p``); ``fn`` may be a
# function of the program itself, which then travels by value.
GO_ON_DEFS = textwrap.dedent("""
    import csp_mp as _c

    def _probe(p, won, fn, args, reply):
        if _c.runtime.current_p() == p and won.compare_and_swap(0, 1):
            reply.send(True)
            fn(*args)
        else:
            reply.send(False)

    def go_on(p, fn, *args):
        if p == _c.runtime.current_p():
            _c.go_local(fn, *args)
            return
        won, reply = _c.atomic.Int64(0), _c.Chan(16)
        while True:
            for _ in range(16):
                _c.go(_probe, p, won, fn, args, reply)
            if any([reply.recv() for _ in range(16)]):
                return
""")


def run_program(path: str | None, text: str, *args: str, stdin: bool = False,
                timeout: float = 40.0) -> subprocess.CompletedProcess:
    """Run ``text`` as a program: from the file ``path`` (written first), with ``python -c``
    when ``path`` is None, or piped on stdin; ``args`` follow it on the command line."""
    if stdin:
        return subprocess.run([sys.executable, "-", *args], input=text, capture_output=True,
                              text=True, timeout=timeout)
    if path is None:
        return subprocess.run([sys.executable, "-c", text, *args], capture_output=True,
                              text=True, timeout=timeout)
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run([sys.executable, path, *args], capture_output=True, text=True,
                          timeout=timeout)


def line_of(text: str, fragment: str) -> int:
    """The 1-based number of the line of ``text`` holding ``fragment``."""
    for i, line in enumerate(text.splitlines(), 1):
        if fragment in line:
            return i
    raise AssertionError(f"{fragment!r} not in the program")
