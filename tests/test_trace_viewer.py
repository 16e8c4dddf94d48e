"""The trace viewer in a real headless Chromium, driven through the DevTools protocol.

With ``CSP_MP_UPDATE_SCREENSHOT=1`` the pipeline test also writes docs/img/trace-viewer.png.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import csp_mp
from csp_mp import _traceview, trace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from cdp import Browser, find_browser  # noqa: E402

BINARY = find_browser()
needs_browser = pytest.mark.skipif(BINARY is None, reason="no chromium binary on PATH "
                                   "(apt-get install chromium; .ci/run installs it)")
ROUND_TICK = r"0|\d+(\.\d)? (s|ms|µs)"  # "0.2 s", "50 ms", "286.5 ms"; never "50.000 ms"
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


def _meta(p: int) -> dict:
    return {"ph": "M", "name": "process_name", "pid": p, "tid": 0, "args": {"name": f"P{p}"}}


def _slice(p: int, ts: float, dur: float, name: str, goid: int) -> dict:
    return {"ph": "X", "name": name, "cat": "run", "pid": p, "tid": 0, "ts": ts, "dur": dur,
            "args": {"goid": goid}}


def _instant(p: int, ts: float, name: str, **args: object) -> dict:
    return {"ph": "i", "s": "t", "name": name, "cat": "sched", "pid": p, "tid": 0, "ts": ts,
            "args": args}


def _flow(ph: str, p: int, ts: float, fid: int, name: str = "go") -> dict:
    return {"ph": ph, "name": name, "cat": "flow", "id": fid, "pid": p, "tid": 0, "ts": ts}


# main (goroutine 1) on P0 makes goroutines 2 and 3; P1 steals 2 and runs it, then wakes main
# on P0 with a send; P0 runs 3 after main parks on the receive.
STEAL_TRACE = [
    _meta(0), _meta(1),
    _slice(0, 1000, 100, "main", 1), _slice(0, 1100, 50, "work", 3),
    _slice(1, 1040, 50, "work", 2), _slice(0, 1150, 30, "main", 1),
    _instant(0, 1010, "go", goid=0, detail="work"), _flow("s", 0, 1010, 7),
    _instant(0, 1012, "go", goid=0, detail="work"), _flow("s", 0, 1012, 8),
    _instant(1, 1035, "steal", goid=0, detail="1 from P0"), _flow("f", 1, 1040, 7),
    _flow("f", 0, 1100, 8),
    _instant(0, 1100, "park", goid=1, reason="chan receive"),
    _flow("s", 1, 1090, 99, "wake"), _instant(0, 1095, "unpark", goid=1, reason="chan receive"),
    _flow("f", 0, 1150, 99, "wake"),
    _flow("s", 0, 1005, 50),  # a flow whose goroutine never ran: nothing to draw
]


def test_model_pairs_flows_and_keeps_steals_and_parks() -> None:
    m = _traceview.model(STEAL_TRACE)
    assert m["steals"] == [[1, 35.0, "1 from P0"]]
    assert m["reasons"] == ["chan receive"] and m["parks"] == {"0": [100.0, 0, 1]}
    # [start, from P, end, to P, kind]: the stolen go(), the local go(), the wake-up
    assert m["flows"] == [10.0, 0, 40.0, 1, 0, 12.0, 0, 100.0, 0, 0, 90.0, 1, 150.0, 0, 1]


def _tiny() -> None:
    pass


@needs_browser
def test_viewer_draws_steals_parks_and_flows(browser: Browser, tmp_path: Path) -> None:
    state = _open(browser, STEAL_TRACE, tmp_path / "steal.html")
    assert state["stealMarks"] == 1 and state["parkMarks"] == 1
    assert state["arrows"] == 3 and state["crossArrows"] == 2  # P0 -> P1 go, P1 -> P0 wake
    # the toggles take each kind away and bring it back
    browser.evaluate("document.getElementById('showflows').click()")
    assert browser.evaluate("window.cspTrace.arrows") == 0
    browser.evaluate("document.getElementById('showmarks').click()")
    off = browser.evaluate("window.cspTrace")
    assert off["stealMarks"] == 0 and off["parkMarks"] == 0
    browser.evaluate("document.getElementById('showflows').click();"
                     "document.getElementById('showmarks').click()")
    again = browser.evaluate("window.cspTrace")
    assert again["arrows"] == 3 and again["stealMarks"] == 1
    # round ticks in a unit that fits the 180 µs span, not "50.000 ms"
    assert state["ticks"][0] == "0" and len(state["ticks"]) >= 3
    for label in state["ticks"][1:]:
        assert re.fullmatch(r"\d+ µs", label), state["ticks"]
    # the lanes fill the page: its width, and more than their minimum height
    width = browser.evaluate("[document.getElementById('cv').getBoundingClientRect().width,"
                             " window.innerWidth]")
    assert width[0] >= width[1] - 30
    assert state["laneHeight"] > 28
    assert browser.errors() == []


@needs_browser
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
    assert state["steals"] == len(model["steals"]) > 0 and state["stealMarks"] > 0
    assert state["flows"] == len(model["flows"]) // 5 >= n
    assert 0 < state["arrows"] <= 2000  # thinned out at this zoom, not 100 k lines
    assert all(re.fullmatch(ROUND_TICK, t) for t in state["ticks"]), state["ticks"]
    # zooming in shows a narrower window, and the page still has no error
    browser.evaluate("document.getElementById('zin').click()")
    zoomed = browser.evaluate("window.cspTrace")
    w0, w1 = zoomed["window"]
    assert w1 - w0 < (state["window"][1] - state["window"][0]) * 0.6
    assert browser.errors() == []


@needs_browser
def test_viewer_shows_the_pipeline_with_a_lane_per_p(browser: Browser, tmp_path: Path) -> None:
    import traced_pipeline

    path = tmp_path / "pipeline.json"
    # work long enough (16 jobs of ~30 ms) that P1, which may still be starting while main
    # runs, takes workers even on a loaded machine
    total = traced_pipeline.traced(str(path), jobs=16, size=400_000, procs=2)
    assert total == traced_pipeline.expected(16, 400_000)
    events = _traceview.load(path)
    state = _open(browser, events, tmp_path / "pipeline.html")
    assert state["ps"] == 2
    labels = browser.evaluate("Array.from(document.querySelectorAll('#summary td:first-child'))"
                              ".map(td => td.textContent)")
    assert labels == ["P0", "P1"]
    assert state["slices"] == sum(1 for e in events if e["ph"] == "X")
    # P1 ran workers it stole from P0: the steal is marked, and an arrow goes from P0's go()
    # to where the worker first ran on P1
    assert any(e["ph"] == "X" and e["pid"] == 1 for e in events)
    assert state["stealMarks"] >= 1 and state["crossArrows"] >= 1
    if os.environ.get("CSP_MP_UPDATE_SCREENSHOT") == "1":
        height = browser.evaluate("document.getElementById('summary').getBoundingClientRect()"
                                  ".bottom + 12")
        shot = browser.call("Page.captureScreenshot", format="png",
                            clip={"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1})
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
