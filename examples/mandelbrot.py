"""Parallel Mandelbrot: bands of rows computed in goroutines, written as a PPM image.

The image is cut into horizontal bands; each band is one goroutine (``go``: with several Ps the
bands are computed in parallel, in different processes). Bands come back over a channel tagged
with their position and are assembled in order. A small ASCII preview is printed.

    python examples/mandelbrot.py [OUT.ppm] [WIDTH] [HEIGHT]

Without OUT.ppm the image goes to a temporary file, whose path is printed.
"""

from __future__ import annotations

import os
import sys
import tempfile

import csp_mp
from csp_mp import Chan, go

MAX_ITER = 80
X0, X1, Y0, Y1 = -2.2, 0.8, -1.2, 1.2


def escape(cx: float, cy: float) -> int:
    """Iterations before z -> z*z + c escapes (MAX_ITER if it never does)."""
    x = y = 0.0
    for i in range(MAX_ITER):
        x2, y2 = x * x, y * y
        if x2 + y2 > 4.0:
            return i
        y = 2.0 * x * y + cy
        x = x2 - y2 + cx
    return MAX_ITER


def color(n: int) -> bytes:
    """An RGB pixel for an escape count: black inside the set, a blue-orange ramp outside."""
    if n >= MAX_ITER:
        return b"\x00\x00\x00"
    t = n / MAX_ITER
    return bytes((int(255 * min(1.0, 3 * t)), int(255 * t), int(255 * (1 - t) ** 2)))


def band(index: int, y_lo: int, y_hi: int, width: int, height: int, out: Chan) -> None:
    """Compute rows ``y_lo .. y_hi - 1``; send ``(index, escape counts per row)``."""
    rows = []
    for py in range(y_lo, y_hi):
        cy = Y0 + (Y1 - Y0) * py / (height - 1)
        rows.append([escape(X0 + (X1 - X0) * px / (width - 1), cy) for px in range(width)])
    out.send((index, rows))


def write_ppm(path: str, counts: list[list[int]]) -> None:
    """A binary PPM (P6): any image viewer opens it."""
    height, width = len(counts), len(counts[0])
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (width, height))
        for row in counts:
            f.write(b"".join(color(n) for n in row))


def preview(counts: list[list[int]], cols: int = 64, lines: int = 20) -> str:
    """An ASCII thumbnail: denser characters for points that escape later."""
    shades = " .:-=+*#%@"
    height, width = len(counts), len(counts[0])
    out = []
    for ly in range(lines):
        row = counts[ly * height // lines]
        out.append("".join(
            shades[min(len(shades) - 1, row[lx * width // cols] * len(shades) // (MAX_ITER + 1))]
            for lx in range(cols)))
    return "\n".join(out)


def main(path: str, width: int = 240, height: int = 160, bands: int = 16) -> str:
    bands = max(1, min(bands, height))
    out: Chan = Chan(bands)
    for b in range(bands):
        go(band, b, b * height // bands, (b + 1) * height // bands, width, height, out)
    parts: list = [None] * bands
    for _ in range(bands):
        i, rows = out.recv()
        parts[i] = rows
    counts = [row for rows in parts for row in rows]

    write_ppm(path, counts)
    inside = sum(n >= MAX_ITER for row in counts for n in row)
    print(preview(counts))
    print(f"{width}x{height} pixels in {bands} bands, {inside} inside the set")
    print(f"image written to {path}")
    return path


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = sys.argv[1]
    else:
        fd, target = tempfile.mkstemp(prefix="mandelbrot-", suffix=".ppm")
        os.close(fd)
    csp_mp.run(main, target, *[int(a) for a in sys.argv[2:4]])
