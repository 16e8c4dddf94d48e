"""The trace viewer in a real headless Chromium, driven through the DevTools protocol.

With ``CSP_MP_UPDATE_SCREENSHOT=1`` the pipeline test also writes docs/img/trace-viewer.png.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import csp_mp
from csp_mp import _traceview, trace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from cdp import Browser, find_browser  # noqa: E402

BINARY = find_browser()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no chromium binary on PATH "
                                "(apt-get install chromium; .ci/run installs it)")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "trace-viewer.png"


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert BINARY is not None
    b = Browser(BINARY)
    try:
        yield b
    finally:
        b.close()


def _open(browser: Browser, events: list[dict], out: Path) -> dict:
    out.write_text(_traceview.render(events))
    browser.call("Page.navigate", url=out.as_uri())
    browser.wait_event("Page.loadEventFired", timeout=50)
    state = browser.evaluate("window.cspTrace || null")
    assert state is not None and state["ready"], "the page did not draw"
    assert browser.errors() == []
    return dict(state)


def _tiny() -> None:
    pass


def test_viewer_loads_100k_tiny_tasks_on_2_ps(browser: Browser, tmp_path: Path) -> None:
    n = 100_000
    path = tmp_path / "tiny.json"

    def main() -> None:
        wg = csp_mp.WaitGroup()

        def task() -> None:
            wg.done()

        with trace.tracing(path):
            wg.add(n)
            for _ in range(n):
                csp_mp.go(task)
            wg.wait()

    csp_mp.run(main, procs=2)
    events = _traceview.load(path)
    model = _traceview.model(events)
    expected = sum(len(lane["s"]) // 4 for lane in model["lanes"])
    state = _open(browser, events, tmp_path / "tiny.html")
    assert state["ps"] == 2
    assert state["slices"] == expected >= n
    assert state["drawn"] > 0
    # zooming in shows a narrower window, and the page still has no error
    browser.evaluate("document.getElementById('zin').click()")
    zoomed = browser.evaluate("window.cspTrace")
    w0, w1 = zoomed["window"]
    assert w1 - w0 < (state["window"][1] - state["window"][0]) * 0.6
    assert browser.errors() == []


def test_viewer_shows_the_pipeline_with_a_lane_per_p(browser: Browser, tmp_path: Path) -> None:
    import traced_pipeline

    path = tmp_path / "pipeline.json"
    total = traced_pipeline.traced(str(path), jobs=8, size=60_000, procs=2)
    assert total == traced_pipeline.expected(8, 60_000)
    events = _traceview.load(path)
    state = _open(browser, events, tmp_path / "pipeline.html")
    assert state["ps"] == 2
    labels = browser.evaluate("Array.from(document.querySelectorAll('#summary td:first-child'))"
                              ".map(td => td.textContent)")
    assert labels == ["P0", "P1"]
    assert state["slices"] == sum(1 for e in events if e["ph"] == "X")
    if os.environ.get("CSP_MP_UPDATE_SCREENSHOT") == "1":
        height = browser.evaluate("document.getElementById('summary').getBoundingClientRect()"
                                  ".bottom + 12")
        shot = browser.call("Page.captureScreenshot", format="png",
                            clip={"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1})
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
