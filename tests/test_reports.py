"""What a person reads about goroutines: their ids, where they were created, dumps that group
goroutines stopped at the same place, tracebacks without the runtime's frames, and the goroutines
a lost P held.

Whole programs run in child processes where the printed text is the outcome.
"""

from __future__ import annotations

import inspect
import os
import signal
from typing import Any

import pytest
from mp_helpers import go_on, run

from csp_mp import Chan, DeadlockError, ProcessLost, go, go_local, runtime


def _report_id(out: Chan) -> None:
    out.send((runtime.goid(), runtime.current_p()))


def _ids_main(n: int) -> tuple[int, list[tuple[int, int]]]:
    out: Chan = Chan(n)
    go_on(1, _report_id, out)  # at least one on P1
    for _ in range(n - 1):
        go(_report_id, out)
    return runtime.goid(), [out.recv() for _ in range(n)]


def test_goroutine_ids_are_small_and_unique_in_the_runtime() -> None:
    n = 300
    main_id, got = run(_ids_main, 2, n)
    ids = [gid for gid, _p in got]
    assert main_id == 1
    assert len(set(ids)) == n and main_id not in ids, sorted(ids)
    assert {p for _gid, p in got} == {0, 1}
    # batches of 16 from one counter: no P numbers its goroutines from a stride of its own
    # (go_on's probes are goroutines too, a few batches' worth)
    assert max(ids) < 4 * n, sorted(ids)


def test_one_p_numbers_goroutines_1_2_3() -> None:
    def main() -> tuple[int, list[int]]:
        out: Chan = Chan(3)
        for _ in range(3):
            go(_report_id, out)
        return runtime.goid(), sorted(out.recv()[0] for _ in range(3))
    assert run(main, 1) == (1, [2, 3, 4])


def _stuck(ch: Chan) -> None:
    ch.recv()


def test_a_deadlock_dump_groups_goroutines_stuck_at_the_same_place(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSP_MP_DEBUG", "1")  # go() records where it was called

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
    assert f"created by test_a_deadlock_dump_groups_goroutines_stuck_at_the_same_place." \
           f"<locals>.main in goroutine 1 at {here}\n" in stack, stack
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
