"""A passing test prints no faulthandler dump, whatever its own timeout (``timeouts.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

LONG_TEST = '''
import time

import pytest


@pytest.mark.timeout(30)
def test_longer_than_the_global_dump_timeout():
    time.sleep(2.5)
'''


def _pytest(tmp_path: Path, *plugins: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\nfaulthandler_timeout = 1\n")
    (tmp_path / "test_long.py").write_text(LONG_TEST)
    args = [a for p in plugins for a in ("-p", p)]
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args, "test_long.py"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=60)


def test_a_test_within_its_own_timeout_prints_no_dump(tmp_path: Path) -> None:
    out = _pytest(tmp_path, "timeouts")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Timeout (" not in out.stdout + out.stderr
    assert "1 passed" in out.stdout


def test_without_the_plugin_the_global_timeout_dumps(tmp_path: Path) -> None:
    out = _pytest(tmp_path)  # what a passing soak test printed before
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Timeout (0:00:01)!" in out.stderr
