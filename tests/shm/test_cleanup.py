"""SIGKILL of a whole process tree that uses the arena leaves nothing in /dev/shm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, os, sys, time
    sys.path[:0] = {paths!r}
    from csp_mp._shm.arena import Arena
    from csp_mp._shm.doorbell import Doorbell
    from csp_mp._shm.ring import Ring
    from tests.shm import _workers

    if __name__ == "__main__":
        ctx = mp.get_context("forkserver")
        arena = Arena.create(32 << 20)
        ring = Ring.create(arena, 1 << 14)
        bell = Doorbell.create(arena)
        names = arena.sems.names
        kids = [ctx.Process(target=_workers.endless_producer,
                            args=(bell, arena, ring.offset, i, 100)) for i in range(2)]
        for k in kids:
            k.start()
        assert arena.wait_attached(2, 30)
        existed = all(os.path.exists("/dev/shm/sem." + n[1:]) for n in names)
        arena.seal()
        assert bell.wait(30)
        print("ready", existed, " ".join(p.pid.__str__() for p in kids), flush=True)
        while True:
            ring.get_many(100) or time.sleep(0.001)
    """
)


def test_sigkill_of_every_process_leaves_no_shm_entry(tmp_path) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "tree.py"
    script.write_text(SCRIPT.format(paths=[root]))
    before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        line = proc.stdout.readline().split()
        assert line[:2] == ["ready", "True"], line
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 4  # the script, the forkserver, two children (+ tracker)
        assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"sem.csp-{proc.pid}-")]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
        proc.stdout.close()
    gone, alive = psutil.wait_procs(tree, timeout=20)
    assert not alive
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [e for e in set(os.listdir("/dev/shm")) - before if f"-{proc.pid}-" in e
                or e.startswith(("sem.mp-", "psm_", "mp-"))]
        if not left:
            break
        time.sleep(0.01)
    assert not left, left
