"""``python -m csp_mp trace FILE.json -o FILE.html``: a self-contained HTML viewer of a trace.

The page needs no network: its script and style are inline, and the trace is embedded as compact
per-lane arrays (a lane per P for goroutine run slices, one per M thread for blocking calls),
drawn on a canvas so that a trace of 100 k goroutines stays responsive. Over the slices it draws
the steals and parks of each P as marks, and the flows as arrows: from a ``go()`` to where the
goroutine first ran (on another P when a P stole it), and from a send to the receive it woke on
another P. The summary table (per P: busy %, goroutines run, steals, time blocked by wait
reason) is computed here.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from importlib import resources
from typing import Any


def load(path: str | os.PathLike[str]) -> list[dict]:
    """The trace events of a Chrome trace-event JSON file (object or bare-array form)."""
    with open(path, "rb") as f:
        doc = json.load(f)
    return doc["traceEvents"] if isinstance(doc, dict) else doc


def model(events: list[dict]) -> dict[str, Any]:
    """What the page draws: functions, lanes of [start µs, duration µs, function, goid]
    slices, steals ([P, µs, detail]), parks per P ([µs, wait reason, goid] flat), flows
    ([start µs, from P, end µs, to P, 0 for go / 1 for wake] flat, by start) and the per-P
    summary rows. Times are µs from the trace's first slice."""
    fns: dict[str, int] = {}
    pnames: dict[int, str] = {}
    tnames: dict[tuple[int, int], str] = {}
    lanes: dict[tuple[int, int], list[float]] = defaultdict(list)
    parks: dict[int, tuple[float, str, int]] = {}
    blocked: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ran: dict[int, set[int]] = defaultdict(set)
    steals: dict[int, int] = defaultdict(int)
    steal_marks: list[tuple[int, float, str]] = []
    park_marks: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    reasons: dict[str, int] = {}
    flow_ends: dict[tuple[str, int], list[tuple[float, int] | None]] = {}
    t_min, t_max = float("inf"), float("-inf")
    for e in events:
        ph = e.get("ph")
        pid = int(e.get("pid", 0))
        if ph == "M":
            if e.get("name") == "process_name":
                pnames[pid] = str(e["args"]["name"])
            elif e.get("name") == "thread_name":
                tnames[(pid, int(e.get("tid", 0)))] = str(e["args"]["name"])
            continue
        ts = float(e.get("ts", 0))
        if ph == "X":
            tid = int(e.get("tid", 0))
            dur = float(e.get("dur", 0))
            name = str(e.get("name", "?"))
            fi = fns.setdefault(name, len(fns))
            goid = int(e.get("args", {}).get("goid", 0))
            lanes[(pid, tid)].extend((ts, dur, fi, goid))
            if tid == 0:
                ran[pid].add(goid)
            pnames.setdefault(pid, f"P{pid}")
            t_min, t_max = min(t_min, ts), max(t_max, ts + dur)
        elif ph == "i":
            args = e.get("args", {})
            what = e.get("name")
            if what == "park":
                goid = int(args.get("goid", 0))
                reason = str(args.get("reason", "?"))
                parks[goid] = (ts, reason, pid)
                park_marks[pid].append((ts, reasons.setdefault(reason, len(reasons)), goid))
            elif what == "unpark":
                start = parks.pop(int(args.get("goid", 0)), None)
                if start is not None:
                    blocked[start[2]][start[1]] += ts - start[0]
            elif what == "steal":
                steals[pid] += 1
                steal_marks.append((pid, ts, str(args.get("detail", ""))))
            pnames.setdefault(pid, f"P{pid}")
        elif (ph == "s" or ph == "f") and e.get("cat") == "flow":
            ends = flow_ends.setdefault((str(e.get("name")), int(e.get("id", 0))), [None, None])
            ends[ph == "f"] = (ts, pid)
    if t_min == float("inf"):
        t_min = t_max = 0.0
    span = max(t_max - t_min, 1e-9)
    out_lanes = []
    summary = []
    for pid in sorted(pnames):
        keys = sorted(k for k in lanes if k[0] == pid)
        if (pid, 0) not in lanes:
            keys.insert(0, (pid, 0))
        busy = 0.0
        for key in keys:
            flat = lanes.get(key, [])
            # sorted by start: the page finds the visible slices by binary search
            rows = sorted(zip(flat[0::4], flat[1::4], flat[2::4], flat[3::4], strict=True))
            if key[1] == 0:
                busy = sum(r[1] for r in rows)
            label = f"P{pid}" if key[1] == 0 else f"P{pid} {tnames.get(key, f'M{key[1]}')}"
            out_lanes.append({"p": pid, "label": label, "m": key[1] != 0,
                              "s": [round(v - t_min, 3) if i % 4 == 0 else v
                                    for r in rows for i, v in enumerate(r)]})
        summary.append({"p": pid, "name": pnames[pid], "busy": round(100 * busy / span, 1),
                        "goroutines": len(ran[pid]), "steals": steals[pid],
                        "blocked": {r: round(v / 1000, 3) for r, v in
                                    sorted(blocked[pid].items(), key=lambda kv: -kv[1])}})
    flows = sorted((s[0], s[1], f[0], f[1], int(name == "wake"))
                   for (name, _), (s, f) in flow_ends.items() if s is not None and f is not None)
    return {"fns": list(fns), "lanes": out_lanes, "summary": summary, "span": span,
            "ps": len(pnames),
            "steals": [[p, round(ts - t_min, 3), d] for p, ts, d in sorted(steal_marks)],
            "reasons": list(reasons),
            "parks": {str(p): [round(v - t_min, 3) if i == 0 else v for m in sorted(marks)
                               for i, v in enumerate(m)] for p, marks in park_marks.items()},
            "flows": [round(v - t_min, 3) if i in (0, 2) else v
                      for f in flows for i, v in enumerate(f)]}


def render(events: list[dict], title: str = "csp_mp trace") -> str:
    """The viewer page for ``events``, as one HTML document."""
    data = json.dumps(model(events), separators=(",", ":")).replace("</", "<\\/")
    page = resources.files("csp_mp").joinpath("_traceview.html").read_text(encoding="utf-8")
    return page.replace("__TITLE__", _html_escape(title)).replace("__DATA__", data)


def main(src: str, out: str | None) -> int:
    """Write the viewer of trace ``src`` to ``out`` (default: ``src`` with ``.html``)."""
    if out is None:
        out = os.path.splitext(src)[0] + ".html"
    html = render(load(src), title=os.path.basename(src))
    with open(out, "w", encoding="utf-8") as f:
        f.write(html)
    print(f"wrote {out}")
    return 0


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
