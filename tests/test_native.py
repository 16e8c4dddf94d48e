"""Which core runs: ``runtime.native()``, ``CSP_MP_NATIVE``, ``python -m csp_mp info``.

Each case runs a real program in a fresh interpreter, since the choice is made when a runtime
starts and the compiled module is found (or not) at import.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import csp_mp
from csp_mp._shm import native

# Hides the compiled module from a program, as on a machine where it could not be built.
NO_CORE = "import sys; sys.modules['csp_mp._shm._core'] = None\n"

PROGRAM = """
import csp_mp
from csp_mp import runtime

def main():
    ch = csp_mp.Chan(4)
    done = csp_mp.Chan()
    def far():
        for i in range(100):
            ch.send(i)
        done.send(runtime.current_p())
    for _ in range(8):
        csp_mp.go(far)
    total = sum(ch.recv() for _ in range(800))
    ps = sorted(done.recv() for _ in range(8))
    return runtime.native(), total, ps

print(runtime.native(), *csp_mp.run(main, procs=2))
"""


def _run(prog: str, env_native: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CSP_MP_NATIVE", None)
    if env_native is not None:
        env["CSP_MP_NATIVE"] = env_native
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.skipif(not native.built(), reason="the compiled core is not built")
@pytest.mark.parametrize("env_native, expect", [(None, True), ("1", True), ("0", False)])
def test_native_follows_the_environment(env_native: str | None, expect: bool) -> None:
    out = _run(PROGRAM, env_native)
    assert out.returncode == 0, out.stderr
    before, during, total, _ps = out.stdout.split(maxsplit=3)
    assert (before, during) == (str(expect), str(expect))
    assert total == str(8 * sum(range(100)))


def test_missing_core_runs_the_python_path() -> None:
    out = _run(NO_CORE + PROGRAM, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["False", "False", str(8 * sum(range(100)))]


def test_missing_core_with_native_required_fails_at_start() -> None:
    prog = NO_CORE + "import csp_mp\ncsp_mp.run(print, 'ran', procs=2)\n"
    out = _run(prog, "1")
    assert out.returncode != 0
    assert "ran" not in out.stdout
    assert "RuntimeError: CSP_MP_NATIVE=1 but csp_mp's compiled core is not built" in out.stderr
    implicit = _run(NO_CORE + "import csp_mp\ncsp_mp.go(print, 'ran')\n", "1")
    assert implicit.returncode != 0 and "CSP_MP_NATIVE=1" in implicit.stderr


@pytest.mark.parametrize("env_native", [None, "0"])
def test_info_says_which_core_runs(env_native: str | None) -> None:
    env = dict(os.environ)
    env.pop("CSP_MP_NATIVE", None)
    if env_native is not None:
        env["CSP_MP_NATIVE"] = env_native
    out = subprocess.run([sys.executable, "-m", "csp_mp", "info"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert set(fields) >= {"version", "core", "default procs", "arena", "Ps start by"}
    if env_native == "0":
        assert fields["core"].strip().startswith("pure Python")
    elif native.built():
        assert fields["core"].strip().startswith("compiled")
    assert fields["default procs"].split()[0] == str(csp_mp.runtime.num_cpu())
    assert "MiB" in fields["arena"]


def test_native_inside_a_run_reports_the_runtime_s_core() -> None:
    assert csp_mp.run(csp_mp.runtime.native, procs=1) == csp_mp.runtime.native()


NAMED = """
import csp_mp
from csp_mp._shm import locks
made = []
_semaphore = locks.SemRegistry.semaphore
def counting(self, *a, **k):  # the one place a named semaphore is made
    made.append(a)
    return _semaphore(self, *a, **k)
locks.SemRegistry.semaphore = counting

def main():
    ch = csp_mp.Chan(4)
    csp_mp.go(ch.send, 1)
    return ch.recv()

print(csp_mp.run(main, procs=2), len(made))
"""


@pytest.mark.skipif(not native.built(), reason="the compiled core is not built")
@pytest.mark.parametrize("env_native, named", [("1", False), ("0", True)])
def test_the_compiled_core_creates_nothing_named(env_native: str, named: bool) -> None:
    """Locks and doorbells are futex words in the arena: no named semaphore is ever made (the
    Python path makes them, then removes the names once every P holds them)."""
    out = _run(NAMED, env_native)
    assert out.returncode == 0, out.stderr
    value, made = out.stdout.split()
    assert value == "1"
    assert (int(made) > 0) is named
