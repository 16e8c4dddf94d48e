"""Map-reduce word count over files.

Map: one goroutine per file reads it (``csp_mp.blocking``: the read runs on an M thread, only the
goroutine waits) and counts its words. Reduce: the main goroutine merges the counts as they
arrive. With several Ps the files are counted in parallel.

    python examples/word_count.py [FILE ...]

Without files, a few small sample files are written to a temporary directory first.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import csp_mp
from csp_mp import Chan, go

WORD = re.compile(r"[a-z']+")

SAMPLES = {
    "proverbs.txt": "Don't communicate by sharing memory; share memory by communicating.\n"
                    "Concurrency is not parallelism.\nChannels orchestrate; mutexes serialize.\n",
    "pike.txt": "Concurrency is about dealing with lots of things at once.\n"
                "Parallelism is about doing lots of things at once.\n",
    "hoare.txt": "Communicating sequential processes: processes that share nothing and "
                 "communicate by channels.\nA channel is a way for processes to communicate.\n",
}


def read_text(path: str) -> str:
    """Read a file as UTF-8 (runs on an M thread)."""
    return Path(path).read_text(encoding="utf-8", errors="replace")


def count_words(path: str, out: Chan) -> None:
    """Map: send ``(path, Counter of words)``, or ``(path, error text)`` if unreadable."""
    try:
        text = csp_mp.blocking(read_text, path)
    except OSError as exc:
        out.send((path, f"{type(exc).__name__}: {exc.strerror or exc}"))
        return
    out.send((path, Counter(WORD.findall(text.lower()))))


def main(paths: list[str], top: int = 10) -> Counter:
    out: Chan = Chan(len(paths))
    for p in paths:
        go(count_words, p, out)

    total: Counter = Counter()
    for _ in paths:
        path, counts = out.recv()
        if isinstance(counts, str):
            print(f"skipped {path}: {counts}")
            continue
        print(f"{path}: {sum(counts.values())} words")
        total.update(counts)  # reduce

    print(f"\n{sum(total.values())} words, {len(total)} distinct; the {top} most common:")
    for word, n in total.most_common(top):
        print(f"{n:6d}  {word}")
    return total


def sample_files(directory: str) -> list[str]:
    """Write the sample texts into ``directory``; their paths."""
    paths = []
    for name, text in SAMPLES.items():
        p = Path(directory) / name
        p.write_text(text, encoding="utf-8")
        paths.append(str(p))
    return paths


if __name__ == "__main__":
    if len(sys.argv) > 1:
        csp_mp.run(main, sys.argv[1:])
    else:
        with tempfile.TemporaryDirectory(prefix="word_count-") as tmp:
            files = sample_files(tmp)
            print(f"no files given: counting {len(files)} sample files in {tmp}\n")
            csp_mp.run(main, files)
