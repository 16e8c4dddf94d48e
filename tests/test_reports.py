"""What a person reads about goroutines: their ids, where they were created, dumps that group
goroutines stopped at the same place, tracebacks without the runtime's frames, and the goroutines
a lost P held.

Whole programs run in child processes where the printed text is the outcome.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
from mp_helpers import go_on, run

import csp_mp
from csp_mp import Chan, DeadlockError, ProcessLost, go, go_local, runtime
from csp_mp._mp.ctx import GOID_BATCH


def _report_id(out: Chan) -> None:
    out.send((runtime.goid(), runtime.current_p()))


def _ids_main(n: int) -> tuple[int, int, list[tuple[int, int]]]:
    out: Chan = Chan(n)
    made = go_on(1, _report_id, out)  # at least one on P1 (after probes: goroutines too)
    for _ in range(n - 1):
        go(_report_id, out)
    return runtime.goid(), made + n - 1, [out.recv() for _ in range(n)]


def test_goroutine_ids_are_small_and_unique_in_the_runtime() -> None:
    n = 300
    main_id, made, got = run(_ids_main, 2, n)
    ids = [gid for gid, _p in got]
    assert main_id == 1
    assert len(set(ids)) == n and main_id not in ids, sorted(ids)
    assert {p for _gid, p in got} == {0, 1}
    # batches of GOID_BATCH from one counter: the ids handed out are main's, the goroutines
    # made, and at most the rest of one batch per P; no P numbers from a stride of its own
    assert max(ids) <= 1 + made + 2 * GOID_BATCH, (made, sorted(ids))


def test_one_p_numbers_goroutines_1_2_3() -> None:
    def main() -> tuple[int, list[int]]:
        out: Chan = Chan(3)
        for _ in range(3):
            go(_report_id, out)
        return runtime.goid(), sorted(out.recv()[0] for _ in range(3))
    assert run(main, 1) == (1, [2, 3, 4])


def _stuck(ch: Chan) -> None:
    ch.recv()


def test_a_deadlock_dump_groups_goroutines_stuck_at_the_same_place() -> None:
    def main() -> None:
        ch: Chan = Chan()
        for _ in range(3):
            go(_stuck, ch)  # the creating line
        go_local(_stuck, Chan())
        ch.recv()

    with pytest.raises(DeadlockError) as info:
        run(main, 1)
    stack = info.value.stack
    here = f"{__file__}:{_line_of(main, 'the creating line')}"
    assert (f"3 goroutines [chan receive] on P0: test_reports._stuck (2, 3, 4)\n"
            f'  File "{__file__}"') in stack, stack
    assert f"created by test_reports.test_a_deadlock_dump_groups_goroutines_stuck_at_the_same" \
           f"_place.<locals>.main in goroutine 1\n\t{here}\n" in stack, stack
    assert "goroutine 5 [chan receive] on P0: test_reports._stuck\n" in stack, stack
    assert stack.count("created by") == 2, stack  # the group's line, and goroutine 5's


def _line_of(fn: Any, fragment: str) -> int:
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if fragment in line)


def _spin_on_p1(out: Chan) -> None:
    if runtime.current_p() != 1:
        out.send(0)
        return
    out.send(os.getpid())
    while True:  # holds P1 without a poll: what it published before it ran is what P0 reads
        pass


def _kill_right_after_a_start() -> str:
    while True:  # a goroutine that P1 stole, right after P1 stole (and described) others
        out: Chan = Chan(1)
        go(_spin_on_p1, out)
        pid = out.recv()
        if pid:
            break
    os.kill(pid, signal.SIGKILL)
    Chan().recv()  # the loss ends the run
    return "not lost"


@pytest.mark.stress
@pytest.mark.timeout(240)
def test_process_lost_names_a_goroutine_that_had_just_started() -> None:
    for i in range(20):
        with pytest.raises(ProcessLost) as info:
            run(_kill_right_after_a_start, 2)
        assert "1 goroutine (test_reports._spin_on_p1)" in str(info.value), (i, str(info.value))


def _kill_right_after_a_batch_starts() -> str:
    while True:  # a burst P1 steals several of at once into an empty P
        out: Chan = Chan(8)
        for _ in range(8):
            go(_spin_on_p1, out)
        pid = next((p for p in (out.recv() for _ in range(8)) if p), 0)
        if pid:
            break
    os.kill(pid, signal.SIGKILL)
    Chan().recv()  # the loss ends the run
    return "not lost"


def test_process_lost_counts_a_batch_stolen_into_an_empty_p() -> None:
    """A steal into a P that held nothing is described at once: its first goroutine one by
    one, the rest tallied by function; the loss names them all, summed by function."""
    for i in range(3):
        with pytest.raises(ProcessLost) as info:
            run(_kill_right_after_a_batch_starts, 2)
        text = str(info.value)
        assert re.search(r"goroutines lost with it: \d+ goroutines? "
                         r"\(test_reports\._spin_on_p1\)", text), (i, text)
        assert info.value.goroutines[0].startswith("goroutine "), info.value.goroutines


def _describe_after_steals() -> tuple[list[str], bool, list[str], list[str]]:
    import mp_helpers as H

    from csp_mp._proc import proc

    ch: Chan = Chan()
    for _ in range(8):
        go_local(H.block_forever, ch)
    H.wait_reason("chan receive", 8)
    rep, hub, ctx = proc.broker.reporter, proc.hub, proc.broker.ctx
    rep.info_n = (0, 0)  # as after an idle with nothing held
    rep.after_steal(hub)  # a steal into that empty P: described at once, briefly
    brief, stale = ctx.read_info(0).split("\n"), rep.info_stale
    rep.after_steal(hub)  # the next, within INFO_EVERY: left stale
    kept = ctx.read_info(0).split("\n")
    rep.publish_info(hub)  # what the poll does once INFO_EVERY has passed
    return brief, stale, kept, ctx.read_info(0).split("\n")


def test_a_steal_into_an_empty_p_is_described_briefly_then_in_full() -> None:
    """After a steal into a P whose description was empty, the P publishes its first goroutine
    and a tally by function at once (and marks the description stale); the poll's later
    description names every goroutine."""
    brief, stale, kept, full = run(_describe_after_steals, 2)
    assert len(brief) == 2 and brief[0].startswith("goroutine 1 (main)"), brief
    assert brief[1] == "... and 8 more (mp_helpers.block_forever)", brief
    assert stale and kept == brief
    assert len(full) == 9 and sum("block_forever" in ln for ln in full) == 8, full


# ---------------------------------------------------------------- tracebacks a user reads

PKG = os.path.dirname(os.path.abspath(csp_mp.__file__))
ROOT = os.path.dirname(PKG)

PANIC = """
import csp_mp
def job():
    raise ValueError("boom")
