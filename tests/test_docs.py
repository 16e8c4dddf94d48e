"""The docs stand on their own: every relative link resolves, and the two commands install
what the README says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
                ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"(`+)[^\n]+?(?<!`)\1(?!`)")  # a code span: as many backticks each side
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where a link is not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(page: Path) -> list[str]:
    """The targets of the Markdown links and images of ``page``."""
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page``."""
    seen: dict[str, int] = {}
    out = set()
    for title in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def dead_links(page: Path) -> list[str]:
    """The relative links of ``page`` that lead nowhere in the repository."""
    dead = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT):
            dead.append(f"{target} (outside the repository)")
        elif not dest.exists():
            dead.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{target} (no such heading)")
    return dead


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    assert dead_links(page) == []


def test_the_link_checker_sees_a_dead_link_and_a_dead_anchor() -> None:
    page = ROOT / "docs" / "tmp-link-check.md"  # inside the repository, as the real pages are
    page.write_text("# Title\n\n[ok](design.md#the-layers) [self](#title) [web](https://x.y/)\n"
                    "[gone](nowhere.md) [bad anchor](design.md#no-such-part) `[code](no.md)`\n"
                    "[out](../../outside.md) ``Chan[T](cap)``\n")
    try:
        assert dead_links(page) == ["nowhere.md (no such file)",
                                    "design.md#no-such-part (no such heading)",
                                    "../../outside.md (outside the repository)"]
    finally:
        page.unlink()


def test_the_docs_name_no_file_outside_the_repository() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\b(SPEC|DESIGN|STYLE)\.md\b|research/", text), page


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_run_installs_only_what_the_benchmark_needs() -> None:
    def commands(target: str) -> str:
        return subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True,
                              text=True, check=True, timeout=30).stdout

    run = commands("run")
    assert "pip install -q -e ." in run and "[test]" not in run
    assert "-m csp_mp bench" in run
    assert "pip install -q -e '.[test]'" in commands("test")


def test_the_readme_says_how_long_the_tests_take_and_names_the_faster_target() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test-fast" in readme
    assert re.search(r"`make test`.*?about [\d.]+ minutes", readme, re.S)
    assert "`make run` installs csp_mp and its four dependencies" in readme
