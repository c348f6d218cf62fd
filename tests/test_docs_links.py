"""Every relative link and picture in the README and docs/ points at a file that exists in the repository."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _relative_targets(md: Path):
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)  # code blocks are not links
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # URLs and in-page anchors
        yield target.split("#", 1)[0]


@pytest.mark.parametrize("md", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_resolve(md):
    missing = [t for t in _relative_targets(md) if t and not (md.parent / t).exists()]
    assert not missing, f"{md.relative_to(REPO)} links to missing files: {missing}"


def test_the_benchmark_page_shows_pictures():
    pictures = [t for t in _relative_targets(REPO / "docs" / "benchmark.md") if t.endswith(".png")]
    assert len(pictures) >= 14
