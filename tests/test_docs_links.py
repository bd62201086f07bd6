"""Every relative link of the documentation points at a file that exists and, when it names a
section (`page.md#anchor`, `#anchor`), at a heading of that page, with GitHub's anchor rules.
Sections move between pages (performance.md / performance-history.md); this keeps the links
that other pages, and pages the test cannot edit, make to them valid."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "run/README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)


def prose(text):
    """The page without its fenced blocks (commands and outputs are not links)."""
    return FENCE.sub("", text)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", prose(path.read_text()), re.M):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page, root=ROOT):
    path = root / page
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such heading in {dest.relative_to(root)}")
    return broken


def test_slug_follows_github():
    assert slug("Model averaging: `--sync local:K`") == "model-averaging---sync-localk"
    assert slug("Predictions in rounds (`mpinn predict`)") == "predictions-in-rounds-mpinn-predict"
    assert slug("Measured: time to 95 % test accuracy") == "measured-time-to-95--test-accuracy"


def test_a_missing_heading_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Part one\n\n[x](#part-one) [y](#part-two) [z](b.md)\n")
    assert broken_links("a.md", tmp_path) == ["#part-two: no such heading in a.md", "b.md: no such file"]


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    assert broken_links(page) == []