def main():
    csp_mp.go(job)
    csp_mp.Chan().recv()
csp_mp.run(main, procs=PROCS)
"""
DEADLOCK_IN_RUN = """
import csp_mp
def main():
    csp_mp.Chan().recv()
csp_mp.run(main, procs=1)
"""
DEADLOCK_IMPLICIT = """
import csp_mp
csp_mp.Chan().recv()
"""
INTERRUPTED = """
import csp_mp
def main():
    print("ready", flush=True)
    csp_mp.Chan().recv()
csp_mp.run(main, procs=1)
"""


def _frames(stderr: str) -> tuple[int, int]:
    """``(frames of csp_mp, frames in all)`` of the tracebacks in ``stderr`` (not of the
    goroutine dump a DeadlockError's message carries)."""
    text = stderr.split("all goroutines are asleep")[0]
    files = re.findall(r'^\s*File "([^"]*)", line \d+', text, re.M)
    return sum(f.startswith(PKG + os.sep) for f in files), len(files)


def _python(prog: str, debug: bool, sigint: bool = False) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT, CSP_MP_DEBUG="1" if debug else "0")
    p = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        if sigint:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode != 0, err
    return err


@pytest.mark.parametrize("name", ["panic-p1", "panic-p2", "deadlock-run", "deadlock-implicit",
                                  "ctrl-c"])
def test_tracebacks_show_the_users_frames_only_unless_debugging(name: str) -> None:
    prog = {"panic-p1": PANIC.replace("PROCS", "1"), "panic-p2": PANIC.replace("PROCS", "2"),
            "deadlock-run": DEADLOCK_IN_RUN, "deadlock-implicit": DEADLOCK_IMPLICIT,
            "ctrl-c": INTERRUPTED}[name]
    err = _python(prog, debug=False, sigint=name == "ctrl-c")
    ours, total = _frames(err)
    assert ours == 0 and total >= 1, err
    assert 'File "<string>"' in err, err
    err = _python(prog, debug=True, sigint=name == "ctrl-c")
    ours, _total = _frames(err)
    assert ours >= 1, err  # CSP_MP_DEBUG=1 shows the runtime's frames too
