"""Values of any size: one too large for the arena travels in a segment of its own."""

from __future__ import annotations

import os
import signal

import mp_helpers as H
import numpy as np
import pytest

import csp_mp
from csp_mp import Chan, ProcessLost


def _shmem() -> int:
    """Bytes of shared memory in use on this machine (/proc/meminfo's Shmem)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem line in /proc/meminfo")


def _value_fds() -> list[str]:
    """Value segments any process of this machine holds an fd of."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if "csp_mp-value" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    found.append(f"{pid}/{fd}")
        except OSError:
            continue
    return found


def _echo(inp: Chan, out: Chan) -> None:
    a = inp.recv()
    out.send((os.getpid(), _shmem()))
    out.send(a)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_1_gib_array_round_trips_between_ps_on_the_default_arena() -> None:
    n = 1 << 30

    def main() -> tuple[bool, int, float]:
        base = _shmem()
        inp, out = Chan(), Chan()
        H.go_on(1, _echo, inp, out, timeout=60)
        a = np.arange(n // 8, dtype=np.int64)
        inp.send(a)
        pid, peak = out.recv()
        b = out.recv()
        peak = max(peak, _shmem())
        return bool(np.array_equal(a, b)), pid, (peak - base) / n

    same, pid, used = csp_mp.run(main, procs=2)
    assert same and pid != os.getpid()
    assert used < 2.2  # shared memory in use during the round trip, in arrays
    assert _value_fds() == []


def _hold(inp: Chan, out: Chan) -> None:
    out.send(os.getpid())
    H.block_forever(Chan())


@pytest.mark.timeout(120)
def test_a_receiver_killed_mid_transfer_leaves_nothing_behind() -> None:
    def main() -> None:
        inp, out = Chan(4), Chan(1)
        H.go_on(1, _hold, inp, out)
        pid = out.recv()
        inp.send(np.ones(300 << 20, dtype=np.uint8))  # in a segment, P1 has not taken it
        assert _value_fds() != []
        os.kill(pid, signal.SIGKILL)
        Chan().recv()  # until the runtime reports the loss

    with pytest.raises(ProcessLost):
        csp_mp.run(main, procs=2)
    assert _value_fds() == []
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"sem.csp-{os.getpid()}-")]
