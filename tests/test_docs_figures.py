"""Measured speed figures live only in docs/performance.md and docs/performance-history.md.

Every other page links to performance.md's "What this means for you" instead of repeating a
figure: a copy does not change when a new benchmark run changes the original (a speed-up of one
code version was once quoted on two pages after the code had changed). This test fails when a
speed-up ("1.24×", "3-4x faster", "5 % slower") or a throughput ("34,760 samples/s") appears
in README.md, run/README.md or another docs page, outside fenced blocks (a program's printed
output is not a quote).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOME = ("docs/performance.md", "docs/performance-history.md")
PAGES = [p for p in ["README.md", "run/README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
         if p not in HOME]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
NUMBER = r"\d+(?:[.,]\d+)*"
SPEED_FIGURES = [
    re.compile(rf"(?<![\w.,]){NUMBER}\.\d+\s?[×x](?!\w)"),                        # a ratio: 1.24×, 2.8x
    re.compile(rf"{NUMBER}(?:\s?[-–]\s?{NUMBER})?\s?[×x]\s+(?:as fast|faster|slower|sooner)"),
    re.compile(rf"{NUMBER}\s?%[^.;]{{0,40}}?\b(?:faster|slower|sooner)"),           # 1.5 % (big) faster
    re.compile(rf"{NUMBER}\s+samples/s"),                                         # a throughput
]
# Ratios that are not speeds, quoted on purpose: (page, the exact phrase).
NOT_SPEED = [
]


def speed_figures(text):
    prose = FENCE.sub("", text)
    for phrase in (phrase for _, phrase in NOT_SPEED):
        prose = prose.replace(phrase, "")
    return [m.group(0) for pattern in SPEED_FIGURES for m in pattern.finditer(prose)]


def test_the_patterns_find_speed_figures_and_nothing_else():
    quoted = ("on 2 ranks the big MLP ran 1.24× one rank; 2.82x as fast as DDP; 3-4x faster; "
              "local was 1.5 % (big MLP) faster; 34,760 samples/s")
    assert speed_figures(quoted) == ["1.24×", "2.82x", "2.82x as fast", "3-4x faster", "1.5 % (big MLP) faster",
                                     "34,760 samples/s"]
    plain = ("60,000 × 784 float32; 4× the base batch, lr × 2; 10× the rows; prints samples/s per epoch; "
             "numpy 2.4.6; v1.2; 20 % held out. Faster\n```text\n100 samples/s, 1.5× faster\n```\n")
    assert speed_figures(plain) == []


@pytest.mark.parametrize("page", PAGES)
def test_no_speed_figure_outside_performance_pages(page):
    found = speed_figures((ROOT / page).read_text())
    assert found == [], (f"{page} quotes {found}: link to docs/performance.md#what-this-means-for-you "
                         "instead (speed figures live only in performance*.md)")


@pytest.mark.parametrize("page, phrase", NOT_SPEED)
def test_exceptions_are_still_there(page, phrase):
    assert phrase in (ROOT / page).read_text(), f"remove the stale exception {phrase!r} for {page}"
