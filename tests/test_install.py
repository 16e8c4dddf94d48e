"""Installing without a C compiler: the wheel builds, says so in one line, and runs on the
pure-Python path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_install_without_a_compiler_runs_the_python_path(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a clean copy: no build directory or compiled module of this tree
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.so", "__pycache__", "*.egg-info", ".*_cache"))
    env = dict(os.environ, CC="/bin/false", CXX="/bin/false")
    env.pop("CSP_MP_NATIVE", None)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)],
        env=env, capture_output=True, text=True, timeout=500)
    assert build.returncode == 0, build.stderr[-2000:]
    notices = [line for line in (build.stdout + build.stderr).splitlines()
               if "csp_mp: the compiled core was not built" in line]
    assert len(notices) == 1, notices
    wheel = next((tmp_path / "dist").glob("csp_mp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".c", ".h"))]
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                           "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    prog = ("import csp_mp, csp_mp._shm.native as n\n"
            f"assert csp_mp.__file__.startswith({str(target)!r}), csp_mp.__file__\n"
            "def main():\n"
            "    ch = csp_mp.Chan(4)\n"
            "    for i in range(10):\n"
            "        csp_mp.go(ch.send, i)\n"
            "    return sum(ch.recv() for _ in range(10))\n"
            "print(n.built(), csp_mp.runtime.native(), csp_mp.run(main, procs=2))\n")
    env = dict(env, PYTHONPATH=str(target))
    run = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "False", "45"]
